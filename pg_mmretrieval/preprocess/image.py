"""Image decoding and the CLIP/SigLIP image transforms with Pillow + numpy.

``decode_image`` turns any file Pillow reads into an RGB image: EXIF orientation applied,
palette and alpha composited onto white, CMYK and 16-bit converted.  ``ImagePreprocessor``
then reproduces Hugging Face's (slow, PIL-based) ``CLIPImageProcessor`` /
``SiglipImageProcessor``: resize (shortest edge, or fixed size), center crop, rescale,
normalise, channels first.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageMode, ImageOps

from ..errors import ConfigError, LimitError, PermanentLoadError

__all__ = [
    "DEFAULT_MAX_DECODED_BYTES",
    "DEFAULT_MAX_PIXELS",
    "ImagePreprocessor",
    "check_image_size",
    "decode_image",
    "decoded_bytes",
]

#: Larger images are refused (a decompression bomb guard): 8192 x 8192.
DEFAULT_MAX_PIXELS = 8192 * 8192
#: Images whose decoded samples (width x height x channels x bytes per sample) would take more
#: are refused before decoding: 96 MiB (a 32 MP 8-bit RGB photo fits; 8192^2 16-bit does not).
DEFAULT_MAX_DECODED_BYTES = 96 * 1024 * 1024


def decoded_bytes(img: Image.Image) -> int:
    """Bytes the decoded samples of an opened (not yet loaded) image take:
    width x height x channels x bytes per sample of its mode."""
    mode = ImageMode.getmode(img.mode)
    sample = max(1, int(mode.typestr[-1])) if mode.typestr[-1].isdigit() else 1
    width, height = img.size
    return width * height * len(mode.bands) * sample


def _check_opened(img: Image.Image, max_pixels: int, max_bytes: int) -> None:
    width, height = img.size
    if width * height > max_pixels:
        raise LimitError(
            f"image is {width}x{height} pixels, over the limit of {max_pixels} "
            "(possible decompression bomb; MMR_MAX_IMAGE_PIXELS)"
        )
    size = decoded_bytes(img)
    if size > max_bytes:
        raise LimitError(
            f"image is {width}x{height} pixels of mode {img.mode}: decoding it would take "
            f"{size} bytes, over the limit of {max_bytes} bytes (possible decompression bomb; "
            "MMR_MAX_IMAGE_BYTES)"
        )


def check_image_size(
    data: bytes,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_DECODED_BYTES,
) -> None:
    """Refuse an encoded image whose header announces too many pixels or decoded bytes.

    Reads only the header (Pillow opens lazily); data Pillow does not recognise passes (the
    encoder decides about it).

    Raises:
        PermanentLoadError: over ``max_pixels`` or ``max_bytes``.
    """
    # No warnings.catch_warnings() here: it is not thread-safe and loaders run in threads.
    # Pillow warns above its limit, which is above the largest max_pixels LoadLimits allows,
    # so such an image is refused just below anyway.
    try:
        opened = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise LimitError(f"image refused as a decompression bomb: {e}") from None
    except Exception:  # not an image Pillow knows (or a broken header)
        return
    with opened:
        _check_opened(opened, max_pixels, max_bytes)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode.startswith("I;16"):
        # 16-bit data: 0..65535 to 0..255, rint(x / 257) in integers (no exact halves exist),
        # without a float64 copy of the image
        wide = np.asarray(img).astype(np.uint32)
        wide *= 2
        wide += 257
        wide //= 514
        img = Image.fromarray(wide.astype(np.uint8), mode="L")
    if img.mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        # 16-bit data: scale 0..65535 to 0..255 (same as dividing by 257).
        scale = 257.0 if arr.max(initial=0) > 255 or img.mode.startswith("I;16") else 1.0
        arr = np.clip(np.rint(arr / scale), 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, mode="L")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def decode_image(
    data: bytes,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_DECODED_BYTES,
) -> Image.Image:
    """Decode an encoded image file into an upright RGB image.

    The size is checked from the header before anything is decoded.  Pillow's own
    decompression-bomb check stays on as a second guard (``LoadLimits`` refuses a
    ``max_pixels`` above it, so it never refuses what these limits accept).

    Raises:
        PermanentLoadError: not an image Pillow can read, or over ``max_pixels`` pixels or
            ``max_bytes`` decoded bytes.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data))
            _check_opened(opened, max_pixels, max_bytes)
            opened.load()
            img: Image.Image = ImageOps.exif_transpose(opened) or opened
            return _to_rgb(img)
    except PermanentLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise LimitError(f"image refused as a decompression bomb: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:  # UnidentifiedImageError is an OSError
        raise PermanentLoadError(f"not a readable image file ({len(data)} bytes): {e}") from None


def _pair(size: Any, key_h: str = "height", key_w: str = "width") -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    return int(size[key_h]), int(size[key_w])


class ImagePreprocessor:
    """The image processor of a model, from its ``preprocessor_config.json`` dictionary."""

    def __init__(
        self,
        config: dict[str, Any],
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_bytes: int = DEFAULT_MAX_DECODED_BYTES,
    ) -> None:
        self.max_pixels = max_pixels
        self.max_bytes = max_bytes
        self.do_resize = bool(config.get("do_resize", True))
        size = config.get("size", {"shortest_edge": 224})
        self.shortest_edge: int | None = None
        self.resize_to: tuple[int, int] | None = None
        if isinstance(size, dict) and "shortest_edge" in size:
            self.shortest_edge = int(size["shortest_edge"])
        elif isinstance(size, int) and not config.get("do_center_crop", False):
            self.resize_to = (size, size)
        elif isinstance(size, int):
            self.shortest_edge = size
        elif isinstance(size, dict) and "height" in size:
            self.resize_to = _pair(size)
        else:
            raise ConfigError(f"unsupported image processor size {size!r}")
        self.resample = Image.Resampling(int(config.get("resample", Image.Resampling.BICUBIC)))
        self.do_center_crop = bool(config.get("do_center_crop", False))
        self.crop = _pair(config.get("crop_size", 224))
        self.do_rescale = bool(config.get("do_rescale", True))
        self.rescale_factor = float(config.get("rescale_factor", 1 / 255))
        self.do_normalize = bool(config.get("do_normalize", True))
        self.mean = np.asarray(config.get("image_mean", [0.5, 0.5, 0.5]), dtype=np.float32)
        self.std = np.asarray(config.get("image_std", [0.5, 0.5, 0.5]), dtype=np.float32)

    @property
    def output_size(self) -> tuple[int, int]:
        """(height, width) of ``pixel_values``."""
        if self.do_center_crop:
            return self.crop
        if self.resize_to is not None:
            return self.resize_to
        raise ConfigError("shortest-edge resize without center crop gives variable sizes")

    def _resize(self, img: Image.Image) -> Image.Image:
        if self.resize_to is not None:
            height, width = self.resize_to
        else:
            assert self.shortest_edge is not None
            w, h = img.size
            short, long = (w, h) if w <= h else (h, w)
            new_short, new_long = self.shortest_edge, int(self.shortest_edge * long / short)
            width, height = (new_short, new_long) if w <= h else (new_long, new_short)
        if (width, height) == img.size:
            return img
        return img.resize((width, height), resample=self.resample)

    def _center_crop(self, arr: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        crop_h, crop_w = self.crop
        h, w = arr.shape[:2]
        if h < crop_h or w < crop_w:
            # pad with zeros (centered), like transformers' center_crop
            ph, pw = max(crop_h, h), max(crop_w, w)
            padded = np.zeros((ph, pw, arr.shape[2]), dtype=arr.dtype)
            top, left = (ph - h) // 2, (pw - w) // 2
            padded[top : top + h, left : left + w] = arr
            arr, h, w = padded, ph, pw
        top, left = int((h - crop_h) / 2), int((w - crop_w) / 2)
        return arr[top : top + crop_h, left : left + crop_w]

    def pixel_values(self, img: Image.Image) -> npt.NDArray[np.float32]:
        """float32 ``[3, H, W]`` for one RGB image."""
        if self.do_resize:
            img = self._resize(img)
        arr: npt.NDArray[Any] = np.asarray(img, dtype=np.uint8)
        if self.do_center_crop:
            arr = self._center_crop(arr)
        out: npt.NDArray[Any] = arr
        if self.do_rescale:
            out = (arr.astype(np.float64) * self.rescale_factor).astype(np.float32)
        else:
            out = arr.astype(np.float32)
        if self.do_normalize:
            out = (out - self.mean) / self.std
        return np.ascontiguousarray(out.transpose(2, 0, 1), dtype=np.float32)

    def __call__(self, images: list[bytes]) -> npt.NDArray[np.float32]:
        """``pixel_values`` float32 ``[N, 3, H, W]`` for encoded image files.

        Raises:
            PermanentLoadError: an item is not a readable image or is too large.
        """
        return np.stack(
            [self.pixel_values(decode_image(b, self.max_pixels, self.max_bytes)) for b in images]
        )
