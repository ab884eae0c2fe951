"""dlib's pretrained face recognizer: the independent attacker behind the privacy figures.

dlib's own HOG face detector and 5-point landmarks align each face as the
ResNet was trained; a face dlib cannot find cannot be re-identified by this
attacker, and the privacy report counts those faces separately.
"""
from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ros_anonymizer.errors import UserError
from ros_anonymizer.faces import box_iou

DISTANCE_THRESHOLD = 0.6  # dlib's documented same-person threshold for this ResNet
MIN_OVERLAP = 0.3  # IoU with the original face below which a face found in the output is someone else


class RecognizerError(UserError):
    """dlib or its model files are missing; the message says what to install."""


def pick_face(boxes: np.ndarray, shape: tuple[int, ...], near: np.ndarray | None = None) -> int | None:
    """Index of the box (N, 4 xyxy) nearest the image centre (LFW's subject), or of the one overlapping box `near` most
    (IoU >= MIN_OVERLAP); None when there is no such box."""
    if not len(boxes):
        return None
    if near is None:
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        return int(np.argmin(np.linalg.norm(centres - np.array(shape[1::-1]) / 2, axis=1)))
    overlap = box_iou(boxes, np.asarray(near, np.float32).reshape(1, 4))[:, 0]
    best = int(np.argmax(overlap))
    return best if overlap[best] >= MIN_OVERLAP else None


def found_at(boxes: np.ndarray, box: np.ndarray, min_overlap: float = MIN_OVERLAP) -> bool:
    """Whether any detection (N, 4 xyxy) overlaps the original face box."""
    return bool(len(boxes)) and bool(box_iou(boxes, np.asarray(box, np.float32).reshape(1, 4)).max() >= min_overlap)


@dataclass(frozen=True)
class Face:
    box: np.ndarray  # xyxy pixels of dlib's detection
    landmarks: np.ndarray  # (5, 2) dlib's alignment points
    embedding: np.ndarray  # (128,) float32


def model_file(name: str) -> Path:
    """A file of the `face_recognition_models` wheel, found without importing it (its __init__ needs pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RecognizerError("the privacy evaluation needs dlib's face models: pip install face-recognition-models==0.3.0 dlib-bin.")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise RecognizerError(f"{path} is missing; reinstall face-recognition-models.")
    return path


def import_dlib(what: str):
    """dlib, or RecognizerError saying how to install it; `what` is the sentence's subject and verb ("the privacy evaluation needs")."""
    try:
        import dlib
    except ImportError:
        raise RecognizerError(f"{what} dlib: pip install dlib-bin.") from None
    return dlib


class FaceRecognizer:
    """Find, align and embed faces with dlib; embeddings of identical inputs are computed once."""

    def __init__(self, upsample: int = 0):
        dlib = import_dlib("the privacy evaluation needs")
        self.upsample = upsample
        self._detector = dlib.get_frontal_face_detector()
        self._landmarks = dlib.shape_predictor(str(model_file("shape_predictor_5_face_landmarks.dat")))
        self._net = dlib.face_recognition_model_v1(str(model_file("dlib_face_recognition_resnet_model_v1.dat")))
        self._rectangle = dlib.rectangle
        self._cache: dict[bytes, Face | None] = {}

    def detect(self, rgb: np.ndarray) -> np.ndarray:
        """dlib's face boxes (N, 4) xyxy."""
        found = self._detector(np.ascontiguousarray(rgb), self.upsample)
        return np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in found], np.float32).reshape(-1, 4)

    def describe(self, rgb: np.ndarray, near: np.ndarray | None = None) -> Face | None:
        """The face nearest the image centre, or the one overlapping box `near`; None when dlib finds no such face."""
        key = hashlib.sha1(rgb.tobytes() + str(rgb.shape).encode() + (b"" if near is None else near.tobytes())).digest()
        if key not in self._cache:
            self._cache[key] = self._describe(rgb, near)
        return self._cache[key]

    def _describe(self, rgb: np.ndarray, near: np.ndarray | None) -> Face | None:
        boxes = self.detect(rgb)
        best = pick_face(boxes, rgb.shape, near)
        if best is None:
            return None
        rgb = np.ascontiguousarray(rgb)
        shape = self._landmarks(rgb, self._rect(boxes[best]))
        landmarks = np.array([[p.x, p.y] for p in shape.parts()], np.float32)
        return Face(boxes[best], landmarks, self._embedding(rgb, shape))

    def describe_box(self, rgb: np.ndarray, box: np.ndarray) -> Face:
        """Whatever lies in `box` (another detector's face, e.g. a small one in a video frame), aligned and embedded by dlib."""
        rgb = np.ascontiguousarray(rgb)
        shape = self._landmarks(rgb, self._rect(box))
        landmarks = np.array([[p.x, p.y] for p in shape.parts()], np.float32)
        return Face(np.asarray(box, np.float32), landmarks, self._embedding(rgb, shape))

    def embed_at(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        """The embedding of whatever lies where `face` was, aligned as it was: an attacker who knows the location.

        This attack does not depend on dlib's detector still finding the
        face, so it separates filters that merely defeat a face detector from
        filters that remove identity.
        """
        import dlib

        points = dlib.points([dlib.point(int(round(x)), int(round(y))) for x, y in face.landmarks])
        return self._embedding(np.ascontiguousarray(rgb), dlib.full_object_detection(self._rect(face.box), points))

    def _rect(self, box: np.ndarray):
        return self._rectangle(*(int(round(v)) for v in box))

    def _embedding(self, rgb: np.ndarray, shape) -> np.ndarray:
        return np.asarray(self._net.compute_face_descriptor(rgb, shape), np.float32)
