"""TensorRT backend: serialized engines run with CUDA device memory, one stream, pinned host buffers.

Runtime code (no torch). `tensorrt` (JetPack, desktop) or `tensorrt_rtx` and
`pycuda` (or NVIDIA's `cuda-python` where pycuda is missing) are imported
lazily, so robots without a GPU never need them. Every engine comes with a
sidecar `<engine>.json` written by `engines/`: it names the ONNX model, the
TensorRT version and device the engine was built for, the engine's SHA-256
and the ONNX metadata_props. An engine whose bytes or sidecar do not match is
refused (fail closed): a wrong engine must never run on a robot.
"""
from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import numpy as np

from .base import Backend, ModelError, TensorSpec

SIDECAR_FORMAT = 1
TENSORRT_MODULES = ("tensorrt", "tensorrt_rtx")


# Engine files and their sidecars --------------------------------------------------------------

def sidecar_path(engine_path: str | Path) -> Path:
    return Path(str(engine_path) + ".json")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sidecar_checksum(fields: dict) -> str:
    """SHA-256 of the sidecar's fields (without the checksum itself), so an edited sidecar is noticed."""
    body = {k: v for k, v in fields.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def read_verified_sidecar(engine_path: str | Path) -> dict:
    """The sidecar of `engine_path` after checking it and the engine bytes; ModelError otherwise."""
    engine_path = Path(engine_path).expanduser()
    rebuild = "rebuild it with `ros-anonymizer engines build` (see docs/jetson.md)"
    if not engine_path.is_file():
        raise ModelError(f"TensorRT engine {engine_path} does not exist; {rebuild}.")
    side = sidecar_path(engine_path)
    try:
        fields = json.loads(side.read_text())
    except FileNotFoundError:
        raise ModelError(f"TensorRT engine {engine_path} has no sidecar {side.name}, so it cannot be verified; {rebuild}.") from None
    except (OSError, ValueError) as e:
        raise ModelError(f"the sidecar {side} of TensorRT engine {engine_path.name} is unreadable ({e.__class__.__name__}); {rebuild}.") from None
    if not isinstance(fields, dict) or fields.get("checksum") != sidecar_checksum(fields):
        raise ModelError(f"the sidecar {side} of TensorRT engine {engine_path.name} was modified or is damaged; {rebuild}.")
    if fields.get("format") != SIDECAR_FORMAT:
        raise ModelError(f"the sidecar {side} has format {fields.get('format')!r}, this version reads {SIDECAR_FORMAT}; {rebuild}.")
    if file_sha256(engine_path) != fields.get("engine_sha256"):
        raise ModelError(f"TensorRT engine {engine_path} does not match the SHA-256 in its sidecar "
                         f"(corrupted or replaced); {rebuild}.")
    return fields


def import_tensorrt(preferred: str | None = None):
    """The TensorRT Python module: standard `tensorrt` first, else `tensorrt_rtx` (same API where it matters)."""
    import importlib

    names = (preferred,) if preferred else TENSORRT_MODULES
    for name in names:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ModelError(f"TensorRT is not installed (looked for {' and '.join(names)}); on Jetson it comes with JetPack "
                     "(python3-libnvinfer), elsewhere use the ONNX Runtime backend (backend: onnxruntime).")


def tensorrt_version(trt) -> str:
    return f"{trt.__name__} {trt.__version__}"


# CUDA memory, streams and copies ---------------------------------------------------------------

class _PycudaMemory:
    """pycuda: the device's primary context, pushed around each call so any thread may run inference."""

    name = "pycuda"

    def __init__(self, device: int):
        import pycuda.driver as cuda

        self._cuda = cuda
        cuda.init()
        gpu = cuda.Device(device)
        self.device_name = gpu.name()
        self.compute_capability = "%d.%d" % gpu.compute_capability()
        self._context = gpu.retain_primary_context()
        self._buffers = []
        with self:
            self.stream = cuda.Stream()
            self.stream_handle = self.stream.handle

    def __enter__(self):
        self._context.push()
        return self

    def __exit__(self, *exc):
        self._cuda.Context.pop()

    def pinned(self, nbytes: int) -> np.ndarray:
        return self._cuda.pagelocked_empty(max(nbytes, 1), np.uint8)

    def device(self, nbytes: int) -> int:
        buffer = self._cuda.mem_alloc(max(nbytes, 1))
        self._buffers.append(buffer)
        return int(buffer)

    def to_device(self, address: int, host: np.ndarray) -> None:
        self._cuda.memcpy_htod_async(address, host, self.stream)

    def to_host(self, host: np.ndarray, address: int) -> None:
        self._cuda.memcpy_dtoh_async(host, address, self.stream)

    def synchronize(self) -> None:
        self.stream.synchronize()


class _CudaPythonMemory:
    """NVIDIA's cuda-python runtime bindings, for machines without pycuda (same operations)."""

    name = "cuda-python"

    def __init__(self, device: int):
        from cuda.bindings import runtime as cudart

        self._rt = cudart
        self._device = device
        self._check(cudart.cudaSetDevice(device))
        props = self._check(cudart.cudaGetDeviceProperties(device))
        self.device_name = props.name.decode(errors="replace").rstrip("\x00")
        self.compute_capability = f"{props.major}.{props.minor}"
        self.stream_handle = int(self._check(cudart.cudaStreamCreate()))
        self._hosts = []

    def _check(self, result):
        error, *values = result
        if int(error) != 0:
            raise ModelError(f"CUDA call failed: {self._rt.cudaGetErrorString(error)[1].decode()}.")
        return values[0] if len(values) == 1 else values

    def __enter__(self):
        self._check(self._rt.cudaSetDevice(self._device))
        return self

    def __exit__(self, *exc):
        return None

    def pinned(self, nbytes: int) -> np.ndarray:
        import ctypes

        address = self._check(self._rt.cudaMallocHost(max(nbytes, 1)))
        self._hosts.append(address)
        return np.ctypeslib.as_array((ctypes.c_uint8 * max(nbytes, 1)).from_address(int(address)))

    def device(self, nbytes: int) -> int:
        return int(self._check(self._rt.cudaMalloc(max(nbytes, 1))))

    def to_device(self, address: int, host: np.ndarray) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self._rt.cudaMemcpyAsync(address, host.ctypes.data, host.nbytes, kind, self.stream_handle))

    def to_host(self, host: np.ndarray, address: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self._rt.cudaMemcpyAsync(host.ctypes.data, address, host.nbytes, kind, self.stream_handle))

    def synchronize(self) -> None:
        self._check(self._rt.cudaStreamSynchronize(self.stream_handle))


def open_cuda(device: int = 0, prefer: str = "pycuda"):
    """pycuda where installed (the Jetson default), else cuda-python; ModelError when neither can open the GPU."""
    kinds = {"pycuda": _PycudaMemory, "cuda-python": _CudaPythonMemory}
    order = [prefer] + [k for k in kinds if k != prefer]
    problems = []
    for kind in order:
        try:
            return kinds[kind](device)
        except ImportError:
            problems.append(f"{kind} is not installed")
        except ModelError as e:
            problems.append(str(e).rstrip("."))
        except Exception as e:  # pycuda raises its own error types for "no driver" and "no device"
            problems.append(f"{kind}: {str(e).strip() or e.__class__.__name__}")
    raise ModelError(f"cannot use CUDA GPU {device} for TensorRT ({'; '.join(problems)}); install pycuda "
                     "(docs/jetson.md) or use backend: onnxruntime.")


# The backend ------------------------------------------------------------------------------------

class _Tensor:
    """One engine input or output: pinned host and device buffers sized once, for the profile's largest shape."""

    def __init__(self, dtype: np.dtype, cuda, nbytes: int):
        self.dtype = dtype
        self.host = cuda.pinned(nbytes)
        self.address = cuda.device(nbytes)

    def view(self, shape) -> np.ndarray:
        nbytes = int(np.prod(shape, dtype=np.int64)) * self.dtype.itemsize
        if nbytes > self.host.size:
            raise ModelError(f"a tensor of shape {tuple(shape)} does not fit the buffers sized for the engine's profile.")
        return self.host[:nbytes].view(self.dtype).reshape(shape)


class TensorRTBackend(Backend):
    """A TensorRT engine behind the `Backend` interface.

    `model` is an `.engine` file (verified against its sidecar), or an ONNX
    file/bytes, which is looked up in the engine cache (and built there only
    when `config.build_if_missing` is set) via `engines.resolve_engine`.
    """

    name = "tensorrt"

    def __init__(self, model: str | Path | bytes, *, config=None, model_name: str | None = None, device: int = 0,
                 cuda: str = "pycuda"):
        if isinstance(model, bytes) or not str(model).endswith(".engine"):
            from engines.cache import resolve_engine  # only when an ONNX model must be turned into an engine

            from ..config import AnonymizerConfig

            name = model_name or ("face" if isinstance(model, bytes) else Path(model).stem)  # bytes: CenterFace
            model = resolve_engine(model, config or AnonymizerConfig(), name)
        self.path = Path(model).expanduser()
        self.sidecar = read_verified_sidecar(self.path)
        self.metadata = dict(self.sidecar.get("metadata", {}))
        trt = import_tensorrt(self.sidecar.get("tensorrt_module"))
        built_with, running = self.sidecar.get("tensorrt_version"), tensorrt_version(trt)
        if built_with != running:
            raise ModelError(f"TensorRT engine {self.path.name} was built with {built_with} but this machine has {running}; "
                             "rebuild it here with `ros-anonymizer engines build`.")
        self._cuda = open_cuda(device, cuda)
        built_for = self.sidecar.get("compute_capability")
        if built_for != self._cuda.compute_capability:
            raise ModelError(f"TensorRT engine {self.path.name} was built for compute capability {built_for} but GPU {device} "
                             f"({self._cuda.device_name}) has {self._cuda.compute_capability}; rebuild it on this machine "
                             "with `ros-anonymizer engines build`.")
        self._lock = threading.Lock()
        with self._cuda:
            self._load(trt)

    def _load(self, trt) -> None:
        self._logger = trt.Logger(trt.Logger.ERROR)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            raise ModelError(f"TensorRT could not deserialize {self.path} on {self._cuda.device_name}; "
                             "rebuild it with `ros-anonymizer engines build`.")
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        is_input = {n: self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        dtypes = {n: np.dtype(trt.nptype(self._engine.get_tensor_dtype(n))) for n in names}
        self._profile = {n: [tuple(s) for s in self._engine.get_tensor_profile_shape(n, 0)] for n in names if is_input[n]}
        for name, (_, _, largest) in self._profile.items():
            self._context.set_input_shape(name, largest)
        largest_shapes = {n: tuple(self._context.get_tensor_shape(n)) for n in names}
        if any(min(shape, default=0) < 0 for shape in largest_shapes.values()):
            raise ModelError(f"TensorRT engine {self.path.name} has outputs whose size depends on the data; "
                             "export the model with fixed-size (top-K) outputs.")
        self._inputs, self._outputs = {}, {}
        for name, shape in largest_shapes.items():
            tensors = self._inputs if is_input[name] else self._outputs
            tensors[name] = _Tensor(dtypes[name], self._cuda, int(np.prod(shape, dtype=np.int64)) * dtypes[name].itemsize)
        self.inputs = [TensorSpec(n, tuple(self._engine.get_tensor_shape(n)), dtypes[n]) for n in self._inputs]
        self.outputs = [TensorSpec(n, tuple(self._engine.get_tensor_shape(n)), dtypes[n]) for n in self._outputs]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = set(self._inputs) - set(feeds)
        if missing:
            raise ModelError(f"TensorRT engine {self.path.name} needs input(s) {', '.join(sorted(missing))}.")
        limit = self._batch_limit()
        sizes = {len(feeds[name]) for name in self._inputs}
        if limit and len(sizes) == 1 and (count := sizes.pop()) > limit:  # e.g. more faces than the profile holds
            parts = [self._run_once({k: feeds[k][i:i + limit] for k in self._inputs}) for i in range(0, count, limit)]
            return {name: np.concatenate([part[name] for part in parts]) for name in self._outputs}
        return self._run_once(feeds)

    def _batch_limit(self) -> int | None:
        """The profile's largest batch when every input starts with the same dynamic batch dimension, else None."""
        ranges = [(low[0], high[0]) for low, _, high in self._profile.values() if low]
        highs = {high for _, high in ranges}
        if len(ranges) != len(self._inputs) or any(low == high for low, high in ranges) or len(highs) != 1:
            return None
        return highs.pop()

    def _run_once(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock, self._cuda:
            for name, tensor in self._inputs.items():
                array = np.ascontiguousarray(feeds[name], dtype=tensor.dtype)
                low, _, high = self._profile[name]
                if array.ndim != len(low) or any(not lo <= s <= hi for s, lo, hi in zip(array.shape, low, high)):
                    raise ModelError(f"input {name} of shape {array.shape} is outside the engine's profile "
                                     f"{low}..{high}; rebuild the engine with a larger profile.")
                if not self._context.set_input_shape(name, array.shape):
                    raise ModelError(f"TensorRT refused shape {array.shape} for input {name}.")
                tensor.view(array.shape)[...] = array
                self._cuda.to_device(tensor.address, tensor.view(array.shape))
                self._context.set_tensor_address(name, tensor.address)
            shapes = {}
            for name, tensor in self._outputs.items():
                shapes[name] = tuple(self._context.get_tensor_shape(name))
                self._context.set_tensor_address(name, tensor.address)
            if not self._context.execute_async_v3(self._cuda.stream_handle):
                raise ModelError(f"TensorRT engine {self.path.name} failed to run.")
            for name, tensor in self._outputs.items():
                self._cuda.to_host(tensor.view(shapes[name]), tensor.address)
            self._cuda.synchronize()
            return {name: tensor.view(shapes[name]).copy() for name, tensor in self._outputs.items()}
