"""What people are doing: the action detector A, its pre-processing and person-box tracks.

The model describes itself in its ONNX metadata (input size, normalisation,
class names), so training and the robot cannot disagree on pre-processing:
the trainer imports `letterbox` and `preprocess` from here.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from .backends import Backend, ModelError, load_model
from .config import AnonymizerConfig
from .faces import box_iou, greedy_match

MODEL_KIND = "action_detector"
INPUT_NAME = "image"
OUTPUT_NAMES = ("boxes", "scores", "labels")
BUNDLED_MODEL = "action_detector_edge.onnx"


@dataclass
class Actions:
    """Person boxes in frame pixels (xyxy), each with one action label, its score and a track id."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    class_names: tuple = ()
    track_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls, class_names: tuple = ()) -> "Actions":
        return cls(class_names=tuple(class_names))

    def names(self) -> list[str]:
        """The action name of each box."""
        return [self.class_names[label] for label in self.labels]


@dataclass(frozen=True)
class ActionModelInfo:
    """The pre-processing and classes an action model declares in its metadata."""

    input_size: tuple[int, int]  # (H, W)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    classes: tuple[str, ...]

    @classmethod
    def from_metadata(cls, metadata: dict[str, str]) -> "ActionModelInfo":
        """Parse and check the metadata; a model without it is refused, since its input cannot be prepared."""
        if metadata.get("model_kind") != MODEL_KIND:
            raise ModelError(f"this model is not an action detector (its metadata says model_kind="
                             f"{metadata.get('model_kind')!r}, expected {MODEL_KIND!r}); export it with "
                             "ros_anonymizer_training.models.action_detector.export_action_detector.")
        try:
            height, width = (int(v) for v in json.loads(metadata["input_size"]))
            norm = json.loads(metadata["normalization"])
            mean, std = tuple(float(v) for v in norm["mean"]), tuple(float(v) for v in norm["std"])
            classes = tuple(str(c) for c in json.loads(metadata["classes"]))
        except KeyError as e:
            raise ModelError(f"the action detector's metadata lacks {e.args[0]!r}; re-export the model with "
                             "ros_anonymizer_training.models.action_detector.export_action_detector.") from None
        except (ValueError, TypeError) as e:
            raise ModelError(f"the action detector's metadata cannot be read ({e}); re-export the model.") from None
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0 or height <= 0 or width <= 0 or not classes:
            raise ModelError("the action detector's metadata has an invalid input_size, normalization or classes; "
                             "re-export the model.")
        return cls((height, width), mean, std, classes)


def letterbox(rgb: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """Resize keeping the aspect ratio to fit (H, W), pad bottom/right with 0; returns (image, scale).

    A frame-pixel coordinate c becomes c * scale in the padded image, so boxes
    map back by dividing by `scale`.
    """
    height, width = size
    h, w = rgb.shape[:2]
    scale = min(height / h, width / w)
    new_w, new_h = min(width, max(1, round(w * scale))), min(height, max(1, round(h * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = rgb if (new_w, new_h) == (w, h) else cv2.resize(rgb, (new_w, new_h), interpolation=interpolation)
    padded = np.zeros((height, width, 3), np.uint8)
    padded[:new_h, :new_w] = resized
    return padded, scale


def normalize(images: np.ndarray, mean, std) -> np.ndarray:
    """uint8 RGB (..., H, W, 3) -> float32 (..., 3, H, W) as (x/255 - mean)/std."""
    x = (images.astype(np.float32) / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))


def preprocess(rgb: np.ndarray, metadata: dict[str, str] | ActionModelInfo) -> tuple[np.ndarray, float]:
    """An RGB frame -> the model's float32 [1, 3, H, W] input and the letterbox scale."""
    info = metadata if isinstance(metadata, ActionModelInfo) else ActionModelInfo.from_metadata(metadata)
    padded, scale = letterbox(rgb, info.input_size)
    return normalize(padded, info.mean, info.std)[None], scale


def load_action_detector(config: AnonymizerConfig) -> "ActionDetector | None":
    """The configured action detector; None when `action_model` is empty (no action detection)."""
    if not config.action_model:
        return None
    if config.action_model == "default":
        model = resources.files("ros_anonymizer") / "models" / BUNDLED_MODEL
        if not model.is_file():
            raise ModelError(f"the bundled action detector ros_anonymizer/models/{BUNDLED_MODEL} is missing; "
                             "reinstall the package or set action_model to a model file.")
        model = Path(str(model))
    else:
        model = config.action_model
    backend = load_model(model, config, "action")
    return ActionDetector(backend, config.action_threshold)


class ActionDetector:
    """Runs A on a frame: letterbox, normalise, infer, map boxes back to frame pixels, track."""

    def __init__(self, backend: Backend, score_threshold: float = 0.3, tracker: "ActionTracker | None" = None):
        self.info = ActionModelInfo.from_metadata(backend.metadata)
        names = {spec.name for spec in backend.inputs}
        missing = [n for n in OUTPUT_NAMES if n not in {spec.name for spec in backend.outputs}]
        if INPUT_NAME not in names or missing:
            raise ModelError(f"the action detector must have input {INPUT_NAME!r} and outputs "
                             f"{', '.join(OUTPUT_NAMES)}; this one has inputs {sorted(names)}.")
        self.backend = backend
        self.score_threshold = score_threshold
        self.tracker = tracker if tracker is not None else ActionTracker()

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.info.classes

    def __call__(self, rgb: np.ndarray) -> Actions:
        blob, scale = preprocess(rgb, self.info)
        out = self.backend.run({INPUT_NAME: blob})
        scores = np.asarray(out["scores"], np.float32).reshape(-1)
        keep = scores >= self.score_threshold
        boxes = np.asarray(out["boxes"], np.float32).reshape(-1, 4)[keep] / scale
        boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, rgb.shape[1])
        boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, rgb.shape[0])
        labels = np.asarray(out["labels"], np.int64).reshape(-1)[keep]
        valid = (labels >= 0) & (labels < len(self.info.classes)) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        actions = Actions(boxes[valid], scores[keep][valid], labels[valid], self.info.classes)
        actions.track_ids = self.tracker.update(actions.boxes)
        return actions

    def reset(self) -> None:
        self.tracker.reset()


class ActionTracker:
    """Gives each person box the id of the previous frame's box it overlaps most (greedy IoU)."""

    def __init__(self, match_iou: float = 0.3, max_misses: int = 5):
        self.match_iou = match_iou
        self.max_misses = max_misses
        self.reset()

    def reset(self) -> None:
        self._boxes = np.zeros((0, 4), np.float32)
        self._ids = np.zeros(0, np.int64)
        self._misses = np.zeros(0, np.int64)
        self._next_id = 1

    def update(self, boxes: np.ndarray) -> np.ndarray:
        """Track ids for `boxes` (N, 4); unmatched boxes start new tracks."""
        ids = np.zeros(len(boxes), np.int64)
        used = np.zeros(len(self._boxes), bool)
        if len(boxes) and len(self._boxes):
            for d, t in greedy_match(box_iou(boxes, self._boxes), self.match_iou).items():
                ids[d], used[t] = self._ids[t], True
        for d in np.flatnonzero(ids == 0):
            ids[d], self._next_id = self._next_id, self._next_id + 1
        coasting = ~used & (self._misses < self.max_misses)
        self._boxes = np.concatenate([boxes.astype(np.float32), self._boxes[coasting]])
        self._ids = np.concatenate([ids, self._ids[coasting]])
        self._misses = np.concatenate([np.zeros(len(boxes), np.int64), self._misses[coasting] + 1])
        return ids
