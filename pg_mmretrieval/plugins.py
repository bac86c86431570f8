"""Plugin manager (placeholder until the pluggy-based system lands; see issue 3)."""

from __future__ import annotations

from typing import Any

__all__ = ["call_prepare_connection"]


def call_prepare_connection(conn: Any) -> None:
    """Run every plugin's ``prepare_connection`` hook on a new connection."""
    return None


def call_register_commands(cli: Any) -> None:
    """Let plugins add commands to the ``mmr`` group."""
    return None
