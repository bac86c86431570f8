"""Long-CLIP's positional-embedding stretch (FUSION.md §4, test case T12).

Long-CLIP (Zhang et al., ECCV 2024; code: beichenzbc/Long-CLIP ``model/longclip.py``) extends
CLIP's text context from 77 to 248 tokens before fine-tuning: the first ``keep`` (20) positions,
which CLIP trained well, are copied; every later position is spread ``factor`` (4) apart with
linear mixes of its neighbours in between, and the last ``factor`` entries are extrapolated
from the last two positions.  For 77 positions: ``20 + 4 * 57 = 248``.

Stretching alone does not make a model better at long texts: the paper fine-tunes after it
(naive stretching without fine-tuning degrades retrieval).  Use this to prepare a CLIP text
tower for such fine-tuning, or to check a converted Long-CLIP checkpoint; a Long-CLIP model
already converted to the Hugging Face CLIP layout (context 248) exports as any CLIP does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import InputError

__all__ = ["stretch_positions", "stretched_length"]


def stretched_length(length: int, keep: int = 20, factor: int = 4) -> int:
    """Number of positions after stretching ``length`` positions (77 -> 248)."""
    return keep + factor * (length - keep)


def stretch_positions(
    positions: npt.ArrayLike, keep: int = 20, factor: int = 4
) -> npt.NDArray[Any]:
    """Stretch a ``(length, width)`` positional-embedding matrix the way Long-CLIP does.

    ``new[i] = old[i]`` for ``i < keep``; for ``0 <= i < length - keep - 1`` and
    ``0 <= j < factor``: ``new[keep + factor*i + j] = ((factor - j) * old[keep + i]
    + j * old[keep + i + 1]) / factor``; the last ``factor`` entries continue the last step:
    ``new[-factor + j] = old[-1] + j * (old[-1] - old[-2]) / factor``.  The dtype is kept.
    """
    old = np.asarray(positions)
    if old.ndim != 2:
        raise InputError(
            f"positional embeddings must be a (length, width) matrix, got shape {old.shape}"
        )
    length = old.shape[0]
    if keep < 0 or factor < 1:
        raise InputError(f"keep must be >= 0 and factor >= 1 (got keep={keep}, factor={factor})")
    if length < keep + 2:
        raise InputError(
            f"{length} positions cannot be stretched keeping {keep}: need at least {keep + 2}"
        )
    work = old.astype(np.float64)
    new = np.empty((stretched_length(length, keep, factor), old.shape[1]), dtype=np.float64)
    new[:keep] = work[:keep]
    steps = np.arange(factor, dtype=np.float64)[None, :, None] / factor  # (1, factor, 1)
    left = work[keep : length - 1][:, None, :]  # (length-keep-1, 1, width)
    right = work[keep + 1 : length][:, None, :]
    body = (1 - steps) * left + steps * right  # (length-keep-1, factor, width)
    new[keep : keep + factor * (length - keep - 1)] = body.reshape(-1, old.shape[1])
    last, before = work[length - 1], work[length - 2]
    new[-factor:] = last[None, :] + steps[0] * (last - before)[None, :]
    return new.astype(old.dtype)
