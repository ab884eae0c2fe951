"""Archive throughput: `bag anonymize-archive` with 1 and 2 workers against the single-bag tool run bag after bag.

Generates an archive of `--bags` bags of `--frames` 640x480 bgr8 frames each
(the JHMDB clip with an LFW face pasted in each frame, as scripts/bench_bag.py),
half sqlite3, half mcap. Then measures, in one run:
- the single-bag tool, one `anonymize_bag` per bag in this process (models loaded per bag, as a shell loop
  over `ros-anonymizer bag anonymize` would, minus interpreter start-up);
- the archive tool on an embedded Ray engine with each worker count (engine start-up included and reported);
- the per-bag overhead of the engine: archive wall time after start-up per bag, minus the time the workers
  spent inside the single-bag tool per bag, with one worker, on `--tiny` one-frame bags.
Say what else ran on the machine: figures on a shared machine are noisy.

    .venv/bin/python scripts/bench_archive.py [--bags 8] [--frames 30] [--workers 1 2] [--tiny 20]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_bag import clip_with_faces, write_bag  # noqa: E402

from ros_anonymizer.bag.anonymize import anonymize_bag  # noqa: E402
from ros_anonymizer.bag.archive import anonymize_archive  # noqa: E402
from ros_anonymizer.config import AnonymizerConfig  # noqa: E402


def make_archive(root: Path, bags: int, frames: int) -> None:
    pictures = clip_with_faces(frames)
    for i in range(bags):
        path = root / f"robot{i % 3}" / f"bag{i:03d}"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bag(path, pictures, "mcap" if i % 2 else "sqlite3")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bags", type=int, default=8)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--tiny", type=int, default=20, help="one-frame bags for the per-bag overhead (0: skip)")
    args = parser.parse_args()
    config = AnonymizerConfig(cpu_threads=1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_archive(tmp / "in", args.bags, args.frames)
        frames = args.bags * args.frames
        bags = sorted(p.parent for p in (tmp / "in").rglob("metadata.yaml"))
        start = time.perf_counter()
        for i, bag in enumerate(bags):
            anonymize_bag(bag, tmp / f"single{i}", config, progress=False)
        seconds = time.perf_counter() - start
        rows.append(("single-bag tool, bag after bag", "1 process", f"{seconds:.1f}", "-", f"{frames / seconds:.1f}", f"{os.getloadavg()[0]:.1f}"))
        for workers in args.workers:
            start = time.perf_counter()
            report = anonymize_archive(tmp / "in", tmp / f"archive{workers}", config, workers=workers, progress=False)
            seconds = time.perf_counter() - start
            assert report.count("anonymized") == args.bags, report.summary()
            rows.append((f"anonymize-archive, {workers} worker(s)", "ray embedded", f"{seconds:.1f}", f"{report.engine_start_seconds:.1f}",
                         f"{frames / seconds:.1f} ({frames / (seconds - report.engine_start_seconds):.1f} after start-up)",
                         f"{os.getloadavg()[0]:.1f}"))
        if args.tiny:
            make_archive(tmp / "tiny", args.tiny, 1)
            start = time.perf_counter()
            report = anonymize_archive(tmp / "tiny", tmp / "tiny-out", config, workers=1, progress=False)
            seconds = time.perf_counter() - start
            inside = sum(r["seconds"] for r in report.bags.values())
            overhead = (seconds - report.engine_start_seconds - inside) / args.tiny
            rows.append((f"per-bag overhead ({args.tiny} one-frame bags, 1 worker)", "ray embedded", f"{seconds:.1f}",
                         f"{report.engine_start_seconds:.1f}", f"{overhead * 1000:.0f} ms/bag outside the single-bag tool "
                         f"(tool: {inside / args.tiny * 1000:.0f} ms/bag)", f"{os.getloadavg()[0]:.1f}"))
    print(f"{args.bags} bags x {args.frames} frames of 640x480 bgr8 (half sqlite3, half mcap), filter blur, cpu_threads=1; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print("| run | engine | seconds | engine start s | frames/s | load (1 min) |\n|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
