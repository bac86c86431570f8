"""Deprecated alias of :mod:`pg_mmretrieval.demo.shapes.cir` (kept for one release)."""

from __future__ import annotations

import sys

from pg_mmretrieval.demo.shapes import cir as _target
from pg_mmretrieval.demo.shapes.cir import *  # noqa: F403

sys.modules[__name__] = _target
