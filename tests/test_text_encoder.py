"""The MiniLM text encoder (onnx_models/minilm): API, long texts, fidelity vs transformers."""

from __future__ import annotations

import numpy as np
import pytest

from pg_mmretrieval.encoders import get_encoder
from pg_mmretrieval.errors import InputError

from .models import minilm_dir, minilm_source

TEXTS = [
    "A man is eating food.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Two red circles and a small blue square on a white background.",
    "The new movie is awesome, I loved every minute of it!",
    "PostgreSQL stores vectors with pgvector and searches them with HNSW.",
    "ünïcödé and emoji 🚀 survive tokenization",
    "x",
]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def minilm() -> object:
    minilm_dir()
    return get_encoder("minilm")


def test_minilm_is_registered(minilm: object) -> None:
    enc = get_encoder("minilm")
    assert (enc.dimension, enc.modalities, enc.provider) == (
        384,
        frozenset({"text"}),
        "CPUExecutionProvider",
    )
    assert enc.model_id.startswith("minilm@")
    assert get_encoder("minilm:int8").model_id == enc.model_id + ":int8"


def test_images_are_rejected(minilm: object) -> None:
    with pytest.raises(InputError, match="does not embed image"):
        list(get_encoder("minilm").embed_batch([b"\x89PNG"]))


def test_batching_and_length_sorting_keep_order() -> None:
    enc = get_encoder("minilm")
    together = np.stack(list(enc.embed_batch(TEXTS)))
    alone = np.stack([next(iter(enc.embed_batch([t]))) for t in TEXTS])
    assert np.allclose(np.sum(together * alone, axis=1), 1.0, atol=1e-5)
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)


def test_long_texts_average_windows_unless_truncated() -> None:
    enc = get_encoder("minilm")
    head = "The recipe needs flour, butter, sugar and eggs baked in the oven. " * 30
    tail = "The football match ended with a late goal from the striker. " * 30
    default, truncated, tail_only = (
        next(iter(e.embed_batch([t])))
        for e, t in (
            (enc, head + tail),
            (get_encoder("minilm", truncate=True), head + tail),
            (enc, tail),
        )
    )
    pre = enc._text_pre()  # type: ignore[attr-defined]
    assert len(pre.windows([head + tail])) > 2
    # the default sees the end of the text; truncation does not
    assert float(default @ tail_only) > float(truncated @ tail_only) + 0.2
    assert get_encoder("minilm", truncate=True).model_id.endswith("/truncate")


def test_fidelity_vs_transformers(minilm: object) -> None:
    """Our tokenizers + ONNX + mean pooling == transformers' tokenizer + PyTorch model."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    src = str(minilm_source())
    tokenizer = AutoTokenizer.from_pretrained(src)
    model = AutoModel.from_pretrained(src).eval()
    batch = tokenizer(TEXTS, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    reference = _unit(((hidden * mask).sum(1) / mask.sum(1)).numpy())
    ours = np.stack(list(get_encoder("minilm").embed_batch(TEXTS)))
    cosine = np.sum(ours * reference, axis=1)
    print(f"minilm fidelity: min cosine {cosine.min():.7f}")
    assert cosine.min() >= 0.9999


def test_int8_variant_agrees_with_fp32() -> None:
    from pg_mmretrieval.export.variants import sample_texts

    texts = TEXTS + sample_texts()
    fp32 = np.stack(list(get_encoder("minilm").embed_batch(texts)))
    int8 = np.stack(list(get_encoder("minilm:int8").embed_batch(texts)))
    cosine = np.sum(fp32 * int8, axis=1)
    print(f"minilm int8 vs fp32: mean cosine {cosine.mean():.4f}, min {cosine.min():.4f}")
    assert cosine.mean() >= 0.99


def test_cli_embed(tmp_path: object) -> None:
    import json

    from click.testing import CliRunner

    from pg_mmretrieval.cli import cli

    result = CliRunner().invoke(cli, ["models", "embed", "minilm", "a red circle", "--truncate"])
    assert result.exit_code == 0, result.output
    line = json.loads(result.output)
    assert line["model_id"].endswith("/truncate") and len(line["embedding"]) == 384
    expected = next(iter(get_encoder("minilm").embed_batch(["a red circle"])))
    assert np.allclose(line["embedding"], expected, atol=1e-6)


def test_texts_are_length_sorted_across_batches() -> None:
    """embed_batch sorts up to sort_window batches of texts by length: little padding."""
    from pg_mmretrieval_plugins.onnx_encoders import OnnxEncoder

    base = get_encoder("minilm")
    assert isinstance(base, OnnxEncoder)
    enc = OnnxEncoder(base.manifest)
    enc.batch_size, enc.sort_window = 4, 3
    # alternating short and long texts: batches in input order would each pad to the long
    texts = [("short text" if i % 2 else "a much longer text " * (3 + i % 5)) for i in range(26)]
    widths: list[list[int]] = []
    run_text = enc._run_text

    def spy(windows: list) -> np.ndarray:  # type: ignore[type-arg]
        widths.append([len(w.ids) for w in windows])
        return run_text(windows)

    enc._run_text = spy  # type: ignore[method-assign]
    together = np.stack(list(enc.embed_batch(texts)))
    # chunks of 12, 12 and 2 items, each run as length-sorted batches of at most 4
    assert [len(w) for w in widths] == [4, 4, 4, 4, 4, 4, 2]
    for chunk in (widths[0:3], widths[3:6]):
        flat = [n for batch in chunk for n in batch]
        assert flat == sorted(flat, reverse=True)
    alone = np.stack([next(iter(base.embed_batch([t]))) for t in texts])
    assert np.allclose(np.sum(together * alone, axis=1), 1.0, atol=1e-5)
