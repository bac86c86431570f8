"""The shapes-CIR benchmark: composed retrieval must beat both single modalities.

Runs bench/shapes_cir.py (every composed method through the SQL functions, with the committed
shapes-clip model) on a smaller corpus than the reported run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_best_composed_method_beats_image_and_text_only_by_10_points() -> None:
    r = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "shapes_cir.py"),
            "--n",
            "1500",
            "--queries",
            "150",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=dict(os.environ),
        cwd=REPO,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads(r.stdout.strip().splitlines()[-1])["results"]
    uni = max(results["image_only"]["R@10"], results["text_only"]["R@10"])
    composed = {k: v["R@10"] for k, v in results.items() if k not in ("image_only", "text_only")}
    best = max(composed.values())
    assert best - uni >= 0.10, (best, uni, composed)
    # the simplest fusion already composes: weighted embedding sum beats both legs
    assert results["weighted a=0.5"]["R@10"] > uni
