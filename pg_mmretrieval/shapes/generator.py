"""Deprecated alias of :mod:`pg_mmretrieval.demo.shapes.generator` (kept for one release)."""

from __future__ import annotations

import sys

from pg_mmretrieval.demo.shapes import generator as _target
from pg_mmretrieval.demo.shapes.generator import *  # noqa: F403

sys.modules[__name__] = _target
