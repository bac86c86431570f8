"""Deprecated alias of :mod:`pg_mmretrieval.demo.shapes` (the demo world moved out of the core).

Kept for one release: ``pg_mmretrieval.shapes`` exports the same names, and its submodules
(``cir``, ``evaluate``, ``generator``) are the very modules of ``pg_mmretrieval.demo.shapes``.
"""

from __future__ import annotations

from pg_mmretrieval.demo.shapes import *  # noqa: F403
from pg_mmretrieval.demo.shapes import __all__ as __all__
