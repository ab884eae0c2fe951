"""ONNX Runtime's intra-op thread spinning on and off: CPU (process) time and wall time per CenterFace frame.

Idle intra-op threads spin for a while before they sleep, which burns CPU
that a loaded robot computer could use. Each configuration runs in its own
process (a spinning session's threads would bill another session in the same
process), in rounds that alternate the configurations; medians per frame over
640x480 generated frames after a warm-up.

    .venv/bin/python scripts/bench_ort_spinning.py [--frames 20] [--rounds 3] [--model float|int8|both]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def measure(model: str, threads: int, spinning: bool, frames: int) -> dict:
    sys.path.insert(0, str(REPO))
    import numpy as np
    import onnxruntime as ort

    from ros_anonymizer.config import AnonymizerConfig
    from ros_anonymizer.faces import CENTERFACE_INPUT, centerface_input, centerface_onnx
    from ros_anonymizer.int8_detector import int8_centerface, synthetic_frames

    source = centerface_onnx() if model == "float" else str(int8_centerface(AnonymizerConfig().engine_cache_dir))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    blobs = [centerface_input(f, 1.0)[0] for f in synthetic_frames(frames, seed=7, size=(640, 480))]
    session.run(None, {CENTERFACE_INPUT: blobs[0]})
    wall, cpu = [], []
    for blob in blobs:
        w, c = time.perf_counter(), time.process_time()
        session.run(None, {CENTERFACE_INPUT: blob})
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    # A camera delivers frames with gaps: CPU used in the 30 ms after a frame (spinning threads keep burning it).
    gap = []
    for blob in blobs[:10]:
        c = time.process_time()
        session.run(None, {CENTERFACE_INPUT: blob})
        time.sleep(0.03)
        gap.append(time.process_time() - c)
    return {"wall_ms": 1000 * float(np.median(wall)), "cpu_ms": 1000 * float(np.median(cpu)),
            "cpu_ms_with_30ms_gap": 1000 * float(np.median(gap))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", choices=["float", "int8", "both"], default="both")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        model, threads, spinning = args.child.split(",")
        print(json.dumps(measure(model, int(threads), spinning == "1", args.frames)))
        return
    models = ["float", "int8"] if args.model == "both" else [args.model]
    configs = [(m, t, s) for m in models for t in (2, 1) for s in (1, 0)]
    results: dict = {c: [] for c in configs}
    print(f"{len(os.sched_getaffinity(0))} cores, load {os.getloadavg()[0]:.1f}", flush=True)
    for _ in range(args.rounds):
        for model, threads, spinning in configs:
            done = subprocess.run([sys.executable, __file__, "--frames", str(args.frames), "--child", f"{model},{threads},{spinning}"],
                                  capture_output=True, text=True, check=True)
            results[(model, threads, spinning)].append(json.loads(done.stdout.strip().splitlines()[-1]))
    for (model, threads, spinning), runs in results.items():
        row = {key: round(sorted(r[key] for r in runs)[len(runs) // 2], 1) for key in runs[0]}
        print(json.dumps({"model": model, "threads": threads, "allow_spinning": spinning, **row}))
    print(f"load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
