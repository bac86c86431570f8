"""The project's own toy multimodal world: procedurally drawn shapes with templated captions.

``captions`` holds the attribute vocabulary and the captions, ``generator`` draws seeded images
(Pillow + numpy only), ``cir`` builds composed-retrieval triplets from them, and ``evaluate``
scores the exported ONNX model with onnxruntime + tokenizers + numpy only.  The model itself is
trained and exported by ``scripts/train_shapes_clip.py`` (torch/transformers, the ``export``
extra).  Also importable as ``pg_mmretrieval.shapes``, its former path (a deprecated alias,
kept for one release).
"""

from __future__ import annotations

from pg_mmretrieval.demo.shapes.cir import Triplet, make_triplets
from pg_mmretrieval.demo.shapes.generator import (
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
