"""Execution-provider choice: CUDA then CPU, unless ``MMR_ONNX_PROVIDERS`` says otherwise."""

from __future__ import annotations

import ctypes
import functools
import logging
import os

from ..config import ENV_ONNX_PROVIDERS
from ..errors import ConfigError

__all__ = ["DEFAULT_ORDER", "cuda_device_count", "requested_providers"]

log = logging.getLogger(__name__)

DEFAULT_ORDER = ("CUDAExecutionProvider", "CPUExecutionProvider")
_SHORT = {
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
}


@functools.cache
def cuda_device_count() -> int:
    """GPUs the CUDA driver sees (0 without a driver), asked of libcuda directly.

    onnxruntime-gpu lists CUDAExecutionProvider as available even without a GPU; asking the
    driver first keeps sessions from trying (and logging an error about) a missing GPU.
    """
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return int(count.value)


def _normalise(name: str) -> str:
    return _SHORT.get(name.strip().lower(), name.strip())


def requested_providers(available: list[str]) -> list[str]:
    """The providers to ask a session for, in order.

    ``MMR_ONNX_PROVIDERS`` (comma list, short names ``cuda``/``cpu``/... accepted) sets the
    order; otherwise CUDA then CPU.  CUDA is dropped when the driver sees no GPU (CPU is then
    appended if the list would be empty), so a GPU build on a CPU machine stays quiet.

    Args:
        available: ``onnxruntime.get_available_providers()``.

    Raises:
        ConfigError: ``MMR_ONNX_PROVIDERS`` names a provider this onnxruntime lacks.
    """
    raw = os.environ.get(ENV_ONNX_PROVIDERS, "").strip()
    if raw:
        wanted = [_normalise(p) for p in raw.split(",") if p.strip()]
        missing = [p for p in wanted if p not in available]
        if missing:
            raise ConfigError(
                f"{ENV_ONNX_PROVIDERS} names {', '.join(missing)}, which this onnxruntime "
                f"does not provide (available: {', '.join(available)})"
            )
        order = wanted
    else:
        order = [p for p in DEFAULT_ORDER if p in available]
    if "CUDAExecutionProvider" in order and cuda_device_count() == 0:
        if raw:
            log.info("%s asks for CUDA but no GPU is visible: using CPU", ENV_ONNX_PROVIDERS)
        order.remove("CUDAExecutionProvider")
    return order or ["CPUExecutionProvider"]
