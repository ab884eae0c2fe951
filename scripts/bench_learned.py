"""Milliseconds per face of the learned anonymizer M on this CPU: ONNX Runtime, batches of 1 and 7 faces.

    python scripts/bench_learned.py                                   # the bundled model
    python scripts/bench_learned.py --models old.onnx ros_anonymizer/models/anonymizer_edge.onnx --int8

Times the model alone (the runtime's `LearnedAnonymizer` backend call, as
the pipeline makes it) and the whole learned filter (crop, model, paste) on
an LFW frame with N copies of one face. `--int8` also times a dynamically
quantized copy of each model (ONNX Runtime's quantize_dynamic), to say
whether INT8 is worth having. Medians of `--repeats` runs after warm-up;
the load average is printed with the figures, because this 2-core machine
is shared.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ros_anonymizer.backends import load_backend  # noqa: E402
from ros_anonymizer.filters import (ANONYMIZER_INPUT, ANONYMIZER_LANDMARKS, BUNDLED_ANONYMIZER, LearnedAnonymizer,  # noqa: E402
                                    bundled_model, crop_landmarks, square_regions)


def median_ms(call, repeats: int) -> float:
    for _ in range(max(3, repeats // 10)):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def bench(model: str, faces: int, repeats: int, threads: int) -> dict:
    learned = LearnedAnonymizer(load_backend(model, "onnxruntime", use_gpu=False, threads=threads))
    size = learned.crop_size
    feeds = {ANONYMIZER_INPUT: np.random.default_rng(0).uniform(-1, 1, (faces, 3, size, size)).astype(np.float32)}
    boxes = np.array([[20 + 85 * i, 180, 100 + 85 * i, 280] for i in range(faces)], np.float32)
    # Eyes, nose and mouth corners where a frontal face in each box has them.
    landmarks = (boxes[:, None, :2] + (boxes[:, None, 2:] - boxes[:, None, :2]) * np.array(
        [[0.33, 0.4], [0.67, 0.4], [0.5, 0.58], [0.37, 0.75], [0.63, 0.75]], np.float32)).reshape(-1, 10)
    if learned.takes_landmarks:
        feeds[ANONYMIZER_LANDMARKS] = crop_landmarks(landmarks, square_regions(boxes, learned.box_enlarge))
    model_ms = median_ms(lambda: learned.backend.run(feeds), repeats)
    frame = np.random.default_rng(1).integers(0, 255, (480, 640, 3), np.uint8)
    filter_ms = median_ms(lambda: learned(frame.copy(), boxes, landmarks), repeats)
    return {"model": model, "faces": faces, "model_ms_per_face": model_ms / faces, "filter_ms_per_face": filter_ms / faces}


def quantized(model: str, folder: str) -> str:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = str(Path(folder) / (Path(model).stem + "_int8.onnx"))
    quantize_dynamic(model, out, weight_type=QuantType.QUInt8)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help=f"anonymizer ONNX files (default: the bundled {BUNDLED_ANONYMIZER})")
    parser.add_argument("--faces", type=int, nargs="*", default=[1, 7])
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    parser.add_argument("--int8", action="store_true", help="also time a dynamically quantized copy of each model")
    parser.add_argument("--json", type=Path, default=Path("out/bench/learned.json"))
    args = parser.parse_args(argv)
    models = args.models or [str(bundled_model(BUNDLED_ANONYMIZER))]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for model in models:
            variants = [model] + ([quantized(model, folder)] if args.int8 else [])
            for variant in variants:
                for n in args.faces:
                    row = bench(variant, n, args.repeats, args.threads)
                    row["model"] = Path(model).name + (" (INT8, dynamic)" if variant != model else "")
                    rows.append(row)
                    print(f"{row['model']:44s} {n} face(s): model {row['model_ms_per_face']:6.2f} ms/face, "
                          f"whole filter {row['filter_ms_per_face']:6.2f} ms/face")
    load = os.getloadavg()
    print(f"ONNX Runtime, {args.threads} threads, {os.cpu_count()} CPUs, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rows": rows, "threads": args.threads, "load_average": load}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
