"""Seeded test images in several sizes and modes, encoded as files."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw


def scene(width: int, height: int, seed: int) -> Image.Image:
    """A noisy gradient with a few coloured shapes (RGB)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], -1)
    noise = rng.normal(0, 20, (height, width, 3))
    img = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x0, y0 = int(rng.integers(0, width * 3 // 4)), int(rng.integers(0, height * 3 // 4))
        size = int(rng.integers(max(4, min(width, height) // 8), max(5, min(width, height) // 3)))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x0 + size, y0 + size), fill=color)
        else:
            draw.rectangle((x0, y0, x0 + size, y0 + size), fill=color)
    return img


def encode(img: Image.Image, fmt: str = "PNG", **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


#: (width, height) covering landscape, portrait, square, smaller than the crop, odd sizes
SIZES = [(640, 480), (300, 500), (224, 224), (100, 150), (333, 257), (1024, 200)]


def sample_files() -> list[bytes]:
    """PNG and JPEG files of seeded scenes in SIZES."""
    out = []
    for i, (w, h) in enumerate(SIZES):
        img = scene(w, h, seed=i)
        out.append(encode(img, "PNG") if i % 2 == 0 else encode(img, "JPEG", quality=90))
    return out
