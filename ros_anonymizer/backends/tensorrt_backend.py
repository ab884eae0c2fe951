"""TensorRT backend: serialized engines run with CUDA device memory, one stream, pinned host buffers.

Runtime code (no torch). `tensorrt` (JetPack, desktop) or `tensorrt_rtx` and
`pycuda` (or NVIDIA's `cuda-python` where pycuda is missing) are imported
lazily, so robots without a GPU never need them. Every engine comes with a
sidecar `<engine>.json` (format in `engine_files`): it names the ONNX model,
the TensorRT version and device the engine was built for, the engine's SHA-256
and the ONNX metadata_props. An engine whose bytes or sidecar do not match is
refused (fail closed): a wrong engine must never run on a robot.
"""
from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np

from .base import Backend, ModelError, TensorSpec
from .engine_files import (Target, build_command, engine_path, find_cached_engine, import_tensorrt, model_bytes,
                           read_verified_sidecar, tensorrt_version)

ENGINE_BUILDERS = "ros_anonymizer.engine_builders"  # entry-point group; the ros-anonymizer-engines distribution registers one

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


# Finding (or having built) the engine for an ONNX model ---------------------------------------

def detect_target(compute_capability: str | None = None, device: int = 0) -> Target:
    """The local GPU, or a named compute capability when building with tensorrt_rtx without one."""
    if compute_capability:
        return Target("any GPU", compute_capability)
    cuda = open_cuda(device)
    return Target(cuda.device_name, cuda.compute_capability)


def resolve_engine(model: str | Path | bytes, config, name: str, *, compute_capability: str | None = None) -> Path:
    """The verified cached engine for this ONNX model on this machine; never rebuilds an existing valid one.

    Missing or invalid engines are built only with `config.build_if_missing`, by the engine builder that the
    ros-anonymizer-engines distribution registers; otherwise ModelError names the exact
    `ros-anonymizer engines build ...` command to run.
    """
    trt = import_tensorrt()
    onnx, _ = model_bytes(model)
    target = detect_target(compute_capability)
    path = engine_path(config.engine_cache_dir, name, hashlib.sha256(onnx).hexdigest(), tensorrt_version(trt),
                       target, config.trt_precision)
    found, problem = find_cached_engine(path, name)
    if found:
        return found
    why = (problem or f"no TensorRT engine for {name} ({tensorrt_version(trt)}, {target.device}, {config.trt_precision}) "
           f"in {path.parent}").rstrip(".")
    build = f"Build it with: {build_command(model, name, config)}"
    if not config.build_if_missing:
        raise ModelError(f"{why}. {build} (or set build_if_missing: true to build at start-up).")
    builder = engine_builder()
    if builder is None:
        raise ModelError(f"{why}, and build_if_missing needs the engine builder, which is not installed here "
                         f"(pip install ros-anonymizer-engines, from engines/). {build}.")
    return builder(model, name, config, compute_capability=compute_capability, trt=trt)


def engine_builder():
    """`build(model, name, config, *, compute_capability, trt) -> Path` registered by ros-anonymizer-engines, or None."""
    from importlib.metadata import entry_points

    for entry in entry_points(group=ENGINE_BUILDERS, name="tensorrt"):
        return entry.load()
    return None


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
    when `config.build_if_missing` is set) via `resolve_engine`.
    """

    name = "tensorrt"

    def __init__(self, model: str | Path | bytes, *, config=None, model_name: str | None = None, device: int = 0,
                 cuda: str = "pycuda"):
        if isinstance(model, bytes) or not str(model).endswith(".engine"):
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

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
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
