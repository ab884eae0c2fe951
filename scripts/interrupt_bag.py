"""`bag anonymize` interrupted at random points (SIGINT, SIGTERM, SIGKILL): no partial output, input untouched.

Writes a bag of real frames (the JHMDB clip with LFW faces, 640x480 bgr8, as
scripts/bench_bag.py), times one uninterrupted run, then runs the command
`--trials` times, each stopped by a random signal at a random moment within
that time. After each trial: the input's hash must not change; OUT must
either not exist or be a complete bag (rosbags reads every frame, the report
is there); a SIGKILL may leave its hidden `.OUT.partial-*` folder (nothing can
run in a killed process), which the next run must remove.

    .venv/bin/python scripts/interrupt_bag.py [--trials 30] [--frames 60] [--seed 0] [--json out.json]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_bag import clip_with_faces, write_bag  # noqa: E402

from rosbags.rosbag2 import Reader  # noqa: E402

SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM, "SIGKILL": signal.SIGKILL}


def tree_hash(path: Path) -> str:
    digest = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f.relative_to(path).as_posix().encode() + f.read_bytes())
    return digest.hexdigest()


def complete(bag: Path, frames: int) -> bool:
    try:
        with Reader(bag) as reader:
            count = sum(1 for c, _, _ in reader.messages() if c.topic == "/camera/image_raw")
        return count == frames and (bag / "ros_anonymizer_report.json").is_file()
    except Exception:
        return False


def command(src: Path, dst: Path) -> list[str]:
    return [sys.executable, "-m", "ros_anonymizer.cli", "bag", "anonymize", str(src), str(dst), "--no-progress"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    rows: dict[str, dict[str, int]] = {name: {"trials": 0, "stopped_mid_run": 0, "finished_first": 0, "partial_visible": 0,
                                              "input_changed": 0, "orphans_left": 0, "orphans_not_removed": 0}
                                       for name in SIGNALS}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src, dst = tmp / "in", tmp / "out"
        write_bag(src, clip_with_faces(args.frames), "sqlite3")
        before = tree_hash(src)
        start = time.perf_counter()
        subprocess.run(command(src, dst), check=False, capture_output=True)
        full = time.perf_counter() - start
        assert complete(dst, args.frames), "an uninterrupted run must write a complete bag"
        shutil.rmtree(dst)
        for trial in range(args.trials):
            name = rng.choice(list(SIGNALS))
            row = rows[name]
            row["trials"] += 1
            orphans_before = list(tmp.glob(".out.partial-*"))
            process = subprocess.Popen(command(src, dst), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(rng.uniform(0.0, full))
            if process.poll() is None:
                process.send_signal(SIGNALS[name])
                row["stopped_mid_run"] += 1
            else:
                row["finished_first"] += 1
            process.wait(timeout=120)
            if orphans_before and any(p.exists() for p in orphans_before) and process.returncode in (0, 1):
                row["orphans_not_removed"] += 1  # a run that got to write its bag must have removed them
            if dst.exists():
                if not complete(dst, args.frames):
                    row["partial_visible"] += 1
                shutil.rmtree(dst)
            if tree_hash(src) != before:
                row["input_changed"] += 1
            if name == "SIGKILL":
                row["orphans_left"] += len(list(tmp.glob(".out.partial-*")))
            print(f"trial {trial + 1}/{args.trials}: {name}, exit {process.returncode}", file=sys.stderr, flush=True)
        subprocess.run(command(src, dst), check=False, capture_output=True)
        leftover = len(list(tmp.glob(".out.partial-*")))
    print(f"bag anonymize, {args.frames} frames of 640x480, uninterrupted run {full:.1f} s; signal at a uniform random time "
          f"in [0, {full:.1f}] s; seed {args.seed}; load average {os.getloadavg()[0]:.1f} at the end; "
          f"partial folders left after a final clean run: {leftover}")
    print("| signal | trials | stopped mid-run | finished first | incomplete OUT visible | input changed | "
          "hidden partials left by the kill | not removed by the next run |\n|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['trials']} | {r['stopped_mid_run']} | {r['finished_first']} | {r['partial_visible']} | "
              f"{r['input_changed']} | {r['orphans_left']} | {r['orphans_not_removed']} |")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "uninterrupted_seconds": full, "leftover": leftover}, indent=1))
    bad = sum(r["partial_visible"] + r["input_changed"] + r["orphans_not_removed"] for r in rows.values()) + leftover
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
