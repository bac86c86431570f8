"""CLIP dual encoder from an exported directory: fidelity vs transformers, API, int8 variant.

The model is a randomly initialised full-size CLIP ViT-B/32 exported by our exporter (cached in
.mmr-test-data/model-cache; the first export takes a few minutes on 2 cores).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pg_mmretrieval import plugins
from pg_mmretrieval.encoders import get_encoder
from pg_mmretrieval.modeldir import verify_model
from pg_mmretrieval.preprocess import decode_image

from .images import sample_files
from .models import random_clip_model

pytestmark = pytest.mark.slow

TEXTS = [
    "a photo of a dog",
    "two red circles on a white background",
    "a very long caption " + "with many words " * 20,
    "x",
]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def clip(monkeypatch_module: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path]]:
    checkpoint, model = random_clip_model()
    monkeypatch_module.setenv("MMR_MODEL_DIR", str(model.parent))
    plugins.reset()
    yield checkpoint, model
    plugins.reset()


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_registered_from_model_dir(clip: tuple[Path, Path]) -> None:
    enc = get_encoder("clip-b32-random")
    assert enc.dimension == 512
    assert enc.modalities == frozenset({"text", "image"})
    assert plugins.encoder_origins()["clip-b32-random:int8"] == "builtin_onnx_encoders"
    assert verify_model(clip[1]) == []


def test_fidelity_vs_transformers(clip: tuple[Path, Path]) -> None:
    """Same texts and images: our tokenizers/Pillow/ONNX pipeline vs CLIPModel + processor."""
    import torch
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    checkpoint = str(clip[0])
    model = CLIPModel.from_pretrained(checkpoint).eval()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    processor = CLIPImageProcessor.from_pretrained(checkpoint)
    files = sample_files()
    tokens = tokenizer(TEXTS[:2] + TEXTS[3:], padding=True, return_tensors="pt")
    tokens.pop("token_type_ids", None)  # a BERT tokenizer; CLIP takes ids and mask only
    pixels = processor(images=[decode_image(f) for f in files], return_tensors="pt")
    with torch.no_grad():
        ref_text = _unit(model.get_text_features(**tokens).numpy())
        ref_image = _unit(model.get_image_features(**pixels).numpy())
    enc = get_encoder("clip-b32-random")
    ours = np.stack(list(enc.embed_batch([*TEXTS[:2], *TEXTS[3:], *files])))
    cos_text = np.sum(ours[:3] * ref_text, axis=1)
    cos_image = np.sum(ours[3:] * ref_image, axis=1)
    print(f"clip fidelity: text min {cos_text.min():.7f}, image min {cos_image.min():.7f}")
    assert cos_text.min() >= 0.9999
    assert cos_image.min() >= 0.9999
    # the comparison has power: different inputs give clearly different vectors
    image_sims = ref_image @ ref_image.T
    assert image_sims[~np.eye(len(files), dtype=bool)].max() < 0.999


def test_int8_variant(clip: tuple[Path, Path]) -> None:
    files = sample_files()
    fp32 = np.stack(list(get_encoder("clip-b32-random").embed_batch([*TEXTS, *files])))
    int8 = np.stack(list(get_encoder("clip-b32-random:int8").embed_batch([*TEXTS, *files])))
    cosine = np.sum(fp32 * int8, axis=1)
    print(f"clip int8 vs fp32: mean cosine {cosine.mean():.4f}")
    assert cosine.mean() >= 0.99


def test_images_run_in_batches_of_batch_size(clip: tuple[Path, Path]) -> None:
    """More images than batch_size: sub-batches, same vectors, input order kept."""
    from pg_mmretrieval_plugins.onnx_encoders import OnnxEncoder

    files = sample_files()
    base = get_encoder("clip-b32-random")
    assert isinstance(base, OnnxEncoder) and len(files) > 2
    small = OnnxEncoder(base.manifest)
    small.batch_size = 2
    items = [*files, TEXTS[0], *files[:1]]
    ours = np.stack(list(small.embed_batch(items)))
    reference = np.stack(list(base.embed_batch(items)))
    assert np.allclose(np.sum(ours * reference, axis=1), 1.0, atol=1e-5)


def test_long_text_windows(clip: tuple[Path, Path]) -> None:
    enc = get_encoder("clip-b32-random")
    long = TEXTS[2] * 3
    assert len(enc._text_pre().windows([long])) > 1  # type: ignore[attr-defined]
    default = next(iter(enc.embed_batch([long])))
    truncated = next(iter(get_encoder("clip-b32-random", truncate=True).embed_batch([long])))
    assert not np.allclose(default, truncated)
