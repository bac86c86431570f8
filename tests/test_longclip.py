"""FUSION.md §6 T12: Long-CLIP's positional-embedding stretch (a model-side transform, so it is
tested on numpy arrays, not in SQL)."""

from __future__ import annotations

import numpy as np
import pytest

from pg_mmretrieval.errors import InputError
from pg_mmretrieval.export.longclip import stretch_positions, stretched_length


def test_t12_long_clip_stretch() -> None:
    rng = np.random.default_rng(0)
    old = rng.standard_normal((77, 512)).astype(np.float32)
    new = stretch_positions(old)
    assert new.shape == (248, 512) and new.dtype == np.float32
    assert stretched_length(77) == 248
    # The first 20 positions are copied.
    assert np.array_equal(new[:20], old[:20])
    # Every later position lands 4 apart: new[20 + 4i] == old[20 + i].
    for i in range(57):
        assert np.allclose(new[20 + 4 * i], old[20 + i], atol=1e-6)
    # In between: linear mixes of the two neighbours with weights 3/4, 1/2, 1/4.
    for i in range(56):
        a, b = old[20 + i].astype(np.float64), old[21 + i].astype(np.float64)
        assert np.allclose(new[21 + 4 * i], 0.75 * a + 0.25 * b, atol=1e-6)
        assert np.allclose(new[22 + 4 * i], 0.5 * a + 0.5 * b, atol=1e-6)
        assert np.allclose(new[23 + 4 * i], 0.25 * a + 0.75 * b, atol=1e-6)
    # The last 4 continue the last step (extrapolation), starting at old[76].
    step = old[76].astype(np.float64) - old[75]
    for j in range(4):
        assert np.allclose(new[244 + j], old[76] + j * step / 4, atol=1e-6)


def test_stretch_other_shapes_and_errors() -> None:
    old = np.arange(12, dtype=np.float64).reshape(6, 2)
    new = stretch_positions(old, keep=2, factor=2)
    assert new.shape == (stretched_length(6, 2, 2), 2) == (10, 2)
    assert np.array_equal(new[:, 0], [0, 2, 4, 5, 6, 7, 8, 9, 10, 11])
    assert np.array_equal(stretch_positions(old, keep=2, factor=1), old)
    with pytest.raises(InputError, match="matrix"):
        stretch_positions(np.zeros(5))
    with pytest.raises(InputError, match="at least 22"):
        stretch_positions(np.zeros((21, 4)))
    with pytest.raises(InputError, match="factor"):
        stretch_positions(old, factor=0)
