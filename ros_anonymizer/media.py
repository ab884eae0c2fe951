"""Reading a whole (short) video into RGB frames, for calibration, evaluation, benchmarks and tests."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def read_video(path: str | Path, limit: int | None = None) -> list[np.ndarray]:
    """Up to `limit` RGB frames of `path`, in order; an empty list when OpenCV cannot decode it."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while limit is None or len(frames) < limit:
        ok, bgr = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    capture.release()
    return frames
