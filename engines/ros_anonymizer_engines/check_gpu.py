"""GPU check: build the engines here, run the pipeline's models through TensorRT on real frames, compare with
ONNX Runtime, and time both. Run by engines/check_gpu.sh on a machine with a GPU and TensorRT (a Jetson).

Tolerance (stated, checked): relative error ||trt - ort|| / ||ort|| of every output at most 2e-3 for fp32
engines (TensorRT may use TF32) and 2e-2 for fp16; the face detector must find the same faces (boxes within
2 px + 2% of their size). Results go to `<out>/gpu_check.json`; the last lines printed are a summary table.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from ros_anonymizer.backends import load_backend
from ros_anonymizer.backends.base import ModelError
from ros_anonymizer.backends.engine_files import import_tensorrt, tensorrt_version
from ros_anonymizer.backends.tensorrt_backend import TensorRTBackend, open_cuda

from .builder import BuildOptions
from .cache import build_cached
from .calibration import face_crops, read_frames

TOLERANCE = {"fp32": 2e-3, "fp16": 2e-2, "int8": 1e-1}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", nargs="+", type=Path, required=True, help="videos, image folders or rosbag2 folders")
    parser.add_argument("--out", type=Path, default=Path("out/gpu_check"))
    parser.add_argument("--cache-dir", type=Path, default=Path("out/gpu_check/engines"))
    parser.add_argument("--precision", default="fp16", choices=tuple(TOLERANCE))
    parser.add_argument("--anonymizer", type=Path, help="anonymizer ONNX (default: the bundled one, if any)")
    parser.add_argument("--action", type=Path, help="action detector ONNX (default: the bundled one, if any)")
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--cuda", default="pycuda", choices=("pycuda", "cuda-python"), help="CUDA layer of the TensorRT backend")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"host": platform.node(), "python": sys.version.split()[0], "checks": [], "timings": {}}
    trt = import_tensorrt()
    report["tensorrt"] = tensorrt_version(trt)
    report["cuda_layers"] = check_cuda_layers()
    cuda = open_cuda(prefer=args.cuda)
    report["gpu"] = f"{cuda.device_name} (compute capability {cuda.compute_capability})"
    print(f"GPU {report['gpu']}, {report['tensorrt']}, CUDA via {cuda.name}", flush=True)

    frames = [f for source in args.frames for f in read_frames(source, limit=40)]
    models = select_models(args)
    options = BuildOptions(precision=args.precision, image_sizes=((32, 32), (480, 640), (1088, 1920)))
    engines = {}
    for name, onnx_model in models.items():
        engines[name] = stage(report, f"build {name}", build_twice, report, onnx_model, name, args.cache_dir, options)
    stages = [("face", compare_face_detector), ("anonymizer", compare_anonymizer), ("action", compare_plain)]
    for name, compare in stages:
        if engines.get(name):
            stage(report, f"compare {name}", compare, report, name, models[name], engines[name], frames, args)
    if engines.get("face"):
        stage(report, "pipeline", time_pipeline, report, {k: v for k, v in engines.items() if v}, models, frames, args)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    print_summary(report)
    return 0 if all(c["ok"] for c in report["checks"]) else 1


def stage(report, title: str, function, *args):
    """Run one step; a failure is recorded as a failed check (with TensorRT's message), and the check goes on."""
    try:
        return function(*args)
    except Exception as e:
        report["checks"].append({"check": title, "ok": False, "error": f"{type(e).__name__}: {e}"})
        print(f"FAILED {title}: {type(e).__name__}: {e}", flush=True)
        return None


def build_twice(report, onnx_model, name: str, cache_dir: Path, options: BuildOptions) -> Path:
    """Build into the cache, then ask again: the second request must reuse the engine."""
    path, built = build_cached(onnx_model, name, cache_dir, options)
    _, rebuilt = build_cached(onnx_model, name, cache_dir, options)
    side = json.loads(Path(str(path) + ".json").read_text())
    print(f"built {name}: {side['precision']} in {side['build_seconds']} s, {side['engine_bytes'] / 1e6:.1f} MB", flush=True)
    report["checks"].append({"check": f"build {name}", "ok": built and not rebuilt, "build_seconds": side["build_seconds"],
                             "precision": side["precision"], "engine_mb": round(side["engine_bytes"] / 1e6, 1),
                             "second_request_reused": not rebuilt})
    return path


def check_cuda_layers() -> dict:
    """Each installed CUDA layer copies 8 MB through pinned memory to the GPU and back unchanged."""
    result = {}
    data = np.random.default_rng(1).integers(0, 255, 8 << 20, dtype=np.uint8)
    for layer in ("pycuda", "cuda-python"):
        try:
            cuda = open_cuda(prefer=layer)
            if cuda.name != layer:
                result[layer] = "not installed"
                continue
            with cuda:
                host, back, address = cuda.pinned(data.nbytes), cuda.pinned(data.nbytes), cuda.device(data.nbytes)
                host[:] = data
                started = time.perf_counter()
                cuda.to_device(address, host)
                cuda.to_host(back, address)
                cuda.synchronize()
                seconds = time.perf_counter() - started
            result[layer] = f"round trip ok, {2 * data.nbytes / seconds / 1e9:.1f} GB/s" if np.array_equal(back, data) else "DATA MISMATCH"
        except ModelError as e:
            result[layer] = f"unavailable: {e}"
    print(f"CUDA layers: {result}", flush=True)
    return result


def select_models(args) -> dict:
    from ros_anonymizer.actions import BUNDLED_MODEL
    from ros_anonymizer.faces import centerface_onnx
    from ros_anonymizer.filters import BUNDLED_ANONYMIZER, bundled_model

    models = {"face": centerface_onnx()}
    anonymizer = args.anonymizer or bundled_model(BUNDLED_ANONYMIZER)
    action = args.action or bundled_model(BUNDLED_MODEL)
    if anonymizer:
        models["anonymizer"] = Path(anonymizer)
    if action:
        models["action"] = Path(action)
    return models


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.linalg.norm((ours - reference).ravel()) / max(np.linalg.norm(reference.ravel()), 1e-12))


def latency(run, iterations: int) -> dict:
    for _ in range(5):
        run()
    times = []
    for _ in range(iterations):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    median = float(np.median(times))
    return {"median_ms": round(median, 3), "p95_ms": round(float(np.percentile(times, 95)), 3), "fps": round(1000 / median, 1)}


def _compare(report, name: str, trt_backend, ort_backend, feeds_list, precision: str) -> None:
    worst = 0.0
    for feeds in feeds_list:
        ours, reference = trt_backend.run(feeds), ort_backend.run(feeds)
        worst = max([worst] + [relative_error(ours[k], reference[k]) for k in reference])
    report["checks"].append({"check": f"{name} TensorRT vs ONNX Runtime", "ok": worst <= TOLERANCE[precision],
                             "max_relative_error": worst, "tolerance": TOLERANCE[precision], "inputs": len(feeds_list)})


def _time(report, name: str, trt_backend, ort_backend, feeds, iterations: int) -> None:
    report["timings"][name] = {"tensorrt": latency(lambda: trt_backend.run(feeds), iterations),
                               f"onnxruntime ({'+'.join(ort_backend.providers)})": latency(lambda: ort_backend.run(feeds), max(10, iterations // 10)),
                               "input": {k: list(v.shape) for k, v in feeds.items()}}
    print(f"timed {name}: {report['timings'][name]}", flush=True)


def _precision(engine: Path) -> str:
    return json.loads(Path(str(engine) + ".json").read_text())["precision"]


def compare_face_detector(report, name: str, onnx_model, engine: Path, frames, args) -> None:
    from ros_anonymizer.faces import CENTERFACE_INPUT, CenterFaceDetector

    trt_backend, ort_backend = TensorRTBackend(engine, cuda=args.cuda), load_backend(onnx_model, "onnxruntime")
    feeds = [{CENTERFACE_INPUT: _blob(f)} for f in frames[::4]]
    _compare(report, "face detector", trt_backend, ort_backend, feeds, _precision(engine))
    same = True
    for frame in frames:
        ours, reference = CenterFaceDetector(trt_backend)(frame), CenterFaceDetector(ort_backend)(frame)
        if len(ours) != len(reference):
            same = False
            continue
        size = (reference.boxes[:, 2:] - reference.boxes[:, :2]).max(1, initial=0)[:, None] if len(reference) else 0
        same &= bool(np.all(np.abs(np.sort(ours.boxes, 0) - np.sort(reference.boxes, 0)) <= 2 + 0.02 * size))
    report["checks"].append({"check": "face detector finds the same faces", "ok": same, "frames": len(frames)})
    for frame in (frames[0], max(frames, key=lambda f: f.size)):
        _time(report, f"face detector {frame.shape[1]}x{frame.shape[0]}", trt_backend, ort_backend,
              {CENTERFACE_INPUT: _blob(frame)}, args.iterations)


def _blob(rgb: np.ndarray) -> np.ndarray:
    """CenterFace's input at full detection scale: raw pixels, padded to a multiple of 32 (as the detector does)."""
    h, w = rgb.shape[:2]
    blob = np.zeros((1, 3, -(-h // 32) * 32, -(-w // 32) * 32), np.float32)
    blob[0, :, :h, :w] = rgb.transpose(2, 0, 1)
    return blob


def compare_anonymizer(report, name: str, onnx_model, engine: Path, frames, args) -> None:
    from ros_anonymizer.filters import ANONYMIZER_LANDMARKS, anonymizer_feeds

    trt_backend, ort_backend = TensorRTBackend(engine, cuda=args.cuda), load_backend(onnx_model, "onnxruntime")
    meta = trt_backend.metadata
    crops, landmarks = face_crops(frames, int(meta["crop_size"]), float(meta["box_enlarge"]))
    takes_landmarks = any(spec.name == ANONYMIZER_LANDMARKS for spec in ort_backend.inputs)
    inputs = anonymizer_feeds(crops, json.loads(meta["value_range"]), landmarks if takes_landmarks else None)
    first = lambda n: {k: v[:n] for k, v in inputs.items()}
    counts = [n for n in (1, 4, 16, 20) if n <= len(crops)]  # 20 > the profile's 16: run in two batches
    _compare(report, "anonymizer", trt_backend, ort_backend, [first(n) for n in counts], _precision(engine))
    for n in (1, 8):
        if n <= len(crops):
            _time(report, f"anonymizer {n} faces", trt_backend, ort_backend, first(n), args.iterations)


def compare_plain(report, name: str, onnx_model, engine: Path, frames, args) -> None:
    from ros_anonymizer.actions import preprocess

    trt_backend, ort_backend = TensorRTBackend(engine, cuda=args.cuda), load_backend(onnx_model, "onnxruntime")
    feeds = [{trt_backend.inputs[0].name: preprocess(f, trt_backend.metadata)[0]} for f in frames[::4]]
    _compare(report, name, trt_backend, ort_backend, feeds, _precision(engine))
    _time(report, name, trt_backend, ort_backend, feeds[0], args.iterations)


def time_pipeline(report, engines: dict, models: dict, frames, args) -> None:
    """The whole frame path (detect, track, filter, actions) with TensorRT engines against the same with ONNX."""
    from ros_anonymizer.config import AnonymizerConfig
    from ros_anonymizer.pipeline import Pipeline

    def config(kind: str) -> AnonymizerConfig:
        face = str(engines["face"]) if kind == "trt" else ""
        values = {"face_model": face, "frame_deadline_ms": 0.0, "persist_frames": 0}
        if "anonymizer" in engines:
            values.update(filter="learned", anonymizer_model=str(engines["anonymizer"] if kind == "trt" else models["anonymizer"]))
        if "action" in engines:
            values["action_model"] = str(engines["action"] if kind == "trt" else models["action"])
        return AnonymizerConfig(**values)

    results = {}
    for kind in ("trt", "onnx"):
        pipeline = Pipeline(config(kind))
        outputs, times = [], []
        for frame in frames:
            result = pipeline.process(frame)
            if result.image is None:
                raise ModelError(f"the {kind} pipeline dropped a frame: {result.error}")
            outputs.append(result.image)
            times.append(result.timings_ms)
        totals = [t["total"] for t in times[3:]]
        results[kind] = outputs
        report["timings"][f"pipeline ({kind})"] = {
            "frames": len(frames), "median_ms": round(float(np.median(totals)), 2), "p95_ms": round(float(np.percentile(totals, 95)), 2),
            "fps": round(1000 / float(np.median(totals)), 1),
            "stages_median_ms": {k: round(float(np.median([t[k] for t in times[3:]])), 2) for k in times[0]}}
        print(f"pipeline {kind}: {report['timings'][f'pipeline ({kind})']}", flush=True)
    differing = [float(np.mean(np.abs(a.astype(int) - b.astype(int)) > 8)) for a, b in zip(results["trt"], results["onnx"])]
    report["checks"].append({"check": "pipeline images TensorRT vs ONNX", "ok": max(differing) < 0.01,
                             "max_fraction_of_pixels_off_by_more_than_8": max(differing)})


def print_summary(report: dict) -> None:
    print(f"\n== GPU check: {report['gpu']}, {report['tensorrt']}")
    for check in report["checks"]:
        details = {k: v for k, v in check.items() if k not in ("check", "ok")}
        print(f"{'PASS' if check['ok'] else 'FAIL'}  {check['check']}  {details}")
    for name, timing in report["timings"].items():
        print(f"time  {name}: {timing}")


if __name__ == "__main__":
    sys.exit(main())
