"""Pipeline speed and face coverage at 640x480 on this CPU, against deface, in one run.

Frames: the MOT17 street frames (real scenes, 30 consecutive frames of two
sequences) scaled to 640x480, with LFW faces of 20-120 pixels pasted in and
moving a few pixels per frame, so every frame has known face positions.
A face counts as covered when the anonymized regions cover at least 90% of
its box (CenterFace's box on the full-size LFW image, moved with the paste); deface's regions are its enlarged boxes (mask_scale 1.3, as ours).

    .venv/bin/python scripts/bench_pipeline.py [--data ../shared/data] [--out out/bench]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import cv2
import numpy as np

from ros_anonymizer.config import AnonymizerConfig
from ros_anonymizer.faces import centerface_input, load_face_detector
from ros_anonymizer.int8_detector import CALIBRATION_FRAMES, quantize_centerface, synthetic_frames
from ros_anonymizer.filters import BUNDLED_ANONYMIZER, bundled_model, enlarge_boxes
from ros_anonymizer.media import read_image
from ros_anonymizer.pipeline import Pipeline

REPO = Path(__file__).resolve().parents[1]


def make_sequence(data: Path, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    people = sorted(p for p in (data / "lfw" / "images").iterdir() if p.is_dir())
    backgrounds = sorted((data / "mot17_mini").glob("*/img1/*.jpg"))
    faces = [read_image(sorted(people[i].glob("*.jpg"))[0])[40:210, 40:210] for i in rng.choice(len(people), 8, replace=False)]
    detector = load_face_detector(AnonymizerConfig(face_precision="fp32"))  # the truth: the float model
    face_boxes = [detector(np.ascontiguousarray(face)).boxes[0] / 170.0 for face in faces]  # the face inside each crop
    tracks = [(rng.integers(20, 120), rng.uniform(0, 520), rng.uniform(0, 360), rng.uniform(-4, 4), rng.uniform(-2, 2)) for _ in faces]
    sequence = []
    for t, path in enumerate(backgrounds):
        frame = cv2.resize(read_image(path), (640, 480), interpolation=cv2.INTER_AREA)
        rects, pasted = [], []
        for face, box, (size, x, y, dx, dy) in zip(faces, face_boxes, tracks):
            x0 = int(np.clip(x + dx * t, 0, 640 - size))
            y0 = int(np.clip(y + dy * t, 0, 480 - size))
            if any(x0 < r[2] and r[0] < x0 + size and y0 < r[3] and r[1] < y0 + size for r in pasted):
                continue
            pasted.append([x0, y0, x0 + size, y0 + size])
            frame[y0:y0 + size, x0:x0 + size] = cv2.resize(face, (int(size), int(size)), interpolation=cv2.INTER_AREA)
            rects.append(np.round(box * size).astype(int) + [x0, y0, x0, y0])
        sequence.append((frame, np.array(rects)))
    return sequence


def coverage(rects: np.ndarray, regions: np.ndarray, shape) -> int:
    covered = np.zeros(shape[:2], bool)
    for x1, y1, x2, y2 in regions:
        covered[y1:y2, x1:x2] = True
    return sum(covered[y1:y2, x1:x2].mean() >= 0.9 for x1, y1, x2, y2 in rects)


def measure(name: str, process, sequence, repeats: int) -> dict:
    """process(frame) -> changed regions (int xyxy) or None when the frame was dropped."""
    process(sequence[0][0])
    latencies, found, total, dropped = [], 0, 0, 0
    for rep in range(repeats):
        for frame, rects in sequence:
            start = time.perf_counter()
            regions = process(frame)
            latencies.append(time.perf_counter() - start)
            if rep == 0:
                total += len(rects)
                if regions is None:
                    dropped += 1
                    found += len(rects)  # a dropped frame leaks nothing
                else:
                    found += coverage(rects, regions, frame.shape)
    ms = np.array(latencies) * 1000
    row = {"name": name, "fps": 1000.0 / ms.mean(), "p50_ms": float(np.percentile(ms, 50)),
           "p95_ms": float(np.percentile(ms, 95)), "face_coverage": found / total, "dropped": dropped}
    print(f"{name:<44} {row['fps']:7.1f} fps  p50 {row['p50_ms']:6.1f} ms  p95 {row['p95_ms']:6.1f} ms  "
          f"faces covered {row['face_coverage']:.1%}")
    return row


def deface_process(detection_size):
    from deface.centerface import CenterFace
    from deface.deface import anonymize_frame

    centerface = CenterFace(in_shape=detection_size, backend="onnxrt")

    def process(frame):
        dets, _ = centerface(frame, threshold=DEFACE_THRESHOLD)
        out = frame.copy()
        anonymize_frame(dets, out, mask_scale=1.3, replacewith="blur", ellipse=True, draw_scores=False,
                        replaceimg=None, mosaicsize=20)
        return enlarge_boxes(dets[:, :4], 1.3, frame.shape)

    return process


def ours_process(config: AnonymizerConfig):
    pipeline = Pipeline(config)

    def process(frame):
        result = pipeline.process(frame)
        return result.regions if result.ok else None

    return process


DEFACE_THRESHOLD = 0.2  # deface's default
THRESHOLD = AnonymizerConfig().score_threshold  # ours: the default


def mot17_head_recall(data: Path, detection_scale: float) -> dict:
    """Share of clearly visible pedestrians (visibility >= 0.9, >= 200 px tall) with a face found in their head region.

    MOT17 has no face labels: people seen from behind count as misses, so this
    is a lower bound on recall of visible faces.
    """
    detector = load_face_detector(AnonymizerConfig(score_threshold=THRESHOLD, detection_scale=detection_scale))
    hits = people = 0
    for sequence in sorted((data / "mot17_mini").iterdir()):
        gt = np.loadtxt(sequence / "gt" / "gt.txt", delimiter=",").reshape(-1, 9)
        for path in sorted((sequence / "img1").glob("*.jpg")):
            boxes = detector(read_image(path)).boxes
            centers = (boxes[:, :2] + boxes[:, 2:]) / 2
            rows = gt[(gt[:, 0] == int(path.stem)) & (gt[:, 6] == 1) & (gt[:, 7] == 1) & (gt[:, 8] >= 0.9) & (gt[:, 5] >= 200)]
            for _, _, x, y, w, h, *_ in rows:
                people += 1
                hits += bool(((centers[:, 0] > x) & (centers[:, 0] < x + w) & (centers[:, 1] > y) & (centers[:, 1] < y + 0.2 * h)).any())
    return {"detection_scale": detection_scale, "people": people, "head_recall": hits / max(people, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "out" / "bench")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sequence = make_sequence(args.data)
    load = os.getloadavg()
    print(f"{len(sequence)} frames of 640x480, {sum(len(r) for _, r in sequence)} faces; {platform.processor() or platform.machine()}, "
          f"{len(os.sched_getaffinity(0))} cores, load average {load[0]:.1f}; face threshold {THRESHOLD} (deface {DEFACE_THRESHOLD})\n")
    base = AnonymizerConfig(filter="blur", frame_deadline_ms=0.0)  # the defaults (face_precision auto)
    default_precision = Pipeline(base).detector.backend.metadata.get("precision", "fp32")
    int8_model = args.out / "centerface_int8.onnx"  # the runtime's own INT8 recipe, used even where its verification refuses it
    if not int8_model.exists():
        quantize_centerface([centerface_input(f, 1.0)[0] for f in synthetic_frames(CALIBRATION_FRAMES, seed=1)], int8_model, {})
    int8 = base.replace(face_model=str(int8_model))
    comparison = [
        measure("deface, detection 640x480", deface_process(None), sequence, args.repeats),
        measure(f"ours default ({default_precision}), detection 1.0, no persistence", ours_process(base.replace(persist_frames=0)), sequence, args.repeats),
        measure(f"ours default ({default_precision}), detection 1.0", ours_process(base), sequence, args.repeats),
        measure("ours int8, detection 1.0", ours_process(int8), sequence, args.repeats),
        measure("deface, detection 320x240", deface_process((320, 240)), sequence, args.repeats),
        measure(f"ours default ({default_precision}), detection 0.5", ours_process(base.replace(detection_scale=0.5)), sequence, args.repeats),
        measure("ours int8, detection 0.5", ours_process(int8.replace(detection_scale=0.5)), sequence, args.repeats),
    ]
    rows = list(comparison)
    filters = ["mosaic", "mask", "noise"] + (["learned"] if bundled_model(BUNDLED_ANONYMIZER) else [])
    for scale in (1.0, 0.5):
        for name in filters:
            rows.append(measure(f"ours int8, detection {scale}, {name}", ours_process(int8.replace(detection_scale=scale, filter=name)),
                                sequence, args.repeats))
    faces_per_frame = np.mean([len(r) for _, r in sequence])
    print(f"(learned rows: {faces_per_frame:.1f} faces per frame on average)")
    mot = [mot17_head_recall(args.data, scale) for scale in (1.0, 0.5)]
    for row in mot:
        print(f"MOT17 1920x1080, detection {row['detection_scale']}: faces found for {row['head_recall']:.1%} of "
              f"{row['people']} clearly visible pedestrians (lower bound: some face away)")
    (args.out / "pipeline.json").write_text(json.dumps({"rows": rows, "mot17": mot, "load_average": load,
                                                        "faces_per_frame": faces_per_frame}, indent=2))
    plot(comparison, args.out / "pipeline.png")
    print(f"\nwrote {args.out / 'pipeline.json'} and {args.out / 'pipeline.png'}")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    for i, row in enumerate(rows):
        ax.scatter(row["fps"], row["face_coverage"] * 100, color="tab:red" if row["name"].startswith("deface") else "tab:blue")
        ax.annotate(row["name"].replace("ours ", ""), (row["fps"], row["face_coverage"] * 100), fontsize=8,
                    xytext=(6, 10 - 14 * (i % 3)), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("frames per second (640x480, blur, CPU; log scale)")
    ax.set_ylabel("faces covered (%)")
    ax.set_title("Speed and face coverage: ros_anonymizer (blue) vs deface (red)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
