"""mmr models export/list/verify on a tiny BERT checkpoint (fast), and model discovery."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pg_mmretrieval import plugins
from pg_mmretrieval.cli import cli
from pg_mmretrieval.encoders import get_encoder
from pg_mmretrieval.errors import ConfigError, EncoderError
from pg_mmretrieval.export import export_model, variants
from pg_mmretrieval.modeldir import discover_models, verify_model

from .models import minilm_source


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded 2-layer BERT with MiniLM's tokenizer and CLS pooling (sentence-transformers)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    out = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)  # fmt: skip
    torch.manual_seed(0)
    BertModel(config).save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(minilm_source())).save_pretrained(str(out))
    (out / "1_Pooling").mkdir()
    (out / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("models")
    mp = pytest.MonkeyPatch()
    mp.setenv("MMR_MODEL_DIR", str(root))
    plugins.reset()
    yield root
    mp.undo()
    plugins.reset()


def test_export_list_verify(tiny_bert: Path, model_dir: Path) -> None:
    result = CliRunner().invoke(
        cli, ["models", "export", str(tiny_bert), "--name", "tiny", "--int8", "--fp16"]
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((model_dir / "tiny" / "manifest.json").read_text())
    assert manifest["kind"] == "text" and manifest["pooling"] == "cls"
    assert manifest["dimension"] == 32 and manifest["max_length"] == 128
    assert manifest["variants"]["int8"]["cosine"]["text"] >= 0.99
    assert manifest["variants"]["fp16"]["cosine"]["text"] >= 0.99
    assert set(manifest["files"]) == {
        "text_model.onnx", "text_model.int8.onnx", "text_model.fp16.onnx", "tokenizer.json"
    }  # fmt: skip
    assert discover_models()["tiny"] == model_dir / "tiny"

    listed = CliRunner().invoke(cli, ["models", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    tiny = next(m for m in json.loads(listed.output) if m["name"] == "tiny")
    assert tiny["variants"] == ["fp16", "int8"]
    verified = CliRunner().invoke(cli, ["models", "verify", "tiny"])
    assert verified.exit_code == 0 and "tiny: ok" in verified.output

    plugins.reset()
    enc = get_encoder("tiny")
    vectors = np.stack(list(enc.embed_batch(["hello world", "another text"])))
    assert vectors.shape == (2, 32)
    assert get_encoder("tiny:int8").dimension == 32


def test_cls_pooling_matches_transformers(tiny_bert: Path, model_dir: Path) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    if not (model_dir / "tiny").exists():
        export_model(str(tiny_bert), "tiny")
    plugins.reset()
    texts = ["hello world", "a much longer sentence about red circles"]
    tok = AutoTokenizer.from_pretrained(str(tiny_bert))
    with torch.no_grad():
        ref = AutoModel.from_pretrained(str(tiny_bert))(
            **tok(texts, padding=True, return_tensors="pt")
        )
    cls = ref.last_hidden_state[:, 0].numpy()
    cls /= np.linalg.norm(cls, axis=1, keepdims=True)
    ours = np.stack(list(get_encoder("tiny").embed_batch(texts)))
    assert np.sum(ours * cls, axis=1).min() >= 0.9999


def test_verify_detects_tampering(model_dir: Path, tiny_bert: Path) -> None:
    if not (model_dir / "tiny").exists():
        export_model(str(tiny_bert), "tiny")
    copy = model_dir.parent / "tampered"
    shutil.copytree(model_dir / "tiny", copy)
    with (copy / "tokenizer.json").open("a") as f:
        f.write(" ")
    (copy / "text_model.int8.onnx").unlink()
    problems = verify_model(copy)
    assert "tokenizer.json: sha256 differs from the manifest (file changed or corrupt)" in problems
    assert "text_model.int8.onnx: missing" in problems
    result = CliRunner().invoke(cli, ["models", "verify", str(copy)])
    assert result.exit_code != 0 and "FAILED" in result.output


def test_variant_below_threshold_is_refused(
    tiny_bert: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(variants, "MIN_COSINE", 1.01)
    with pytest.raises(EncoderError, match="int8 text variant is refused"):
        export_model(str(tiny_bert), "refused", int8=True)
    assert not (model_dir / "refused").exists()
    assert [p.name for p in model_dir.iterdir() if p.name.startswith(".refused")] == []


def test_export_argument_errors(tiny_bert: Path, model_dir: Path) -> None:
    with pytest.raises(ConfigError, match="must match"):
        export_model(str(tiny_bert), "../evil")
    (model_dir / "taken").mkdir()
    with pytest.raises(ConfigError, match="exists; pass --force"):
        export_model(str(tiny_bert), "taken")


def test_unknown_variant_and_broken_manifest_are_clear(model_dir: Path) -> None:
    broken = model_dir / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text('{"format": 1, "kind": "audio"}')
    plugins.reset()
    # one broken directory does not hide the others
    assert "mmr-test" in plugins.encoder_origins()
    problems = verify_model(broken)
    assert problems and "kind must be one of" in problems[0]
    shutil.rmtree(broken)
