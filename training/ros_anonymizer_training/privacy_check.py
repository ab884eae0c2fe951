"""Privacy and naturalness of an anonymizer on hold-out LFW people, judged by models nobody here trained.

    python -m ros_anonymizer_training.privacy_check --config edge --models runs/edge/anonymizer_edge.onnx --images 200

For each hold-out image (identities the trainer never saw): the runtime's
CenterFace finds the face, the runtime's filter anonymizes the frame, then
- dlib's ResNet (the attacker) embeds the anonymized face at the original
  face's location and alignment; a distance below 0.6 to the original's
  embedding is a match (re-identified);
- a reference CenterFace (score 0.5) must still find a face there (the
  output still looks like a face).
Blur and mosaic run at the runtime's default settings for comparison.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .config import TrainConfig
from ros_anonymizer.media import read_image

from .data.faces import scan_identities, split_identities


def holdout_images(cfg: TrainConfig, count: int) -> list[Path]:
    """Up to `count` hold-out images, one per person first, in a seeded order."""
    _, holdout = split_identities(scan_identities(cfg.faces_root), cfg)
    rounds = max(len(p) for p in holdout.values())
    ordered = [paths[i] for i in range(rounds) for paths in holdout.values() if i < len(paths)]
    return [Path(cfg.faces_root) / p for p in ordered[:count]]


def measure(methods: dict, images: list[Path]) -> dict:
    from ros_anonymizer.config import AnonymizerConfig
    from ros_anonymizer_evaluation.naturalness import face_still_found, main_face, reference_detector
    from ros_anonymizer_evaluation.recognizer import DISTANCE_THRESHOLD, FaceRecognizer
    from ros_anonymizer.faces import load_face_detector
    from ros_anonymizer.filters import apply_filter

    runtime_detector = load_face_detector(AnonymizerConfig(use_gpu=False))
    reference = reference_detector()
    recognizer = FaceRecognizer()
    counts = {name: {"faces": 0, "matched": 0, "matched_dlib_detector": 0, "face_found": 0, "distance": []} for name in methods}
    for path in tqdm(images, desc="privacy check", unit="img"):
        rgb = read_image(path)
        original = recognizer.describe(rgb)
        ref_box = main_face(reference(rgb), rgb.shape)
        if original is None or ref_box is None:
            continue
        boxes = runtime_detector(rgb).boxes
        for name, (config, learned) in methods.items():
            out, _ = apply_filter(rgb, boxes, config, learned)
            c = counts[name]
            c["faces"] += 1
            distance = float(np.linalg.norm(recognizer.embed_at(out, original) - original.embedding))
            c["distance"].append(distance)
            c["matched"] += distance < DISTANCE_THRESHOLD
            found = recognizer.describe(out, near=original.box)
            c["matched_dlib_detector"] += found is not None and np.linalg.norm(found.embedding - original.embedding) < DISTANCE_THRESHOLD
            c["face_found"] += face_still_found(reference(out), ref_box)
    return {name: {"faces": c["faces"], "matched": c["matched"] / max(c["faces"], 1),
                   "matched_dlib_detector": c["matched_dlib_detector"] / max(c["faces"], 1),
                   "face_found": c["face_found"] / max(c["faces"], 1),
                   "median_distance": float(np.median(c["distance"])) if c["distance"] else float("nan")}
            for name, c in counts.items()}


def build_methods(models: list[str], baselines: bool = True) -> dict:
    from ros_anonymizer.backends import load_backend
    from ros_anonymizer.config import AnonymizerConfig
    from ros_anonymizer.filters import LearnedAnonymizer

    base = AnonymizerConfig(use_gpu=False)
    methods = {"blur": (base.replace(filter="blur"), None), "mosaic": (base.replace(filter="mosaic"), None)} if baselines else {}
    for model in models:
        learned = LearnedAnonymizer(load_backend(model, "onnxruntime", use_gpu=False))
        methods[f"learned:{Path(model).parent.name}/{Path(model).name}"] = (base.replace(filter="learned"), learned)
    return methods


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ros_anonymizer_training.privacy_check", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="edge", help="training preset or YAML (decides the hold-out people)")
    parser.add_argument("--models", nargs="*", default=[], help="anonymizer ONNX files to compare with blur and mosaic")
    parser.add_argument("--images", type=int, default=200, help="hold-out images to use")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--no-baselines", action="store_true", help="leave out blur and mosaic")
    args = parser.parse_args(argv)
    cfg = TrainConfig.load(args.config)
    results = measure(build_methods(args.models, not args.no_baselines), holdout_images(cfg, args.images))
    for name, r in results.items():
        print(f"{name:50s} faces {r['faces']:4d}  re-identified {r['matched']:6.1%} (dlib detector: {r['matched_dlib_detector']:6.1%})"
              f"  CenterFace still finds a face {r['face_found']:6.1%}  median distance {r['median_distance']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
