"""SigLIP layout: a tiny random SigLIP exported by our exporter matches transformers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pg_mmretrieval import plugins
from pg_mmretrieval.encoders import get_encoder
from pg_mmretrieval.export import export_model
from pg_mmretrieval.preprocess import decode_image

from .images import sample_files
from .models import minilm_source

TEXTS = ["a photo of a dog", "two red circles on a white background", "x"]


@pytest.fixture(scope="module")
def siglip(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A seeded tiny SigLIP (2 layers, 32-d, 64 px) with MiniLM's tokenizer, exported."""
    import torch
    from transformers import AutoTokenizer, SiglipConfig, SiglipImageProcessor, SiglipModel

    root = tmp_path_factory.mktemp("siglip")
    checkpoint = root / "checkpoint"
    tiny = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 64}  # fmt: skip
    config = SiglipConfig(
        text_config={**tiny, "vocab_size": 30522, "max_position_embeddings": 16},
        vision_config={**tiny, "image_size": 64, "patch_size": 16},
    )
    torch.manual_seed(0)
    SiglipModel(config).eval().save_pretrained(str(checkpoint))
    AutoTokenizer.from_pretrained(str(minilm_source())).save_pretrained(str(checkpoint))
    SiglipImageProcessor(size={"height": 64, "width": 64}).save_pretrained(str(checkpoint))
    export_model(str(checkpoint), "tiny-siglip", output_dir=root / "models")
    mp = pytest.MonkeyPatch()
    mp.setenv("MMR_MODEL_DIR", str(root / "models"))
    plugins.reset()
    yield checkpoint
    mp.undo()
    plugins.reset()


def test_siglip_fidelity_vs_transformers(siglip: Path) -> None:
    import torch
    from transformers import AutoTokenizer, SiglipImageProcessor, SiglipModel

    model = SiglipModel.from_pretrained(str(siglip)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(siglip))
    processor = SiglipImageProcessor.from_pretrained(str(siglip))
    files = sample_files()
    ids = tokenizer(TEXTS, padding="max_length", max_length=16, return_tensors="pt")["input_ids"]
    pixels = processor(images=[decode_image(f) for f in files], return_tensors="pt")
    with torch.no_grad():
        ref_text = model.get_text_features(input_ids=ids).numpy()
        ref_image = model.get_image_features(**pixels).numpy()
    ref = np.concatenate([ref_text, ref_image])
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    enc = get_encoder("tiny-siglip")
    assert enc.dimension == 32
    ours = np.stack(list(enc.embed_batch([*TEXTS, *files])))
    assert np.sum(ours * ref, axis=1).min() >= 0.9999


def test_oversize_and_garbage_images_are_permanent_errors(
    siglip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pg_mmretrieval.errors import PermanentLoadError

    enc = get_encoder("tiny-siglip")
    data = sample_files()[0]
    monkeypatch.setenv("MMR_MAX_ITEM_BYTES", str(len(data) - 1))
    with pytest.raises(PermanentLoadError, match="over the limit"):
        list(enc.embed_batch([data]))
    monkeypatch.delenv("MMR_MAX_ITEM_BYTES")
    with pytest.raises(PermanentLoadError, match="not a readable image"):
        list(enc.embed_batch([b"not an image at all"]))
