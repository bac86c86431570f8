"""Image decoding and preprocessing: odd files, limits, and parity with transformers' processor."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pg_mmretrieval.errors import PermanentLoadError
from pg_mmretrieval.preprocess import ImagePreprocessor, decode_image

from .images import SIZES, encode, sample_files, scene

CLIP_CONFIG = {
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "rescale_factor": 1 / 255,
    "size": {"shortest_edge": 224},
}
SIGLIP_CONFIG = {
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "resample": 2,
    "rescale_factor": 1 / 255,
    "size": {"height": 224, "width": 224},
}


def test_matches_transformers_clip_processor() -> None:
    from transformers import CLIPImageProcessor

    reference = CLIPImageProcessor(**CLIP_CONFIG)
    ours = ImagePreprocessor(CLIP_CONFIG)
    for data in sample_files():
        img = decode_image(data)
        expected = reference(images=img, return_tensors="np")["pixel_values"][0]
        got = ours([data])[0]
        assert got.shape == expected.shape == (3, 224, 224)
        assert np.abs(got - expected).max() < 1e-5


def test_matches_transformers_siglip_processor() -> None:
    from transformers import SiglipImageProcessor

    reference = SiglipImageProcessor(**SIGLIP_CONFIG)
    ours = ImagePreprocessor(SIGLIP_CONFIG)
    for data in sample_files():
        expected = reference(images=decode_image(data), return_tensors="np")["pixel_values"][0]
        assert np.abs(ours([data])[0] - expected).max() < 1e-5


def test_exif_orientation_is_applied() -> None:
    img = scene(120, 80, seed=1)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    decoded = decode_image(encode(img, "JPEG", exif=exif.tobytes()))
    assert decoded.size == (80, 120)


def test_palette_alpha_cmyk_and_16_bit() -> None:
    rgb = scene(64, 48, seed=2)
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE)
    rgba = rgb.convert("RGBA")
    rgba.putalpha(0)  # fully transparent: composited onto white
    cmyk = rgb.convert("CMYK")
    gray16 = Image.fromarray((np.arange(64 * 48).reshape(48, 64) * 21).astype(np.uint16))
    decoded = {
        "palette": decode_image(encode(palette, "PNG")),
        "rgba": decode_image(encode(rgba, "PNG")),
        "cmyk": decode_image(encode(cmyk, "JPEG")),
        "gray16": decode_image(encode(gray16, "PNG")),
        "gray": decode_image(encode(rgb.convert("L"), "PNG")),
    }
    assert all(img.mode == "RGB" and img.size == (64, 48) for img in decoded.values())
    assert np.all(np.asarray(decoded["rgba"]) == 255)
    g16 = np.asarray(decoded["gray16"])[..., 0].astype(int)
    assert g16.max() > 200 and g16.min() == 0  # scaled to 8 bits, not clipped at 255
    assert np.abs(np.asarray(decoded["palette"]).astype(int) - np.asarray(rgb)).mean() < 12


def test_decompression_bomb_and_garbage_are_permanent() -> None:
    big = encode(Image.new("L", (5000, 5000)), "PNG")  # tiny file, 25 M pixels
    with pytest.raises(PermanentLoadError, match="over the limit"):
        decode_image(big, max_pixels=4096 * 4096)
    with pytest.raises(PermanentLoadError, match="not a readable image"):
        decode_image(b"this is not an image")
    truncated = encode(scene(200, 200, seed=3), "PNG")[:300]
    with pytest.raises(PermanentLoadError):
        decode_image(truncated)


def test_sizes_cover_upscaling_and_extreme_ratios() -> None:
    pre = ImagePreprocessor(CLIP_CONFIG)
    out = pre([encode(scene(w, h, seed=0)) for w, h in SIZES])
    assert out.shape == (len(SIZES), 3, 224, 224) and out.dtype == np.float32
    assert np.isfinite(out).all()


def test_rgb_file_equals_pil_open() -> None:
    """For a plain RGB file our decoder gives exactly what PIL's open does."""
    data = sample_files()[1]
    assert np.array_equal(np.asarray(decode_image(data)), np.asarray(Image.open(io.BytesIO(data))))
