"""int8 / fp16 variants of exported towers, checked against fp32 before they are kept."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

from ..errors import EncoderError

__all__ = ["MIN_COSINE", "make_fp16", "make_int8", "sample_images", "sample_texts"]

#: a variant whose embeddings fall below this mean cosine vs fp32 is refused
MIN_COSINE = 0.99


def make_int8(src: Path, dst: Path) -> None:
    """Per-channel dynamic int8 quantisation of the weights (activations stay float).

    Every operator onnxruntime quantises dynamically except ``Conv``: its integer kernel
    (ConvInteger) is slow on CPU, and a vision tower's only convolution is the patch embedding
    (~3 % of ViT-B/32's work).  Measured on the ViT-B/32 vision tower, 1 thread, batch 16: int8
    1.48x fp32 with the convolution quantised, 1.67x without it, same cosine (0.9994).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    quantize_dynamic(
        str(src),
        str(dst),
        per_channel=True,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=[op for op in IntegerOpsRegistry if op != "Conv"],
        extra_options={"MatMulConstBOnly": True},
    )


def make_fp16(src: Path, dst: Path) -> None:
    """fp16 weights and compute, fp32 inputs and outputs (for GPUs)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    converted = convert_float_to_float16(model, keep_io_types=True)
    onnx.save(converted, str(dst))


def sample_texts() -> list[str]:
    """Fixed texts for the variant check."""
    subjects = ["a red circle", "two blue squares", "a dog on the beach", "a plate of pasta",
                "the city at night", "a small green triangle", "an old wooden boat"]  # fmt: skip
    places = ["on a white background", "in the top left corner", "under a cloudy sky", ""]
    return [f"{s} {p}".strip() for s in subjects for p in places]


def sample_images(n: int = 12, size: int = 256) -> list[bytes]:
    """Seeded synthetic images (noise, gradients and shapes), PNG-encoded."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        base = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        if i % 2:
            ramp = np.linspace(0, 255, size, dtype=np.float32)
            base = (0.5 * base + 0.5 * ramp[None, :, None]).astype(np.uint8)
        img = Image.fromarray(base)
        draw = ImageDraw.Draw(img)
        for _ in range(3):
            x, y = (int(v) for v in rng.integers(0, size - 64, 2))
            color = tuple(int(c) for c in rng.integers(0, 256, 3))
            draw.ellipse((x, y, x + 60, y + 60), fill=color)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def mean_cosine(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:
    """Mean row-wise cosine similarity."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(np.mean(np.sum(a * b, axis=1)))


def check_cosine(name: str, cosine: float) -> None:
    if not cosine >= MIN_COSINE:
        raise EncoderError(
            f"the {name} variant is refused: mean cosine vs fp32 is {cosine:.4f} < {MIN_COSINE}"
        )
