"""`ros-anonymizer engines build|check|list|quantize`: make, verify and show the engines a robot runs."""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from ros_anonymizer.backends.base import ModelError
from ros_anonymizer.errors import UserError
from ros_anonymizer.config import AnonymizerConfig

from .builder import PRECISIONS, BuildOptions, onnx_profiles
from ros_anonymizer.backends.engine_files import list_engines, model_bytes, read_verified_sidecar

from .cache import build_cached

MODELS = ("face", "anonymizer", "action")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = sub.add_parser("build", help="build (or reuse) engines for the face detector, anonymizer and action detector")
    build.add_argument("--config", type=Path, help="parameter file (config/anonymizer.yaml); its models, precision and cache are used")
    build.add_argument("--model", action="append", metavar="MODEL",
                       help="face, anonymizer, action or an .onnx file (repeatable; default: every model the install has)")
    build.add_argument("--name", help="cache name for a single --model given as a file (default: the file's stem)")
    build.add_argument("--precision", choices=PRECISIONS, help="engine precision (default: trt_precision from the config)")
    build.add_argument("--cache-dir", help="engine cache folder (default: engine_cache_dir from the config)")
    build.add_argument("--max-faces", type=int, help="largest anonymizer face batch (default: trt_max_faces from the config)")
    build.add_argument("--max-image", default="1088x1920", metavar="HxW", help="largest camera image the face detector accepts")
    build.add_argument("--opt-image", default="480x640", metavar="HxW", help="the image size TensorRT tunes for")
    build.add_argument("--workspace-mb", type=int, default=1024, help="TensorRT builder workspace limit")
    build.add_argument("--dla-core", type=int, help="build for this DLA core (Jetson AGX/NX Orin), GPU fallback on")
    build.add_argument("--calibration-data", type=Path, help="int8: folder of images, video or rosbag2 with real frames")
    build.add_argument("--calibration-frames", type=int, default=64, help="int8: frames taken from the calibration data")
    build.add_argument("--compute-capability", help="tensorrt_rtx only: build without a GPU for this compute capability (e.g. 8.9)")
    build.add_argument("--force", action="store_true", help="rebuild even when a valid engine is cached")
    check = sub.add_parser("check", help="verify engines against their sidecars (hash, TensorRT version) and show them")
    check.add_argument("engines", nargs="+", type=Path)
    listing = sub.add_parser("list", help="list the engine cache and whether each engine verifies")
    listing.add_argument("--cache-dir", default=AnonymizerConfig().engine_cache_dir)
    quantize = sub.add_parser("quantize", help="INT8 CenterFace for CPUs without a GPU (ONNX Runtime), about 3x faster")
    quantize.add_argument("calibration_data", type=Path, help="folder of images, video or rosbag2 with real frames from the camera")
    quantize.add_argument("output", type=Path, help="the INT8 .onnx to write; set face_model to it")
    quantize.add_argument("--frames", type=int, default=64, help="frames taken from the calibration data")
    quantize.add_argument("--detection-scale", type=float, default=1.0, help="the detection_scale the robot will use")


def run(args: argparse.Namespace) -> int:
    return {"build": run_build, "check": run_check, "list": run_list, "quantize": run_quantize}[args.action](args)


def run_quantize(args) -> int:
    from .cpu_int8 import quantize_face_detector

    if not args.calibration_data.exists():
        raise UserError(f"calibration data {args.calibration_data} does not exist.")
    path = quantize_face_detector(args.calibration_data, args.output, frames=args.frames, detection_scale=args.detection_scale)
    print(f"wrote {path}; use it with: --set face_model={path}  (or face_model: {path} in config/anonymizer.yaml)")
    return 0


def run_build(args) -> int:
    config = AnonymizerConfig.from_yaml(args.config) if args.config else AnonymizerConfig()
    options = BuildOptions(precision=args.precision or config.trt_precision, workspace_mb=args.workspace_mb,
                           max_faces=args.max_faces or config.trt_max_faces,
                           image_sizes=((32, 32), _size(args.opt_image), _size(args.max_image)),
                           dla_core=args.dla_core, compute_capability=args.compute_capability)
    if options.precision == "int8" and not args.calibration_data:
        raise UserError("int8 engines need --calibration-data (a folder of images, a video or a rosbag2 with real frames).")
    cache_dir = args.cache_dir or config.engine_cache_dir
    models = [model_source(m, config) for m in (args.model or default_models(config))]
    if args.name and len(models) != 1:
        raise UserError("--name names one model; give a single --model with it.")
    for name, model in models:
        name = args.name or name
        factory = _calibrator_factory(model, name, cache_dir, options, args) if options.precision == "int8" else None
        path, built = build_cached(model, name, cache_dir, options, force=args.force, calibrator_factory=factory)
        side = json.loads(Path(str(path) + ".json").read_text())
        state = f"built in {side['build_seconds']} s" if built else "cached, reused"
        print(f"{name}: {path} ({side['precision']}, {side['tensorrt_version']}, {side['device']}; {state})")
        if side["precision"] != side["requested_precision"]:
            print(f"  note: {side['tensorrt_module']} cannot build {side['requested_precision']}; the engine is {side['precision']}.")
    return 0


def run_check(args) -> int:
    failed = 0
    for path in args.engines:
        try:
            side = read_verified_sidecar(path)
        except ModelError as e:
            print(f"{path}: REFUSED: {e}")
            failed += 1
            continue
        print(f"{path}: ok: {describe(side)}")
    if failed:
        raise UserError(f"{failed} of {len(args.engines)} engine(s) failed verification; rebuild them with `ros-anonymizer engines build`.")
    return 0


def run_list(args) -> int:
    entries = list_engines(args.cache_dir)
    if not entries:
        print(f"no engines in {Path(args.cache_dir).expanduser()}")
    for path, side, problem in entries:
        print(f"{path.name}: {describe(side) if side else 'REFUSED: ' + problem}")
    return 0


def describe(side: dict) -> str:
    profiles = ", ".join(f"{n} {low}..{high}" for n, (low, _, high) in side["profiles"].items())
    return (f"{side['name']} {side['precision']} {side['tensorrt_version']} for {side['device']} "
            f"(sm {side['compute_capability']}), {side['engine_bytes'] / 1e6:.1f} MB, profiles {profiles}, built {side['built_at']}")


def default_models(config: AnonymizerConfig) -> list[str]:
    """The face detector always; the anonymizer and action detector when the config or the install has them."""
    from ros_anonymizer.actions import BUNDLED_MODEL
    from ros_anonymizer.filters import BUNDLED_ANONYMIZER, bundled_model

    models = ["face"]
    if config.anonymizer_model.endswith(".onnx") or (not config.anonymizer_model and bundled_model(BUNDLED_ANONYMIZER)):
        models.append("anonymizer")
    if config.action_model.endswith(".onnx") or (config.action_model == "default" and bundled_model(BUNDLED_MODEL)):
        models.append("action")
    return models


def model_source(model: str, config: AnonymizerConfig) -> tuple[str, str | Path | bytes]:
    """(cache name, ONNX path or bytes) for a --model value."""
    from ros_anonymizer.actions import BUNDLED_MODEL
    from ros_anonymizer.faces import centerface_onnx
    from ros_anonymizer.filters import BUNDLED_ANONYMIZER, bundled_model

    if model == "face":
        return "face", (config.face_model if config.face_model.endswith(".onnx") else centerface_onnx())
    if model in ("anonymizer", "action"):
        configured = config.anonymizer_model if model == "anonymizer" else config.action_model
        path = Path(configured) if configured.endswith(".onnx") else bundled_model(
            BUNDLED_ANONYMIZER if model == "anonymizer" else BUNDLED_MODEL)
        if path is None:
            raise UserError(f"there is no {model} model to build: set it in the config or pass its .onnx file to --model.")
        return model, path
    path = Path(model).expanduser()
    if path.suffix != ".onnx" or not path.is_file():
        raise UserError(f"--model {model}: expected face, anonymizer, action or an existing .onnx file.")
    return path.stem, path


def _size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"image size {text!r} must be HEIGHTxWIDTH, e.g. 480x640.") from None
    if height < 32 or width < 32:
        raise UserError(f"image size {text!r} must be at least 32x32.")
    return -(-height // 32) * 32, -(-width // 32) * 32


def _calibrator_factory(model, name: str, cache_dir: str, options: BuildOptions, args):
    """Reads the calibration frames only when an INT8 build actually happens."""
    from .builder import onnx_metadata
    from .calibration import calibration_batches, entropy_calibrator, read_frames

    def factory(trt):
        onnx, _ = model_bytes(model)
        frames = read_frames(args.calibration_data, args.calibration_frames)
        batches = calibration_batches(frames, onnx_metadata(onnx), onnx_profiles(onnx, options))
        cache = Path(cache_dir).expanduser() / f"{name}-{hashlib.sha256(onnx).hexdigest()[:16]}-int8.calib"
        return entropy_calibrator(trt, batches, cache)

    return factory
