"""Deprecated alias of :mod:`pg_mmretrieval.demo.sql` (kept for one release)."""

from __future__ import annotations

import sys

from pg_mmretrieval.demo import sql as _target
from pg_mmretrieval.demo.sql import *  # noqa: F403

sys.modules[__name__] = _target
