"""Image and video files: the one place that reads them (RGB) and knows their suffixes.

Used by the file CLI, the demo, calibration, training, evaluation, benchmarks
and tests alike, so every tool accepts the same files and fails the same way:
an unreadable file is a `UserError` with one plain sentence.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from .errors import UserError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"})


class MediaError(UserError, ValueError):
    """An image or video file that cannot be read, or is larger than allowed (a ValueError too, for data loaders)."""


def image_files(folder: str | Path, recursive: bool = False) -> list[Path]:
    """The images in `folder` (by suffix, any case), sorted."""
    folder = Path(folder)
    return sorted(p for p in (folder.rglob("*") if recursive else folder.iterdir())
                  if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def check_size(width: int, height: int, max_pixels: int | None, what: str) -> None:
    """MediaError when a frame of width x height exceeds `max_pixels` (the config's max_image_pixels)."""
    if max_pixels is not None and width * height > max_pixels:
        raise MediaError(f"{what} is {width}x{height}, more than max_image_pixels ({max_pixels} pixels); "
                         "raise it with --set max_image_pixels=N if this size is intended.")


def read_image(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """The image at `path` as RGB uint8 (H, W, 3); MediaError when unreadable or larger than `max_pixels`."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise MediaError(f"{path} is not a readable image.")
    check_size(bgr.shape[1], bgr.shape[0], max_pixels, str(path))
    return np.ascontiguousarray(bgr[:, :, ::-1])


class VideoReader:
    """A video file opened for reading RGB frames in order (a context manager); MediaError when unreadable."""

    def __init__(self, path: str | Path, max_pixels: int | None = None):
        self.path = Path(path)
        self._capture = cv2.VideoCapture(str(path))
        if not self._capture.isOpened():
            raise MediaError(f"{path} is not a readable video.")
        self.fps = self._capture.get(cv2.CAP_PROP_FPS) or 25.0
        self.size = int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.frame_count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
        try:
            check_size(*self.size, max_pixels, str(path))
        except MediaError:
            self.close()
            raise

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            ok, bgr = self._capture.read()
            if not ok:
                return
            yield np.ascontiguousarray(bgr[:, :, ::-1])

    def close(self) -> None:
        self._capture.release()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_video(path: str | Path, limit: int | None = None) -> list[np.ndarray]:
    """Up to `limit` RGB frames of `path`, in order; MediaError when no frame can be decoded."""
    frames = []
    with VideoReader(path) as video:
        for frame in video:
            if limit is not None and len(frames) >= limit:
                break
            frames.append(frame)
    if not frames:
        raise MediaError(f"cannot decode any frame of {path}; is it a video OpenCV can read?")
    return frames
