"""``python -m pg_mmretrieval`` runs the ``mmr`` command."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    main()
