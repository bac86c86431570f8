"""The shapes generator and the composed-retrieval triplets: seeded, consistent, well-formed."""

from __future__ import annotations

import numpy as np
import pytest

from pg_mmretrieval.demo.shapes import (
    ATTRIBUTES,
    COLOURS,
    Attributes,
    canonical_caption,
    generate,
    make_triplets,
    matches,
    partial_caption,
    render,
    render_randomised,
)
from pg_mmretrieval.demo.shapes.cir import KINDS, relevant
from pg_mmretrieval.demo.shapes.evaluate import preprocess


def _pixels(samples: list) -> list[bytes]:  # type: ignore[type-arg]
    return [s.image.tobytes() for s in samples]


@pytest.mark.parametrize("style", ["flat", "paper"])
def test_generator_is_deterministic_per_seed(style: str) -> None:
    a = generate(40, seed=7, style=style)
    b = generate(40, seed=7, style=style)
    assert _pixels(a) == _pixels(b)
    assert [s.caption for s in a] == [s.caption for s in b]
    assert [s.attributes for s in a] == [s.attributes for s in b]
    c = generate(40, seed=8, style=style)
    assert _pixels(a) != _pixels(c)
    assert [s.attributes for s in a] != [s.attributes for s in c]


def test_styles_differ() -> None:
    a = Attributes("star", "red", "small", "left", 2)
    flat = np.asarray(render(a, np.random.default_rng(0), style="flat"))
    paper = np.asarray(render(a, np.random.default_rng(0), style="paper"))
    assert flat.shape == paper.shape == (64, 64, 3)
    assert paper[0, 0].tolist() == [255, 255, 255]  # white background
    assert flat[0, 0].max() < 90  # dark background
    # anti-aliased edges in the paper style: intermediate values appear
    assert len(np.unique(paper.reshape(-1, 3), axis=0)) > 10


def test_shape_is_drawn_where_the_position_says() -> None:
    rng = np.random.default_rng(1)
    for position, check in [
        ("left", lambda x, y: x < 28),
        ("right", lambda x, y: x > 36),
        ("top", lambda x, y: y < 28),
        ("bottom", lambda x, y: y > 36),
        ("center", lambda x, y: 24 < x < 40 and 24 < y < 40),
    ]:
        for style in ("flat", "paper"):
            a = Attributes("circle", "blue", "small", position, 1)
            img = np.asarray(render(a, rng, style=style)).astype(int)
            blue = (img[..., 2] - img[..., 0] > 80) & (img[..., 2] - img[..., 1] > 60)
            ys, xs = np.nonzero(blue)
            assert len(xs) > 20, (position, style)
            assert check(xs.mean(), ys.mean()), (position, style, xs.mean(), ys.mean())


def test_size_and_count_show_in_pixels() -> None:
    rng = np.random.default_rng(2)

    def area(a: Attributes) -> float:
        img = np.asarray(render(a, rng, style="paper")).astype(int)
        return float(((255 - img).sum(axis=2) > 120).sum())

    small = area(Attributes("square", "green", "small", "center", 1))
    large = area(Attributes("square", "green", "large", "center", 1))
    three = area(Attributes("square", "green", "small", "center", 3))
    assert large > 2.5 * small
    assert 2.2 * small < three < 3.8 * small


def test_randomised_training_renderer() -> None:
    """Seeded, varied backgrounds from dark to light, and the position still holds."""
    a = Attributes("circle", "blue", "small", "left", 1)
    one = np.asarray(render_randomised(a, np.random.default_rng(5)))
    again = np.asarray(render_randomised(a, np.random.default_rng(5)))
    assert one.shape == (64, 64, 3) and (one == again).all()
    rng = np.random.default_rng(6)
    corners = []
    for position, check in [
        ("left", lambda x, y: x < 30),
        ("right", lambda x, y: x > 34),
        ("top", lambda x, y: y < 30),
        ("bottom", lambda x, y: y > 34),
        ("center", lambda x, y: 22 < x < 42 and 22 < y < 42),
    ]:
        for _ in range(6):
            a = Attributes("square", "blue", "large", position, 1)
            img = np.asarray(render_randomised(a, rng)).astype(int)
            corners.append(img[0, 0].mean())
            blue = (img[..., 2] - img[..., 0] > 80) & (img[..., 2] - img[..., 1] > 60)
            ys, xs = np.nonzero(blue)
            assert len(xs) > 40, position
            assert check(xs.mean(), ys.mean()), (position, xs.mean(), ys.mean())
    assert min(corners) < 70 and max(corners) > 180


def test_captions() -> None:
    a = Attributes("cross", "orange", "large", "top", 3)
    assert canonical_caption(a) == "three large orange crosses at the top"
    one = Attributes("circle", "orange", "small", "center", 1)
    assert canonical_caption(one) == "one small orange circle in the center"
    rng = np.random.default_rng(0)
    for s in generate(200, seed=3):
        assert s.attributes.colour in s.caption
        assert s.attributes.shape in s.caption  # singular is a prefix of the plural
    assert partial_caption(a, ["shape"], rng) == "cross"
    assert partial_caption(a, ["shape", "count"], rng) == "three crosses"
    assert partial_caption(a, ["colour"], rng) == "orange shape"
    with pytest.raises(ValueError, match="unknown attributes"):
        partial_caption(a, ["texture"], rng)
    assert matches(a, {"shape": "cross", "count": 3})
    assert not matches(a, {"shape": "cross", "count": 2})
    with pytest.raises(ValueError, match="unknown colour"):
        Attributes("circle", "magenta", "small", "left", 1)


def test_cir_triplets() -> None:
    ts = make_triplets(100, seed=4)
    assert ts == make_triplets(100, seed=4)
    assert ts != make_triplets(100, seed=5)
    assert {t.kind for t in ts} == set(KINDS)
    for t in ts:
        diff = [k for k in ATTRIBUTES if getattr(t.reference, k) != getattr(t.target, k)]
        assert diff == [t.kind]
        if t.kind == "colour":
            assert t.target.colour in t.modification
        if t.kind == "shape":
            assert t.target.shape in t.modification
    corpus = [s.attributes for s in generate(300, seed=9)]
    some = [t for t in ts if relevant(t, corpus)]
    assert some
    for t in some:
        assert all(corpus[i] == t.target for i in relevant(t, corpus))
    with pytest.raises(ValueError, match="kinds"):
        make_triplets(3, seed=1, kinds=["texture"])


def test_preprocess_follows_the_processor_config() -> None:
    config = {
        "do_resize": True,
        "size": {"shortest_edge": 64},
        "resample": 3,
        "do_center_crop": True,
        "crop_size": {"height": 64, "width": 64},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.25, 0.25, 0.25],
    }
    img = generate(1, seed=1)[0].image
    px = preprocess([img], config)
    assert px.shape == (1, 3, 64, 64) and px.dtype == np.float32
    expected = (np.asarray(img, dtype=np.float32) / 255 - 0.5) / 0.25
    np.testing.assert_allclose(px[0].transpose(1, 2, 0), expected, atol=1e-5)
    wide = img.resize((128, 96))
    assert preprocess([wide], config).shape == (1, 3, 64, 64)
    assert set(COLOURS) >= {"red", "blue"}
