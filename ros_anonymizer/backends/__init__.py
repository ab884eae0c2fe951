"""One inference interface: load a model file, run named inputs, get named outputs.

The runtime picks the implementation from the model file (`.onnx`: ONNX
Runtime, `.engine`: TensorRT) or from the `backend` parameter; callers only
ever see `Backend`.
"""
from __future__ import annotations

from pathlib import Path

from .base import Backend, ModelError, TensorSpec


def load_backend(model: str | Path | bytes, backend: str = "auto", *, use_gpu: bool = True, threads: int = 0, **options) -> Backend:
    """Open `model` with the requested backend; raises ModelError with a user-facing message.

    `threads` bounds ONNX Runtime's CPU threads (0: one per core).
    """
    if backend == "auto":
        backend = "tensorrt" if isinstance(model, (str, Path)) and str(model).endswith(".engine") else "onnxruntime"
    if backend == "onnxruntime":
        from .onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(model, use_gpu=use_gpu, threads=threads)
    if backend == "tensorrt":
        from .tensorrt_backend import TensorRTBackend

        return TensorRTBackend(model, **options)
    raise ModelError(f"unknown inference backend {backend!r}; use onnxruntime or tensorrt.")


def load_model(model: str | Path | bytes, config, name: str) -> Backend:
    """Open one of the pipeline's models (`name`: face, anonymizer, action) as `config` asks.

    With `backend: tensorrt` and an ONNX model, the engine comes from the
    engine cache (`engine_cache_dir`, `trt_precision`, `build_if_missing`).
    """
    return load_backend(model, config.backend, use_gpu=config.use_gpu, threads=config.cpu_threads, config=config, model_name=name)


__all__ = ["Backend", "ModelError", "TensorSpec", "load_backend", "load_model"]
