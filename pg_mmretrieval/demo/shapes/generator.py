"""Seeded procedural images of shapes with templated captions (Pillow + numpy only).

A scene is one group of ``count`` identical shapes (same shape, colour and size) placed in one
region of the canvas; its :class:`Attributes` are the ground truth for captions, zero-shot
classification and composed retrieval.  Two drawing styles exist:

``flat`` (the training style)
    dark, slightly noisy background, shapes drawn without anti-aliasing, sizes small 15-20 % /
    large 26-30 % of the canvas, groups near fixed region anchors.
``paper`` (the out-of-style test)
    white background, 4x supersampled (anti-aliased) shapes with other proportions, sizes
    small 13-16 % / large 25-28 %, groups placed further out with larger jitter.

Every random choice comes from the ``numpy.random.Generator`` passed in, so the same seed always
gives the same pixels.  The attribute vocabulary and the captions live in :mod:`.captions`
(re-exported here).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .captions import (
    ATTRIBUTES,
    COLOURS,
    COUNTS,
    IMAGE_SIZE,
    POSITIONS,
    SHAPES,
    SIZES,
    STYLES,
    Attributes,
    canonical_caption,
    caption,
    matches,
    partial_caption,
    random_attributes,
)

__all__ = [
    "ATTRIBUTES",
    "COLOURS",
    "COUNTS",
    "IMAGE_SIZE",
    "POSITIONS",
    "SHAPES",
    "SIZES",
    "STYLES",
    "Attributes",
    "Sample",
    "canonical_caption",
    "caption",
    "generate",
    "matches",
    "partial_caption",
    "random_attributes",
    "render",
    "render_randomised",
]


@dataclass(frozen=True)
class Sample:
    """One generated image with its attributes and a caption."""

    attributes: Attributes
    image: Image.Image
    caption: str


# --- drawing ------------------------------------------------------------------------------------

_STYLE_GEOMETRY: dict[str, dict[str, Any]] = {
    # size ranges as fractions of the canvas; gap between group members; anchors; jitter
    "flat": {
        "small": (0.15, 0.20),
        "large": (0.26, 0.30),
        "gap": {"small": 0.07, "large": 0.03},
        "anchor": 0.22,
        "jitter": 0.04,
        "cross": (0.34, 0.34),
        "star_inner": 0.45,
    },
    "paper": {
        "small": (0.13, 0.16),
        "large": (0.25, 0.28),
        "gap": {"small": 0.10, "large": 0.04},
        "anchor": 0.17,
        "jitter": 0.06,
        "cross": (0.26, 0.30),
        "star_inner": 0.5,
    },
}


def _polygon(shape: str, cx: float, cy: float, s: float, geo: Mapping[str, Any]) -> list[float]:
    r = s / 2
    if shape == "square":
        h = r * float(geo.get("square", 0.88))
        pts = [(-h, -h), (h, -h), (h, h), (-h, h)]
    elif shape == "triangle":
        # equilateral, pointing up, bounding box centred
        R = r * 1.12
        pts = [
            (R * math.cos(math.radians(a)), R * math.sin(math.radians(a))) for a in (-90, 30, 150)
        ]
        ys = [p[1] for p in pts]
        dy = -(min(ys) + max(ys)) / 2
        pts = [(x, y + dy) for x, y in pts]
    elif shape == "star":
        R = r * 1.08
        inner = R * float(geo["star_inner"])
        pts = []
        for k in range(10):
            rad = R if k % 2 == 0 else inner
            ang = math.radians(-90 + 36 * k)
            pts.append((rad * math.cos(ang), rad * math.sin(ang)))
        ys = [p[1] for p in pts]
        dy = -(min(ys) + max(ys)) / 2
        pts = [(x, y + dy) for x, y in pts]
    elif shape == "cross":
        t = r * float(geo["cross_t"])
        pts = [
            (-t, -r), (t, -r), (t, -t), (r, -t), (r, t), (t, t),
            (t, r), (-t, r), (-t, t), (-r, t), (-r, -t), (-t, -t),
        ]  # fmt: skip
    else:
        raise ValueError(f"no polygon for shape {shape!r}")
    angle = float(geo.get("rotation", 0.0))
    if angle:
        c, sn = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        pts = [(x * c - y * sn, x * sn + y * c) for x, y in pts]
    out: list[float] = []
    for x, y in pts:
        out.extend((cx + x, cy + y))
    return out


def _layout(
    a: Attributes, s: float, geo: Mapping[str, Any], rng: np.random.Generator, style: str
) -> list[tuple[float, float]]:
    """Centres (in canvas fractions) of the group's members."""
    step = s + float(geo["gap"][a.size])
    n = a.count
    offsets = [(k - (n - 1) / 2) * step for k in range(n)]
    anchor = float(geo["anchor"])
    jit = float(geo["jitter"])
    jx, jy = (float(v) for v in rng.uniform(-jit, jit, size=2))
    if a.position in ("left", "right"):
        x = anchor if a.position == "left" else 1 - anchor
        spread = float(geo.get("spread", 0.12 if style == "paper" else 0.0))
        y = 0.5 + float(rng.uniform(-spread, spread))
        centres = [(x + jx, y + o + jy) for o in offsets]
    elif a.position in ("top", "bottom"):
        y = anchor if a.position == "top" else 1 - anchor
        spread = float(geo.get("spread", 0.12 if style == "paper" else 0.0))
        x = 0.5 + float(rng.uniform(-spread, spread))
        centres = [(x + o + jx, y + jy) for o in offsets]
    else:
        centres = [(0.5 + o + jx, 0.5 + jy) for o in offsets]
    return _inside(centres, s)


def _inside(centres: list[tuple[float, float]], s: float) -> list[tuple[float, float]]:
    """The group shifted (never shrunk) so that shapes of size ``s`` stay inside the canvas."""
    half = s / 2 + 0.01
    xs = [c[0] for c in centres]
    ys = [c[1] for c in centres]
    dx = max(0.0, half - min(xs)) - max(0.0, max(xs) - (1 - half))
    dy = max(0.0, half - min(ys)) - max(0.0, max(ys) - (1 - half))
    return [(x + dx, y + dy) for x, y in centres]


def _draw(
    a: Attributes,
    centres: Sequence[tuple[float, float]],
    s: float,
    geo: Mapping[str, Any],
    rng: np.random.Generator,
    size: int,
    scale: int,
    background: tuple[int, ...],
    fill: tuple[int, ...],
    blur: float,
    noise_sd: float,
    outline: tuple[int, ...] | None = None,
    width: int = 0,
) -> Image.Image:
    """Rasterise the group at ``scale`` x ``size`` pixels, downsample, blur, add pixel noise."""
    big = size * scale
    img = Image.new("RGB", (big, big), background)
    draw = ImageDraw.Draw(img)
    px = s * big
    for cx, cy in centres:
        x, y = cx * big, cy * big
        if a.shape == "circle":
            r = px / 2
            draw.ellipse((x - r, y - r, x + r, y + r), fill=fill, outline=outline, width=width)
        else:
            pts = _polygon(a.shape, x, y, px, geo)
            draw.polygon(pts, fill=fill, outline=outline, width=max(width, 1))
    if scale > 1:
        img = img.resize((size, size), Image.Resampling.BOX)
    if blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    if noise_sd > 0:
        arr = np.asarray(img, dtype=np.float32)
        arr = arr + np.float32(noise_sd) * rng.standard_normal(arr.shape, dtype=np.float32)
        img = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB")
    return img


def _jitter_colour(
    rgb: tuple[int, int, int], rng: np.random.Generator, amount: int
) -> tuple[int, ...]:
    noise = rng.integers(-amount, amount + 1, size=3)
    return tuple(int(v) for v in np.clip(np.array(rgb) + noise, 0, 255))


def render(
    a: Attributes,
    rng: np.random.Generator,
    style: str = "flat",
    size: int = IMAGE_SIZE,
    augment: bool = False,
    vary: bool = False,
    wide: bool = False,
) -> Image.Image:
    """Draw the scene ``a`` as an RGB image of ``size`` x ``size`` pixels.

    ``vary`` (training only) widens the geometry: small shapes down to 12 % of the canvas,
    cross arm widths 24-38 %, star inner radius 40-55 %.
    ``augment`` (training only, ``flat`` style) randomises the background brightness and tint,
    sometimes anti-aliases and blurs, and adds pixel noise, so the model does not tie shapes to
    one background or one rasterisation.
    ``wide`` (training only, the second training phase) widens the layout (region anchors
    15-25 % from the edge, jitter +-6 %, +-12 % along the free axis) and, with ``augment``,
    draws a third of the backgrounds light (195-255), a third dark (0-59) and the rest anywhere.
    """
    if style not in _STYLE_GEOMETRY:
        raise ValueError(f"unknown style {style!r}; expected one of {STYLES}")
    geo = dict(_STYLE_GEOMETRY[style])
    lo, hi = geo[a.size]
    if vary:
        # wider geometry for training: smaller small shapes, other cross and star proportions
        lo = 0.12 if a.size == "small" else lo
        geo["cross"] = (0.24, 0.38)
        geo["star_inner"] = float(rng.uniform(0.4, 0.55))
    if wide:
        geo["anchor"] = float(rng.uniform(0.15, 0.25))
        geo["jitter"] = 0.06
        geo["spread"] = 0.12
    s = float(rng.uniform(lo, hi))
    cl, ch = geo["cross"]
    geo["cross_t"] = float(rng.uniform(cl, ch))
    centres = _layout(a, s, geo, rng, style)

    if style == "paper":
        background: tuple[int, ...] = (255, 255, 255)
        scale = 4
        fill = _jitter_colour(COLOURS[a.colour], rng, 12)
        noise_sd = 0.0
        blur = 0.0
    else:
        if wide and augment:
            u = float(rng.random())
            if u < 0.3:
                level = int(rng.integers(0, 256))
            elif u < 0.65:
                level = int(rng.integers(195, 256))
            else:
                level = int(rng.integers(0, 60))
        elif augment and rng.random() < 0.5:
            level = int(rng.integers(0, 256))
        else:
            level = int(rng.integers(0, 60))
        background = _jitter_colour((level, level, level), rng, 12)
        scale = 4 if augment and rng.random() < 0.5 else 1
        fill = _jitter_colour(COLOURS[a.colour], rng, 25 if augment else 15)
        noise_sd = float(rng.uniform(0, 8)) if augment else 3.0
        blur = float(rng.uniform(0, 0.7)) if augment and rng.random() < 0.3 else 0.0
    return _draw(a, centres, s, geo, rng, size, scale, background, fill, blur, noise_sd)


#: Ranges of the domain-randomised training renderer (:func:`render_randomised`).
RANDOMISED: dict[str, Any] = {
    "small": (0.10, 0.21),  # shape size, fraction of the canvas
    "large": (0.24, 0.32),
    "gap": {"small": (0.05, 0.11), "large": (0.02, 0.05)},
    "anchor": (0.15, 0.25),  # distance of a side region's group from the edge
    "jitter": 0.07,  # uniform +- jitter of the group, both axes
    "off_axis": 0.14,  # extra +- offset along the free axis of left/right/top/bottom groups
    "cross": (0.22, 0.40),  # cross arm half-width / half-size
    "star_inner": (0.38, 0.58),  # star inner radius / outer radius
    "square": (0.80, 0.95),  # square half-side / half-size
    "rotation": 12.0,  # +- degrees, whole group
    "background": (0.35, 0.35),  # P(dark 0-60), P(any 0-255); else light (195-255)
    "p_antialias": 0.5,
    "p_outline": 0.2,
    "p_blur": 0.3,
    "blur": (0.0, 0.8),
    "noise": (0.0, 8.0),
    "colour_jitter": 25,
}


def render_randomised(
    a: Attributes, rng: np.random.Generator, size: int = IMAGE_SIZE
) -> Image.Image:
    """Draw ``a`` with domain randomisation (the training renderer; ranges in ``RANDOMISED``).

    Built on the ``flat`` style's drawing code with every nuisance factor randomised
    independently: background level anywhere from black to white with a colour tint, shape
    sizes (small 10-21 %, large 24-32 % of the canvas), group gaps, region anchors, jitter and
    off-axis offsets, cross arm width, star inner radius, square proportion, a small rotation of
    the group (+-12 degrees), 4x anti-aliasing, a darker outline, blur, pixel noise and colour
    jitter.  The out-of-style ``paper`` geometry is never used here.
    """
    R = RANDOMISED
    s = float(rng.uniform(*R[a.size]))
    geo: dict[str, Any] = {
        "cross_t": float(rng.uniform(*R["cross"])),
        "star_inner": float(rng.uniform(*R["star_inner"])),
        "square": float(rng.uniform(*R["square"])),
        "rotation": float(rng.uniform(-R["rotation"], R["rotation"])),
    }
    step = s + float(rng.uniform(*R["gap"][a.size]))
    offsets = [(k - (a.count - 1) / 2) * step for k in range(a.count)]
    anchor = float(rng.uniform(*R["anchor"]))
    jx, jy = (float(v) for v in rng.uniform(-R["jitter"], R["jitter"], size=2))
    free = float(rng.uniform(-R["off_axis"], R["off_axis"]))
    if a.position in ("left", "right"):
        x = anchor if a.position == "left" else 1 - anchor
        centres = [(x + jx, 0.5 + free + o + jy) for o in offsets]
    elif a.position in ("top", "bottom"):
        y = anchor if a.position == "top" else 1 - anchor
        centres = [(0.5 + free + o + jx, y + jy) for o in offsets]
    else:
        centres = [(0.5 + o + jx, 0.5 + jy) for o in offsets]
    centres = _inside(centres, s)

    u = rng.random()
    p_dark, p_any = R["background"]
    if u < p_dark:
        level = int(rng.integers(0, 60))
    elif u < p_dark + p_any:
        level = int(rng.integers(0, 256))
    else:
        level = int(rng.integers(195, 256))
    background = _jitter_colour((level, level, level), rng, 12)
    scale = 4 if rng.random() < R["p_antialias"] else 1
    fill = _jitter_colour(COLOURS[a.colour], rng, int(R["colour_jitter"]))
    outline = None
    width = 0
    if rng.random() < R["p_outline"]:
        outline = tuple(int(v * 0.6) for v in fill)
        width = scale
    noise_sd = float(rng.uniform(*R["noise"]))
    blur = float(rng.uniform(*R["blur"])) if rng.random() < R["p_blur"] else 0.0
    return _draw(
        a, centres, s, geo, rng, size, scale, background, fill, blur, noise_sd, outline, width
    )


def generate(
    n: int, seed: int, style: str = "flat", size: int = IMAGE_SIZE, augment: bool = False
) -> list[Sample]:
    """``n`` random samples (image, attributes, random full caption), reproducible per ``seed``."""
    rng = np.random.default_rng([seed, STYLES.index(style) if style in STYLES else 99])
    out: list[Sample] = []
    for _ in range(n):
        a = random_attributes(rng)
        img = render(a, rng, style=style, size=size, augment=augment)
        out.append(Sample(a, img, caption(a, rng)))
    return out
