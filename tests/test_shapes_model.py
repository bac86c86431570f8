"""The committed shapes-clip model: format, checksums and accuracy, with onnxruntime only."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

from pg_mmretrieval.demo.shapes.evaluate import (
    THRESHOLDS,
    OnnxShapesModel,
    default_model_dir,
    evaluate,
)

MODEL_DIR = default_model_dir()


@pytest.fixture(scope="module")
def model() -> OnnxShapesModel:
    return OnnxShapesModel(MODEL_DIR)


def test_manifest_follows_the_model_format() -> None:
    manifest = json.loads((MODEL_DIR / "manifest.json").read_text())
    assert manifest["format"] == 1
    assert manifest["name"] == "shapes-clip" == MODEL_DIR.name
    assert manifest["kind"] == "clip"
    assert manifest["modalities"] == ["text", "image"]
    assert manifest["normalize"] is True
    assert manifest["towers"]["text"]["inputs"] == ["input_ids", "attention_mask"]
    assert manifest["towers"]["text"]["output"] == "text_embeds"
    assert manifest["towers"]["image"]["inputs"] == ["pixel_values"]
    assert manifest["towers"]["image"]["output"] == "image_embeds"
    on_disk = {p.name for p in MODEL_DIR.iterdir() if p.name != "manifest.json"}
    assert (
        on_disk
        == set(manifest["files"])
        >= {
            "text_model.onnx",
            "vision_model.onnx",
            "tokenizer.json",
            "preprocessor_config.json",
        }
    )
    total = sum(p.stat().st_size for p in MODEL_DIR.iterdir())
    assert total < 10_000_000, f"committed model is {total} bytes"


def test_manifest_checksums_match_the_files() -> None:
    manifest = json.loads((MODEL_DIR / "manifest.json").read_text())
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((MODEL_DIR / name).read_bytes()).hexdigest() == digest, name


def test_towers_io(model: OnnxShapesModel) -> None:
    dim = int(model.manifest["dimension"])
    t = model.embed_texts(["a red circle", "three big blue stars at the top of the image"])
    assert t.shape == (2, dim) and t.dtype == np.float32
    # padding does not change an embedding: EOS pooling and the attention mask work
    alone = model.embed_texts(["a red circle"])
    np.testing.assert_allclose(t[0], alone[0], atol=1e-5)
    # unnormalised outputs (the encoder normalises)
    assert not np.allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-3)
    enc = model.tokenizer.encode("a red circle")
    assert enc.ids[-1] == 3 and enc.ids[0] == 2  # <bos> ... <eos>


def test_runtime_path_needs_no_torch() -> None:
    code = (
        "import sys; from pg_mmretrieval.demo.shapes.evaluate import OnnxShapesModel; "
        "m = OnnxShapesModel(); m.embed_texts(['a star']); "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# What the committed model reaches (docs/shapes-clip.md has the 1000-sample figures): the
# issue's targets (THRESHOLDS: colour, size, position >= 0.9, shape >= 0.8) in both styles, the
# training style with shape >= 0.9.  500 samples per style (paper shape 0.818 on this seed, 9
# images above its floor).
MODEL_FLOORS: dict[str, dict[str, float]] = {
    "flat": {**THRESHOLDS, "shape": 0.9, "t2i_R@10": 0.95},
    "paper": {**THRESHOLDS, "t2i_R@10": 0.95},
}


def test_accuracy_on_held_out_shapes_in_both_styles(model: OnnxShapesModel) -> None:
    report = evaluate(model.embed_texts, model.embed_images, n=500, seed=4242)
    for style, row in report.items():
        for metric, floor in MODEL_FLOORS[style].items():
            assert row[metric] >= floor, (style, metric, row)
