"""Cached, validated ONNX Runtime sessions."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import ConfigError, EncoderError, InputError
from .providers import requested_providers

__all__ = [
    "ENV_ONNX_SPIN",
    "ENV_ONNX_THREADS",
    "InputSpec",
    "Session",
    "clear_cache",
    "get_session",
]

ENV_ONNX_THREADS = "MMR_ONNX_THREADS"
ENV_ONNX_SPIN = "MMR_ONNX_SPIN"
log = logging.getLogger(__name__)

_DTYPES: dict[str, Any] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
}


@dataclass(frozen=True)
class InputSpec:
    """A graph input: numpy dtype and shape (``None`` for a symbolic dimension)."""

    name: str
    dtype: Any
    shape: tuple[int | None, ...]


def _threads() -> int:
    raw = os.environ.get(ENV_ONNX_THREADS, "").strip()
    if not raw:
        # 0 = onnxruntime's default: one thread per physical core.
        return 0
    try:
        n = int(raw)
    except ValueError:
        raise ConfigError(f"{ENV_ONNX_THREADS}={raw!r} is not an integer") from None
    if n < 0:
        raise ConfigError(f"{ENV_ONNX_THREADS} must be >= 0, not {n}")
    return n


def _spin() -> bool:
    """Whether idle intra-op threads busy-wait (``MMR_ONNX_SPIN=1``; off by default).

    onnxruntime's default spinning burns whole cores between operators; next to a database,
    a writer thread or other processes on the same CPUs that time is taken from them, and a
    spinning thread that is descheduled stalls its peers.  Measured on 2 shared cores
    (bench/ingest.py), MiniLM encodes faster without it and uses about a third less CPU.
    """
    raw = os.environ.get(ENV_ONNX_SPIN, "").strip()
    if raw not in ("", "0", "1"):
        raise ConfigError(f"{ENV_ONNX_SPIN}={raw!r} must be 0 or 1")
    return raw == "1"


class Session:
    """An onnxruntime ``InferenceSession`` with input validation and provider reporting."""

    def __init__(self, path: Path, inner: Any) -> None:
        self.path = path
        self._inner = inner
        self.providers: list[str] = list(inner.get_providers())
        self.inputs: dict[str, InputSpec] = {}
        for arg in inner.get_inputs():
            if arg.type not in _DTYPES:
                raise EncoderError(f"{path}: input {arg.name} has unsupported type {arg.type}")
            shape = tuple(d if isinstance(d, int) else None for d in arg.shape)
            self.inputs[arg.name] = InputSpec(arg.name, _DTYPES[arg.type], shape)
        self.outputs: list[str] = [o.name for o in inner.get_outputs()]

    @property
    def provider(self) -> str:
        """The provider that actually runs the graph (the first one the session kept)."""
        return self.providers[0]

    def _validate(self, feeds: Mapping[str, npt.NDArray[Any]]) -> None:
        missing = sorted(set(self.inputs) - set(feeds))
        extra = sorted(set(feeds) - set(self.inputs))
        if missing or extra:
            raise InputError(
                f"{self.path.name}: inputs must be {sorted(self.inputs)}; "
                f"missing {missing}, unexpected {extra}"
            )
        for name, spec in self.inputs.items():
            arr = feeds[name]
            if not isinstance(arr, np.ndarray):
                raise InputError(f"{self.path.name}: input {name} must be a numpy array")
            if arr.dtype != spec.dtype:
                raise InputError(
                    f"{self.path.name}: input {name} must be {np.dtype(spec.dtype).name}, "
                    f"not {arr.dtype.name}"
                )
            if arr.ndim != len(spec.shape) or any(
                want is not None and got != want
                for got, want in zip(arr.shape, spec.shape, strict=True)
            ):
                want_s = "[" + ", ".join("?" if d is None else str(d) for d in spec.shape) + "]"
                raise InputError(
                    f"{self.path.name}: input {name} has shape {list(arr.shape)}, expected {want_s}"
                )
            if arr.size == 0:
                raise InputError(f"{self.path.name}: input {name} is empty")

    def run(
        self, feeds: Mapping[str, npt.NDArray[Any]], outputs: Sequence[str] | None = None
    ) -> list[npt.NDArray[Any]]:
        """Validate ``feeds`` and run the graph.

        Raises:
            InputError: a missing/unexpected input, or a wrong dtype or shape.
            EncoderError: onnxruntime failed.
        """
        self._validate(feeds)
        try:
            result: list[npt.NDArray[Any]] = self._inner.run(
                list(outputs) if outputs else None, dict(feeds)
            )
        except Exception as e:
            raise EncoderError(f"{self.path.name}: onnxruntime failed: {e}") from e
        return result


def _preload_cuda(ort: Any) -> None:
    """Load CUDA/cuDNN from the nvidia-* wheels (the ``gpu`` extra) when they are installed."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    try:
        preload()
    except Exception as e:  # system-wide CUDA may still work: let the session decide
        log.debug("onnxruntime.preload_dlls failed: %s", e)


_cache: dict[tuple[str, int, int, tuple[str, ...], int, bool], Session] = {}
_lock = threading.Lock()


def clear_cache() -> None:
    """Drop every cached session (tests; after changing ``MMR_ONNX_PROVIDERS``)."""
    with _lock:
        _cache.clear()


def get_session(path: Path) -> Session:
    """The process's session for an ONNX file (created on first use, then cached).

    Raises:
        NotFoundError-like ConfigError: the file is missing.
        EncoderError: onnxruntime cannot load the graph.
    """
    import onnxruntime as ort

    path = Path(path).resolve()
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"ONNX file not found: {path}") from None
    providers = requested_providers(list(ort.get_available_providers()))
    if "CUDAExecutionProvider" in providers:
        _preload_cuda(ort)
    threads = _threads()
    spin = _spin()
    key = (str(path), st.st_mtime_ns, st.st_size, tuple(providers), threads, spin)
    with _lock:
        cached = _cache.get(key)
        if cached is not None:
            return cached
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        if not spin:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3  # errors only: the provider actually used is reported
        try:
            inner = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as e:
            raise EncoderError(f"onnxruntime cannot load {path}: {e}") from e
        session = Session(path, inner)
        if session.provider != providers[0]:
            log.info("%s: asked for %s, running on %s", path.name, providers, session.providers)
        log.debug("%s runs on %s", path.name, session.provider)
        _cache[key] = session
        return session
