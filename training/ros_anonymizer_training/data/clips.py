"""One annotated action clip, whatever dataset it came from, and reading its frames.

Datasets ship clips as videos (`.avi`) or as folders of numbered images;
both read the same way here, so loaders only have to find them.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ros_anonymizer.media import VIDEO_SUFFIXES, image_files, read_image, read_video


@dataclass
class ActionClip:
    """Per-frame person boxes (xyxy frame pixels) and action labels (indices into `class_names`)."""

    name: str  # dataset-relative id, e.g. "catch/Goal_Keeping_Tips_catch_f_cm_np1_fr_med_2"
    video: Path  # a video file or a folder of frame images
    num_frames: int
    boxes: list[np.ndarray]  # per frame (n, 4) float32
    labels: list[np.ndarray]  # per frame (n,) int64
    class_names: tuple[str, ...]

    def annotated_frames(self) -> list[int]:
        return [i for i, b in enumerate(self.boxes) if len(b)]


def find_video(candidates: list[Path]) -> Path | None:
    """The first candidate (a path without suffix) that exists as a non-empty frame folder or a video file."""
    for base in candidates:
        if base.is_dir() and image_files(base):
            return base
        for suffix in sorted(VIDEO_SUFFIXES):
            path = base.with_name(base.name + suffix)
            if path.is_file():
                return path
    return None


def read_frames(video: Path, limit: int | None = None) -> list[np.ndarray]:
    """The first `limit` (default: every) frames of a video file or frame folder, as RGB uint8 arrays."""
    video = Path(video)
    if video.is_dir():
        return [read_image(p) for p in image_files(video)[:limit]]
    return read_video(video, limit)


@lru_cache(maxsize=8)
def _cached_frames(video: str, mtime_ns: int) -> tuple[np.ndarray, ...]:
    return tuple(read_frames(Path(video)))


def read_frame(video: Path, index: int) -> np.ndarray:
    """One frame; whole clips are decoded once and the last few kept, since seeking in .avi is unreliable."""
    video = Path(video)
    frames = _cached_frames(str(video), video.stat().st_mtime_ns)
    return frames[index]
