"""ONNX Runtime backend: CPU everywhere, the CUDA provider where the installed build has it."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Backend, ModelError, TensorSpec

_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
           "tensor(int32)": np.int32, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, model: str | Path | bytes, *, use_gpu: bool = True, threads: int = 0):
        import onnxruntime as ort

        if not isinstance(model, bytes):
            path = Path(model).expanduser()
            if not path.is_file():
                raise ModelError(f"model file {path} does not exist.")
            model = str(path)
        available = ort.get_available_providers()
        providers = ["CUDAExecutionProvider"] if use_gpu and "CUDAExecutionProvider" in available else []
        providers.append("CPUExecutionProvider")  # named explicitly: some builds list Azure first
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads
        # Idle intra-op threads sleep instead of spinning: on a loaded 2-core machine spinning cost CenterFace time
        # (2 threads, 640x480: float 98 -> 60 ms, INT8 28 -> 14 ms per frame, process CPU alike) and burned about
        # 27 ms of CPU in the 30 ms after each INT8 frame; with 1 thread it changes nothing (scripts/bench_ort_spinning.py).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(model, options, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types for every kind of bad file
            where = "the given model bytes" if isinstance(model, bytes) else model
            raise ModelError(f"cannot load {where} with ONNX Runtime: {str(e).splitlines()[0]}") from None
        self.providers = self._session.get_providers()
        self.inputs = [_spec(i) for i in self._session.get_inputs()]
        self.outputs = [_spec(o) for o in self._session.get_outputs()]
        self.metadata = dict(self._session.get_modelmeta().custom_metadata_map)
        self._output_names = [o.name for o in self.outputs]

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._output_names, self._session.run(self._output_names, feeds)))


def _spec(arg) -> TensorSpec:
    return TensorSpec(arg.name, tuple(arg.shape), np.dtype(_DTYPES.get(arg.type, np.float32)))
