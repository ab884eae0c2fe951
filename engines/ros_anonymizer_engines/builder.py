"""ONNX -> serialized TensorRT engine, with optimization profiles, precision, timing cache and DLA.

The same code drives standard TensorRT (Jetson, desktop GPUs) and
`tensorrt_rtx` (which builds on a machine without a GPU for a chosen compute
capability, how CI proves every model parses and builds). Where their APIs
differ, `_apply_precision` and `_apply_target` decide; everything else is the
shared TensorRT 8.6/10.x API.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import onnx

from ros_anonymizer.backends.base import ModelError
from ros_anonymizer.backends.engine_files import import_tensorrt, tensorrt_version

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_IMAGE_SIZES = ((32, 32), (480, 640), (1088, 1920))  # (H, W) min, opt, max of a camera image input


@dataclass(frozen=True)
class BuildOptions:
    """Everything that shapes an engine besides the ONNX model and the TensorRT version and device."""

    precision: str = "fp16"
    workspace_mb: int = 1024
    max_faces: int = 16  # the anonymizer's face batch profile is 1 .. max_faces
    batch: tuple | None = None  # (min, opt, max) of a dynamic first dimension; None: by model kind
    image_sizes: tuple = DEFAULT_IMAGE_SIZES
    dla_core: int | None = None
    compute_capability: str | None = None  # tensorrt_rtx only: build for this GPU generation, e.g. "8.9"

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ModelError(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}.")
        if self.max_faces < 1 or self.workspace_mb < 16:
            raise ModelError("max_faces must be at least 1 and the workspace at least 16 MB.")

    def to_dict(self) -> dict:
        return {k: (list(map(list, v)) if k == "image_sizes" else (list(v) if isinstance(v, tuple) else v))
                for k, v in asdict(self).items()}


@dataclass
class BuiltEngine:
    plan: bytes
    precision: str  # what was built; may be fp32 where the TensorRT module cannot do the requested one
    profiles: dict  # input name -> [min, opt, max] shapes
    inputs: list = field(default_factory=list)  # [{name, shape, dtype}]
    outputs: list = field(default_factory=list)
    seconds: float = 0.0
    warnings: list = field(default_factory=list)


def onnx_metadata(model_bytes: bytes) -> dict[str, str]:
    model = onnx.load_from_string(model_bytes)
    return {p.key: p.value for p in model.metadata_props}


def onnx_profiles(model_bytes: bytes, options: BuildOptions) -> dict:
    """The profiles `build_engine` will use, read from the ONNX graph (for calibration before a build)."""
    model = onnx.load_from_string(model_bytes)
    kind = {p.key: p.value for p in model.metadata_props}.get("model_kind", "")
    constants = {t.name for t in model.graph.initializer}
    profiles = {}
    for tensor in model.graph.input:
        if tensor.name in constants:
            continue
        shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.type.tensor_type.shape.dim)
        profiles[tensor.name] = [list(s) for s in profile_shapes(tensor.name, shape, kind, options)]
    return profiles


def profile_shapes(name: str, shape: tuple, model_kind: str, options: BuildOptions) -> list[tuple]:
    """min/opt/max for one network input: dynamic dim 0 is a batch, dynamic dims 2-3 of an NCHW input the image size."""
    if options.batch:
        batch = tuple(options.batch)
    elif model_kind == "anonymizer":
        batch = (1, min(4, options.max_faces), options.max_faces)
    else:
        batch = (1, 1, 1)
    shapes = [list(shape), list(shape), list(shape)]
    for axis, size in enumerate(shape):
        if size >= 0:
            continue
        if axis == 0:
            values = batch
        elif len(shape) == 4 and axis in (2, 3):
            values = tuple(hw[axis - 2] for hw in options.image_sizes)
        else:
            raise ModelError(f"input {name} has a dynamic dimension {axis} of {list(shape)} that the engine builder "
                             "cannot size; export the model with that dimension fixed.")
        for i in range(3):
            shapes[i][axis] = int(values[i])
    return [tuple(s) for s in shapes]


def build_engine(model_bytes: bytes, options: BuildOptions, *, trt=None, timing_cache: bytes | None = None,
                 calibrator=None) -> tuple[BuiltEngine, bytes | None]:
    """Parse and build; returns the engine and the updated timing cache. ModelError on any failure."""
    trt = trt or import_tensorrt()
    started = time.monotonic()
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    legacy = explicit is not None and int(trt.__version__.split(".")[0]) < 10  # TensorRT 8.6 needs explicit batch
    network = builder.create_network(1 << int(explicit) if legacy else 0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model_bytes):
        errors = "; ".join(str(parser.get_error(i)).strip() for i in range(min(parser.num_errors, 3)))
        raise ModelError(f"TensorRT ({tensorrt_version(trt)}) cannot parse the ONNX model: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
    kind = onnx_metadata(model_bytes).get("model_kind", "")
    profile = builder.create_optimization_profile()
    profiles = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        low, opt, high = profile_shapes(tensor.name, tuple(tensor.shape), kind, options)
        profile.set_shape(tensor.name, low, opt, high)
        profiles[tensor.name] = [list(low), list(opt), list(high)]
    config.add_optimization_profile(profile)
    warnings = []
    precision = _apply_precision(trt, config, options.precision, calibrator, profile, warnings)
    _apply_target(trt, builder, config, options)
    cache = None
    if trt.__name__ != "tensorrt_rtx":  # tensorrt_rtx compiles kernels at run time: its timing cache is a no-op
        cache = config.create_timing_cache(timing_cache or b"")
        config.set_timing_cache(cache, ignore_mismatch=True)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ModelError(f"TensorRT ({tensorrt_version(trt)}) failed to build an engine from the ONNX model "
                         f"(precision {precision}); TensorRT's own errors are printed above it.")
    inputs = [_describe(network.get_input(i)) for i in range(network.num_inputs)]
    outputs = [_describe(network.get_output(i)) for i in range(network.num_outputs)]
    built = BuiltEngine(bytes(plan), precision, profiles, inputs, outputs, time.monotonic() - started, warnings)
    return built, bytes(cache.serialize()) if cache is not None else None


def _describe(tensor) -> dict:
    return {"name": tensor.name, "shape": list(tensor.shape), "dtype": str(tensor.dtype).split(".")[-1]}


def _apply_precision(trt, config, precision: str, calibrator, profile, warnings: list) -> str:
    """Standard TensorRT: FP16/INT8 builder flags. tensorrt_rtx has none (precision follows the model): FP32."""
    flags = trt.BuilderFlag
    if precision == "fp32":
        return "fp32"
    if not hasattr(flags, "FP16"):
        warnings.append(f"{trt.__name__} has no {precision} builder flag; built in fp32 (the model's own precision).")
        return "fp32"
    config.set_flag(flags.FP16)
    if precision == "fp16":
        return "fp16"
    if calibrator is None:
        raise ModelError("int8 needs calibration data: pass --calibration-data with a folder of images, a video or a rosbag2.")
    config.set_flag(flags.INT8)
    config.int8_calibrator = calibrator
    config.set_calibration_profile(profile)
    return "int8"


def _apply_target(trt, builder, config, options: BuildOptions) -> None:
    """Which chip: the local GPU (standard TensorRT), a compute capability (tensorrt_rtx), or a DLA core (Jetson)."""
    if options.compute_capability:
        if not hasattr(trt, "ComputeCapability"):
            raise ModelError(f"{trt.__name__} builds only for the GPU it runs on; drop --compute-capability.")
        target = getattr(trt.ComputeCapability, "SM" + options.compute_capability.replace(".", ""), None)
        if target is None:
            known = [n[2:-1] + "." + n[-1] for n in dir(trt.ComputeCapability) if n.startswith("SM")]
            raise ModelError(f"{trt.__name__} cannot build for compute capability {options.compute_capability} "
                             f"(it knows {', '.join(sorted(known))}).")
        config.num_compute_capabilities = 1
        config.set_compute_capability(target, 0)
    if options.dla_core is not None:
        if options.precision == "fp32":
            raise ModelError("DLA cores run fp16 or int8 only; build with --precision fp16 (or int8) for --dla-core.")
        cores = getattr(builder, "num_DLA_cores", 0) if trt.__name__ != "tensorrt_rtx" else 0
        if not 0 <= options.dla_core < cores:
            raise ModelError(f"DLA core {options.dla_core} does not exist here ({cores} DLA cores); "
                             "DLA cores exist on Jetson AGX Orin and Orin NX only.")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = options.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
