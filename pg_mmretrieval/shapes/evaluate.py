"""Deprecated alias of :mod:`pg_mmretrieval.demo.shapes.evaluate` (kept for one release).

``python -m pg_mmretrieval.shapes.evaluate`` still runs the evaluation.
"""

from __future__ import annotations

import sys

from pg_mmretrieval.demo.shapes import evaluate as _target
from pg_mmretrieval.demo.shapes.evaluate import *  # noqa: F403

if __name__ == "__main__":
    sys.exit(_target.main())
sys.modules[__name__] = _target
