"""Bag anonymization throughput: frames per second through `bag anonymize`, per filter, on a 640x480 bag.

The bag holds real frames: the JHMDB clip scaled to 640x480 with an LFW face
pasted in each (so every frame has a face to anonymize), as raw bgr8 Images.
Each filter runs the whole tool once (load models, read, decode, detect,
filter, encode, write); the figure is frames / wall-clock seconds of that
run. Run on a quiet machine and say what else was running.

    .venv/bin/python scripts/bench_bag.py [--frames 120] [--filters blur mosaic] [--storage mcap]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import yaml
from rosbags.rosbag2 import StoragePlugin, Writer
from tqdm import tqdm

from ros_anonymizer.bag.anonymize import anonymize_bag
from ros_anonymizer.bag.types import IMAGE_TYPE, typestore
from ros_anonymizer.media import read_image, read_video
from ros_anonymizer.config import FILTERS, AnonymizerConfig
from ros_anonymizer.filters import BUNDLED_ANONYMIZER, bundled_model

DATA = Path(os.environ.get("ROS_ANONYMIZER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
SIZE = (640, 480)


def clip_with_faces(count: int) -> list[np.ndarray]:
    """`count` 640x480 RGB frames: the JHMDB clip (looped) with an LFW face pasted into each."""
    clips = sorted((DATA / "jhmdb" / "catch").glob("*.avi"))
    people = sorted(p for p in (DATA / "lfw" / "images").iterdir() if p.is_dir())[:8] if (DATA / "lfw").is_dir() else []
    if not clips or not people:
        sys.exit(f"bench_bag: needs the JHMDB clip and LFW faces under {DATA} (see its README.md).")
    clip = [cv2.resize(rgb, SIZE, interpolation=cv2.INTER_LINEAR) for rgb in read_video(clips[0])]
    faces = [read_image(sorted(p.glob("*.jpg"))[0])[60:190, 70:180] for p in people]
    frames = []
    for i in range(count):
        frame = clip[i % len(clip)].copy()
        x, y = 380 + (i % 40), 30 + (i % 5)
        frame[y:y + 130, x:x + 110] = faces[i % len(faces)]
        frames.append(frame)
    return frames


def write_bag(path: Path, frames: list[np.ndarray], storage: str) -> None:
    store, types = typestore(), typestore().types
    with Writer(path, version=9, storage_plugin=StoragePlugin[storage.upper()]) as writer:
        connection = writer.add_connection("/camera/image_raw", IMAGE_TYPE, typestore=store)
        for i, rgb in enumerate(frames):
            ns = 1_700_000_000_000_000_000 + i * 33_333_333
            header = types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9),
                                                  frame_id="camera")
            msg = types[IMAGE_TYPE](header=header, height=SIZE[1], width=SIZE[0], encoding="bgr8", is_bigendian=0,
                                    step=SIZE[0] * 3, data=np.ascontiguousarray(rgb[:, :, ::-1]).reshape(-1))
            writer.write(connection, ns, bytes(store.serialize_cdr(msg, IMAGE_TYPE)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=120, help="frames in the bag")
    parser.add_argument("--filters", nargs="+", default=list(FILTERS), choices=FILTERS)
    parser.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3")
    parser.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], help="extra config, e.g. detection_scale=0.5")
    args = parser.parse_args()
    overrides = {key: yaml.safe_load(value) for key, _, value in (item.partition("=") for item in args.set)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        write_bag(src, clip_with_faces(args.frames), args.storage)
        for name in tqdm(args.filters, desc="filters", unit="filter"):
            if name == "learned" and not bundled_model(BUNDLED_ANONYMIZER) and "anonymizer_model" not in overrides:
                rows.append((name, "-", "-", "-", "no anonymizer model: bundle one or --set anonymizer_model=..."))
                continue
            config = AnonymizerConfig.from_mapping({**overrides, "filter": name})
            start = time.perf_counter()
            report = anonymize_bag(src, Path(tmp) / f"out-{name}", config, progress=False)
            seconds = time.perf_counter() - start
            counts = report.topics["/camera/image_raw"]
            faces = counts["faces"] / max(counts["frames"], 1)
            rows.append((name, f"{counts['anonymized'] / seconds:.1f}", f"{seconds:.2f}", f"{faces:.2f}", ""))
    print(f"bag anonymize, {args.frames} frames of {SIZE[0]}x{SIZE[1]} bgr8, {args.storage}; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")
    print("| filter | frames/s | seconds | faces/frame | note |\n|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
