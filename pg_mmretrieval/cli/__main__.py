"""``python -m pg_mmretrieval.cli``: the ``mmr`` command."""

from __future__ import annotations

from . import main

main()
