"""The project's own toy multimodal world: procedurally drawn shapes with templated captions.

``generator`` draws seeded images and captions (Pillow + numpy only), ``cir`` builds
composed-retrieval triplets from it, ``train`` (needs torch/transformers, the ``export`` extra)
trains and exports the ``shapes-clip`` model, and ``evaluate`` scores the exported ONNX model with
onnxruntime + tokenizers + numpy only.
"""

from __future__ import annotations

from pg_mmretrieval.shapes.cir import Triplet, make_triplets
from pg_mmretrieval.shapes.generator import (
    ATTRIBUTES,
    COLOURS,
    COUNTS,
    POSITIONS,
    SHAPES,
    SIZES,
    STYLES,
    Attributes,
    Sample,
    canonical_caption,
    caption,
    generate,
    matches,
    partial_caption,
    random_attributes,
    render,
    render_randomised,
)

__all__ = [
    "ATTRIBUTES",
    "COLOURS",
    "COUNTS",
    "POSITIONS",
    "SHAPES",
    "SIZES",
    "STYLES",
    "Attributes",
    "Sample",
    "Triplet",
    "canonical_caption",
    "caption",
    "generate",
    "make_triplets",
    "matches",
    "partial_caption",
    "random_attributes",
    "render",
    "render_randomised",
]
