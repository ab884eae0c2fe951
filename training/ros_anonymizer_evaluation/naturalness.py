"""Does the anonymized face still look like a face, and how much of the image was changed?

A face detector that still fires means the output keeps a face-like region
(what the learned anonymizer aims for, and what blur/mask destroy); SSIM
inside the face box says how far the face moved from the original, SSIM
outside says whether the filter spilled onto the rest of the frame.
"""
from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity

from ros_anonymizer.backends import load_backend
from ros_anonymizer.faces import CenterFaceDetector, Faces, centerface_onnx

from .recognizer import MIN_OVERLAP, found_at, pick_face

FACE_SCORE = 0.5  # a face counts as "still found" at this CenterFace score, where it overlaps the original face (MIN_OVERLAP)


def reference_detector(score_threshold: float = FACE_SCORE, threads: int = 0) -> CenterFaceDetector:
    """CenterFace at full resolution and fixed settings, independent of the configuration under test."""
    return CenterFaceDetector(load_backend(centerface_onnx(), "onnxruntime", use_gpu=False, threads=threads), score_threshold, 1.0)


def main_face(faces: Faces, shape: tuple[int, ...]) -> np.ndarray | None:
    """The box nearest the image centre (LFW's subject), or None."""
    best = pick_face(faces.boxes, shape)
    return None if best is None else faces.boxes[best]


def face_still_found(found: Faces, original_box: np.ndarray, min_overlap: float = MIN_OVERLAP) -> bool:
    """Whether any face detected on the output overlaps the original face box."""
    return found_at(found.boxes, original_box, min_overlap)


def ssim_inside_outside(original: np.ndarray, anonymized: np.ndarray, box: np.ndarray) -> tuple[float, float]:
    """Mean SSIM (luma, 7x7 windows) inside the face box and over the rest of the frame."""
    _, ssim_map = structural_similarity(_luma(original), _luma(anonymized), data_range=255.0, full=True)
    inside = np.zeros(ssim_map.shape, bool)
    x1, y1, x2, y2 = np.round(box).astype(int)
    inside[max(0, y1):max(0, y2), max(0, x1):max(0, x2)] = True
    outside_mean = float(ssim_map[~inside].mean()) if (~inside).any() else float("nan")
    inside_mean = float(ssim_map[inside].mean()) if inside.any() else float("nan")
    return inside_mean, outside_mean


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
