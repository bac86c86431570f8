"""The ONNX Runtime layer: providers, caching, input validation, batching, no torch at runtime."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from pg_mmretrieval.errors import ConfigError, InputError
from pg_mmretrieval.onnx import (
    clear_cache,
    get_session,
    length_sorted_batches,
    requested_providers,
    size_batches,
)

from .models import REPO, minilm_dir

GPU_BUILD = ["CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.fixture()
def text_graph() -> object:
    return minilm_dir() / "text_model.onnx"


def test_default_providers_skip_cuda_without_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from pg_mmretrieval.onnx.providers import cuda_device_count

    monkeypatch.delenv("MMR_ONNX_PROVIDERS", raising=False)
    expected = GPU_BUILD if cuda_device_count() else ["CPUExecutionProvider"]
    assert requested_providers(GPU_BUILD) == expected
    assert requested_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]


def test_env_overrides_provider_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMR_ONNX_PROVIDERS", "cpu")
    assert requested_providers(GPU_BUILD) == ["CPUExecutionProvider"]
    monkeypatch.setenv("MMR_ONNX_PROVIDERS", "cpu, cuda")
    from pg_mmretrieval.onnx.providers import cuda_device_count

    cuda = ["CUDAExecutionProvider"] if cuda_device_count() else []
    assert requested_providers(GPU_BUILD) == ["CPUExecutionProvider", *cuda]
    monkeypatch.setenv("MMR_ONNX_PROVIDERS", "tensorrt")
    with pytest.raises(ConfigError, match=r"TensorrtExecutionProvider.*available: CUDA"):
        requested_providers(GPU_BUILD)


def test_session_reports_provider_and_is_cached(text_graph: object) -> None:
    clear_cache()
    session = get_session(text_graph)  # type: ignore[arg-type]
    assert session.provider in ("CPUExecutionProvider", "CUDAExecutionProvider")
    assert session.providers[-1] == "CPUExecutionProvider"
    assert get_session(text_graph) is session  # type: ignore[arg-type]
    assert set(session.inputs) == {"input_ids", "attention_mask", "token_type_ids"}


def test_cuda_request_without_gpu_falls_back_quietly(text_graph: object) -> None:
    """Asking for CUDA on a machine without a GPU runs on CPU and prints nothing."""
    code = (
        "from pg_mmretrieval.onnx import get_session; import sys;"
        f"s = get_session({str(text_graph)!r}); print(s.provider)"
    )
    env = {**os.environ, "MMR_ONNX_PROVIDERS": "cuda,cpu"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    from pg_mmretrieval.onnx.providers import cuda_device_count

    if cuda_device_count() == 0:
        assert out.stdout.strip() == "CPUExecutionProvider"
        assert "CUDA" not in out.stderr, out.stderr


def test_inputs_are_validated(text_graph: object) -> None:
    session = get_session(text_graph)  # type: ignore[arg-type]
    ids = np.array([[101, 7592, 102]], dtype=np.int64)
    ok = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": ids * 0}
    (hidden,) = session.run(ok, ["last_hidden_state"])
    assert hidden.shape == (1, 3, 384)
    with pytest.raises(InputError, match="input_ids must be int64, not int32"):
        session.run({**ok, "input_ids": ids.astype(np.int32)})
    with pytest.raises(InputError, match=r"shape \[3\], expected \[\?, \?\]"):
        session.run({**ok, "attention_mask": ids[0]})
    with pytest.raises(InputError, match=r"missing \['token_type_ids'\]"):
        session.run({"input_ids": ids, "attention_mask": ids})
    with pytest.raises(InputError, match=r"unexpected \['pixel_values'\]"):
        session.run({**ok, "pixel_values": np.zeros((1, 3), np.float32)})


def test_size_and_length_sorted_batches() -> None:
    assert [list(b) for b in size_batches([1, 2, 3, 4, 5], 2)] == [[1, 2], [3, 4], [5]]
    batches = list(length_sorted_batches([3, 9, 1, 7, 5], 2))
    assert batches == [[1, 3], [4, 0], [2]]
    with pytest.raises(ValueError):
        list(size_batches([1], 0))


def test_runtime_path_imports_neither_torch_nor_transformers() -> None:
    code = (
        "import sys, pg_mmretrieval;"
        "from pg_mmretrieval.encoders import get_encoder;"
        "e = get_encoder('minilm'); v = list(e.embed_batch(['hello'])); e.provider;"
        "bad = [m for m in ('torch', 'transformers', 'optimum') if m in sys.modules];"
        "assert not bad, bad"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
