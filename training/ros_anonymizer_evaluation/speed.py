"""Per-stage time and end-to-end frames/s of each method, per frame size.

Stage times are the pipeline's own `timings_ms` (faces, filter) plus the
action detector run by the evaluation; the figures depend on the machine and
its load, which the report states next to them.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np


class SpeedMeter:
    def __init__(self):
        self._stages: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))

    def add(self, frame_shape: tuple[int, ...], stages_ms: dict[str, float], wall_ms: float) -> None:
        size = f"{frame_shape[1]}x{frame_shape[0]}"
        for stage, ms in stages_ms.items():
            if stage != "total":
                self._stages[size][stage].append(ms)
        self._stages[size]["end_to_end"].append(wall_ms)

    def summary(self) -> dict:
        out = {}
        for size, stages in self._stages.items():
            total = np.array(stages["end_to_end"])
            out[size] = {
                "frames": len(total),
                "fps": float(1000.0 / total.mean()),  # throughput, hit by every hiccup of a shared machine
                "fps_median": float(1000.0 / np.median(total)),  # a typical frame
                "median_ms": {stage: float(np.median(v)) for stage, v in stages.items()},
                "p95_end_to_end_ms": float(np.percentile(total, 95)),
            }
        return out
