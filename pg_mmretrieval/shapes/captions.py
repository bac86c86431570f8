"""Deprecated alias of :mod:`pg_mmretrieval.demo.shapes.captions` (kept for one release)."""

from __future__ import annotations

import sys

from pg_mmretrieval.demo.shapes import captions as _target
from pg_mmretrieval.demo.shapes.captions import *  # noqa: F403

sys.modules[__name__] = _target
