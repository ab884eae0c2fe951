"""INT8 CenterFace recipes measured against the float model: verification agreement and CPU speed (issue 13).

For each named recipe (see RECIPES) the float CenterFace is statically
quantized (QDQ) on generated calibration frames, then measured the way the
runtime decides on it (`int8_detector.agreement`: the share of the float
model's faces on the 96 hard verification frames, seed 2, that it also finds)
and timed at 640x480 against the float model, interleaved frame by frame in one
process with the same thread count (wall and process CPU time per frame).

    .venv/bin/python scripts/int8_recipes.py [RECIPE ...] [--frames 20] [--threads 2] [--out out/int8_recipes]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ros_anonymizer import int8_detector as i8  # noqa: E402
from ros_anonymizer.backends import load_backend  # noqa: E402
from ros_anonymizer.faces import CenterFaceDetector, box_iou, centerface_input, centerface_onnx  # noqa: E402

# Node names as int8_detector.float_centerface_for_quantization gives them: "<op>_<first output>".
HEADS = ["Conv_536", "Sigmoid_537", "Conv_538", "Conv_539", "Conv_540"]
HEAD_TRUNK = ["Conv_533"]
FIRST = ["Conv_363"]
DECODER = ["Conv_509", "ConvTranspose_512", "BatchNormalization_513", "Conv_515", "Add_518", "ConvTranspose_519",
           "BatchNormalization_520", "Conv_522", "Add_525", "ConvTranspose_526", "BatchNormalization_527", "Conv_529",
           "Add_532"]

RECIPES = {
    "runtime": {"runtime": True},  # int8_detector.quantize_centerface as shipped, on its calibration frames
    "minmax": {},
    "ex-first": {"exclude": FIRST},
    "ex-heads": {"exclude": HEADS},
    "ex-heads+trunk": {"exclude": HEADS + HEAD_TRUNK},
    "ex-first+heads": {"exclude": FIRST + HEADS},
    "ex-first+heads+trunk": {"exclude": FIRST + HEADS + HEAD_TRUNK},
    "ex-decoder": {"exclude": DECODER},
    "ex-decoder+heads+trunk": {"exclude": DECODER + HEADS + HEAD_TRUNK},
    "ex-all-after-backbone": {"exclude": FIRST + DECODER + HEADS + HEAD_TRUNK},
    "percentile": {"method": "Percentile"},
    "entropy": {"method": "Entropy"},
    "minmax-hard-calib": {"calib": "mixed"},
    "minmax-96calib": {"calib": "more"},
    "act-symmetric": {"extra": {"ActivationSymmetric": True}},
    "reduce-range": {"reduce_range": True},
    # the half-resolution stem (first conv, first bottleneck, second bottleneck's expansion and strided depthwise) in float
    "float-stem": {"exclude": ["group:stage0", "group:stage1"]},
    "float-stem-percentile": {"exclude": ["group:stage0", "group:stage1"], "method": "Percentile"},
    "float-stage0-percentile": {"exclude": ["group:stage0"], "method": "Percentile"},
    "float-stem-entropy": {"exclude": ["group:stage0", "group:stage1"], "method": "Entropy"},
    "float-stem-hard-calib": {"exclude": ["group:stage0", "group:stage1"], "calib": "mixed"},
}


def node_groups() -> dict[str, list[str]]:
    """Names of CenterFace's node groups: its MobileNetV2 backbone's depthwise, expansion and projection convs, adds,
    and its stages (by the resolution they run at); used as `exclude` groups ("group:NAME")."""
    import onnx

    model = onnx.load_from_string(i8.float_centerface_for_quantization())
    weights = {i.name: list(i.dims) for i in model.graph.initializer}
    groups: dict[str, list[str]] = {"dw": [], "expand": [], "project": [], "add": [], "backbone": []}
    stage = 0
    channels = None
    for node in model.graph.node:
        if node.name == "Conv_509":
            break
        groups["backbone"].append(node.name)
        if node.op_type == "Add":
            groups["add"].append(node.name)
        if node.op_type != "Conv":
            continue
        shape = weights[node.input[1]]
        if shape[1] == 1 and shape[2] == 3:
            groups["dw"].append(node.name)
        elif shape[2] == 1 and shape[0] > shape[1]:
            groups["expand"].append(node.name)
        elif shape[2] == 1:
            groups["project"].append(node.name)
            if shape[0] != channels:
                stage, channels = stage + 1, shape[0]
        groups.setdefault(f"stage{stage}", []).append(node.name)
    for node in model.graph.node:  # each stage's adds and relus too
        for key in [k for k in groups if k.startswith("stage")]:
            if node.op_type in ("Relu", "Add") and any(node.input[0] in _outputs(model, n) for n in groups[key]):
                groups[key].append(node.name)
    return groups


def _outputs(model, name: str) -> list[str]:
    return [o for n in model.graph.node if n.name == name for o in n.output]


def excluded(recipe: dict) -> list[str]:
    names = []
    for item in recipe.get("exclude", []):
        names += node_groups()[item[6:]] if item.startswith("group:") else [item]
    return sorted(set(names))


def calibration_frames(kind: str) -> list[np.ndarray]:
    if kind == "plain":
        return i8.synthetic_frames(i8.CALIBRATION_FRAMES, seed=1)
    if kind == "more":
        return i8.synthetic_frames(96, seed=1)
    if kind == "mixed":  # plain and hard frames, seeds other than the verification's 2
        return i8.synthetic_frames(32, seed=1) + i8.synthetic_frames(32, seed=3, hard=True)
    raise ValueError(kind)


def quantize(recipe: dict, output: Path, cache: Path) -> Path:
    if recipe.get("runtime"):
        blobs = [centerface_input(f, 1.0)[0] for f in i8.synthetic_frames(i8.CALIBRATION_FRAMES, seed=1)]
        return i8.quantize_centerface(blobs, output, {})
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    method = getattr(CalibrationMethod, recipe.get("method", "MinMax"))
    calib = recipe.get("calib", "plain")
    blobs = [centerface_input(f, 1.0)[0] for f in calibration_frames(calib)]

    class Blobs(CalibrationDataReader):
        def __init__(self):
            self._feeds = iter({"input.1": b} for b in blobs)

        def get_next(self):
            return next(self._feeds, None)

    model = onnx.load_from_string(i8.float_centerface_for_quantization())
    names = {n.name for n in model.graph.node}
    missing = set(excluded(recipe)) - names
    if missing:
        raise SystemExit(f"no such nodes: {sorted(missing)}")
    with tempfile.TemporaryDirectory() as tmp:
        float_path = Path(tmp) / "f.onnx"
        onnx.save(model, str(float_path))
        extra = dict(recipe.get("extra", {}))
        calib_cache = cache / f"calib-{method.name}-{calib}-{json.dumps(extra, sort_keys=True)}.json"
        logging.getLogger().setLevel(logging.ERROR)
        quantize_static(str(float_path), str(output), Blobs(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=method,
                        nodes_to_exclude=excluded(recipe), reduce_range=recipe.get("reduce_range", False),
                        extra_options=extra or None, calibration_cache_path=str(calib_cache))
    return output


def retention(reference_faces: list, candidate: CenterFaceDetector, frames: list[np.ndarray]) -> tuple[float, float]:
    """Mean and minimum, over the float model's faces, of the candidate's score at that face (IoU >= MATCH_IOU) / float's."""
    kept = []
    for faces, frame in zip(reference_faces, frames):
        got = candidate.detect([frame], 0.01)[0]
        for box, score in zip(faces.boxes, faces.scores):
            iou = box_iou(box[None], got.boxes)[0] if len(got) else np.zeros(0)
            match = iou >= i8.MATCH_IOU
            kept.append(min(1.0, float(got.scores[match].max()) / float(score)) if match.any() else 0.0)
    return float(np.mean(kept)), float(np.min(kept))


def timing(detectors: dict[str, CenterFaceDetector], frames: list[np.ndarray]) -> dict[str, dict[str, float]]:
    """ms of wall and process CPU time per 640x480 frame, detectors interleaved frame by frame (after a warm-up)."""
    for d in detectors.values():
        d.detect([frames[0]])
    wall = {k: [] for k in detectors}
    cpu = {k: [] for k in detectors}
    for frame in frames:
        for key, d in detectors.items():
            w, c = time.perf_counter(), time.process_time()
            d.detect([frame])
            cpu[key].append(time.process_time() - c)
            wall[key].append(time.perf_counter() - w)
    return {k: {"wall_ms": 1000 * float(np.median(wall[k])), "cpu_ms": 1000 * float(np.median(cpu[k]))} for k in detectors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="*", default=list(RECIPES))
    parser.add_argument("--frames", type=int, default=20, help="640x480 frames timed per detector (0: no timing)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--holdout", type=lambda s: [int(x) for x in s.split(",")], default=[],
                        help="comma-separated seeds of other hard frame sets (96 each) to measure agreement on too (not the gate's seed 2)")
    parser.add_argument("--out", type=Path, default=REPO / "out" / "int8_recipes")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    float_backend = load_backend(centerface_onnx(), "onnxruntime", use_gpu=False, threads=args.threads)
    reference = CenterFaceDetector(float_backend)
    verify = i8.synthetic_frames(i8.VERIFICATION_FRAMES, seed=2, hard=True)
    reference_faces = [reference.detect([f], i8.VERIFY_SCORE)[0] for f in verify]
    timed = i8.synthetic_frames(args.frames, seed=7, size=(640, 480)) if args.frames else []
    print(f"{len(os.sched_getaffinity(0))} cores, load {os.getloadavg()[0]:.1f}, threads {args.threads}", flush=True)
    for name in args.recipes:
        recipe = RECIPES[name] if name in RECIPES else {"exclude": name.split("+")}  # e.g. group:dw+Conv_363
        path = args.out / f"{name.replace(':', '-')}.onnx"
        start = time.perf_counter()
        if not path.exists():
            quantize(recipe, path, args.out)
        made = time.perf_counter() - start
        detector = CenterFaceDetector(load_backend(path, "onnxruntime", use_gpu=False, threads=args.threads))
        share, faces = i8.agreement(reference, detector, verify)
        row = {"recipe": name, "agreement": round(share, 4), "faces": faces, "passes": share >= i8.MIN_AGREEMENT,
               "made_s": round(made, 1)}
        row["score_kept_mean"], row["score_kept_min"] = (round(v, 3) for v in retention(reference_faces, detector, verify))
        for seed in args.holdout:
            share, faces = i8.agreement(reference, detector, i8.synthetic_frames(i8.VERIFICATION_FRAMES, seed=seed, hard=True))
            row[f"holdout{seed}"] = f"{share:.4f} of {faces}"
        if timed:
            t = timing({"float": reference, "int8": detector}, timed)
            row.update(float_wall_ms=round(t["float"]["wall_ms"], 1), int8_wall_ms=round(t["int8"]["wall_ms"], 1),
                       speedup=round(t["float"]["wall_ms"] / t["int8"]["wall_ms"], 2),
                       cpu_speedup=round(t["float"]["cpu_ms"] / t["int8"]["cpu_ms"], 2))
        row["load"] = round(os.getloadavg()[0], 1)
        print(json.dumps(row), flush=True)
        with open(args.out / "results.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
