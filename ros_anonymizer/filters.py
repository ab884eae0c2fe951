"""What is done to each face region: blur, mosaic, mask, noise, or the learned anonymizer M.

Every filter writes only inside the regions it is given; pixels outside them
are never touched, so the rest of the frame keeps its value for the action
detector.
"""
from __future__ import annotations

import importlib.resources
import json
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from .backends import Backend, ModelError
from .config import AnonymizerConfig

ANONYMIZER_INPUT = "faces"
ANONYMIZER_LANDMARKS = "landmarks"  # optional second input: [N,10] CenterFace's 5 points in the crop, 0..1; -1 where unknown
ANONYMIZER_OUTPUT = "anonymized"
UNKNOWN_LANDMARK = -1.0
BUNDLED_ANONYMIZER = "anonymizer_edge.onnx"


def bundled_model(name: str) -> Path | None:
    """A model shipped inside the package (ros_anonymizer/models), or None if this install has none."""
    path = Path(str(importlib.resources.files("ros_anonymizer") / "models" / name))
    return path if path.is_file() else None


def enlarge_boxes(boxes: np.ndarray, factor: float, frame_shape: tuple[int, ...]) -> np.ndarray:
    """Boxes scaled about their centres, rounded outwards and clipped to the frame, as int (N,4) xyxy."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    center, half = (boxes[:, :2] + boxes[:, 2:]) / 2, (boxes[:, 2:] - boxes[:, :2]) / 2 * factor
    out = np.concatenate([np.floor(center - half), np.ceil(center + half)], 1)
    out[:, 0::2] = np.clip(out[:, 0::2], 0, frame_shape[1])
    out[:, 1::2] = np.clip(out[:, 1::2], 0, frame_shape[0])
    return out.astype(np.int64)


def blur(rgb: np.ndarray, regions: np.ndarray, strength: float) -> None:
    """Gaussian blur whose sigma is `strength` times the region size, computed on a downscaled copy for speed."""
    for x1, y1, x2, y2 in regions:
        w, h = x2 - x1, y2 - y1
        if w < 2 or h < 2:
            continue
        sigma = strength * max(w, h)
        shrink = max(1.0, sigma / 3.0)
        small = cv2.resize(rgb[y1:y2, x1:x2], (max(1, round(w / shrink)), max(1, round(h / shrink))), interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), sigma / shrink, borderType=cv2.BORDER_REPLICATE)
        rgb[y1:y2, x1:x2] = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def mosaic(rgb: np.ndarray, regions: np.ndarray, cells: int) -> None:
    for x1, y1, x2, y2 in regions:
        w, h = x2 - x1, y2 - y1
        if w < 1 or h < 1:
            continue
        across = min(cells, w)
        down = max(1, min(h, round(across * h / w)))
        small = cv2.resize(rgb[y1:y2, x1:x2], (across, down), interpolation=cv2.INTER_AREA)
        rgb[y1:y2, x1:x2] = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def mask(rgb: np.ndarray, regions: np.ndarray, color) -> None:
    for x1, y1, x2, y2 in regions:
        rgb[y1:y2, x1:x2] = color


def noise(rgb: np.ndarray, regions: np.ndarray, sigma: float, rng: np.random.Generator, strength: float) -> None:
    """Gaussian noise over a blurred face: the blur (`strength`, as `blur`) removes identity, the noise the smooth look.

    Noise alone keeps the face's structure: a recognizer told where the face is
    re-identified about a quarter of noise-only faces at sigma 80.
    """
    blur(rgb, regions, strength)
    for x1, y1, x2, y2 in regions:
        roi = rgb[y1:y2, x1:x2]
        roi[:] = np.clip(roi + rng.normal(0.0, sigma, roi.shape), 0, 255).astype(np.uint8)


def square_regions(boxes: np.ndarray, factor: float) -> np.ndarray:
    """Square int regions (x, y, side) around each box, sides = factor * longer box side; may leave the frame."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    center = (boxes[:, :2] + boxes[:, 2:]) / 2
    side = np.ceil(np.max(boxes[:, 2:] - boxes[:, :2], axis=1) * factor).clip(min=2)
    corner = np.round(center - side[:, None] / 2)
    return np.concatenate([corner, side[:, None]], 1).astype(np.int64)


def square_bounds(squares: np.ndarray, frame_shape: tuple[int, ...]) -> np.ndarray:
    """Squares (x, y, side) as int xyxy regions clipped to the frame: what pasting them can change."""
    regions = np.concatenate([squares[:, :2], squares[:, :2] + squares[:, 2:]], 1)
    regions[:, 0::2] = regions[:, 0::2].clip(0, frame_shape[1])
    regions[:, 1::2] = regions[:, 1::2].clip(0, frame_shape[0])
    return regions


def crop_landmarks(landmarks: np.ndarray | None, squares: np.ndarray) -> np.ndarray:
    """Frame-pixel 5-point landmarks (N,10: x0, y0, ... x4, y4) -> float32 0..1 within each square; -1 rows where unknown.

    A face held by the tracker between detections has no landmarks (all
    zeros), and neither has a face given without them: both read as unknown.
    """
    out = np.full((len(squares), 10), UNKNOWN_LANDMARK, np.float32)
    if landmarks is None or not len(squares):
        return out
    landmarks = np.asarray(landmarks, np.float32).reshape(-1, 10)
    known = np.abs(landmarks).sum(1) > 0
    side = squares[:, 2:3].astype(np.float32)
    points = (landmarks.reshape(-1, 5, 2) - squares[:, None, :2]) / side[:, None]
    out[known] = points.reshape(-1, 10)[known]
    return out


def anonymizer_feeds(crops: np.ndarray, value_range: tuple[float, float], landmarks: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """uint8 crops (N,S,S,3) -> M's named inputs: the faces in the model's value range, and `landmarks` (crop units) when given."""
    low, high = value_range
    feeds = {ANONYMIZER_INPUT: crops.transpose(0, 3, 1, 2).astype(np.float32) * ((high - low) / 255.0) + low}
    if landmarks is not None:
        feeds[ANONYMIZER_LANDMARKS] = landmarks
    return feeds


def crop_squares(rgb: np.ndarray, squares: np.ndarray, size: int) -> np.ndarray:
    """Square crops resized to size x size, uint8 (N,S,S,3); parts outside the frame repeat the edge pixels."""
    crops = np.empty((len(squares), size, size, 3), np.uint8)
    height, width = rgb.shape[:2]
    for i, (x, y, side) in enumerate(squares):
        inside = rgb[max(y, 0):min(y + side, height), max(x, 0):min(x + side, width)]
        pads = ((max(-y, 0), max(y + side - height, 0)), (max(-x, 0), max(x + side - width, 0)), (0, 0))
        square = np.pad(inside, pads, mode="edge") if any(p for pair in pads[:2] for p in pair) else inside
        crops[i] = cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA if side > size else cv2.INTER_LINEAR)
    return crops


@lru_cache(maxsize=64)
def soft_ellipse(side: int, feather: float = 0.15) -> np.ndarray:
    """(side, side, 1) float32 weights: 1 inside the inscribed ellipse, fading to 0 over its outer `feather`."""
    coords = (np.arange(side, dtype=np.float32) + 0.5) / side * 2 - 1
    radius = np.sqrt(coords[None, :] ** 2 + coords[:, None] ** 2)
    return np.clip((1.0 - radius) / feather, 0.0, 1.0)[..., None]


def paste_squares(rgb: np.ndarray, squares: np.ndarray, crops: np.ndarray) -> None:
    """Blend each crop back over its square with a soft elliptical mask, clipped to the frame."""
    height, width = rgb.shape[:2]
    for (x, y, side), crop in zip(squares, crops):
        x1, y1, x2, y2 = max(x, 0), max(y, 0), min(x + side, width), min(y + side, height)
        if x2 <= x1 or y2 <= y1:
            continue
        full = cv2.resize(crop, (side, side), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        weight = soft_ellipse(int(side))
        sl = (slice(y1 - y, y2 - y), slice(x1 - x, x2 - x))
        roi = rgb[y1:y2, x1:x2].astype(np.float32)
        rgb[y1:y2, x1:x2] = np.rint(roi + (full[sl] - roi) * weight[sl]).astype(np.uint8)


class LearnedAnonymizer:
    """The anonymizer M on a batch of face crops, following the model contract in its ONNX metadata."""

    def __init__(self, backend: Backend):
        meta = backend.metadata
        if meta.get("model_kind") != "anonymizer":
            raise ModelError("this model is not an anonymizer: its metadata has no model_kind 'anonymizer'.")
        try:
            self.crop_size = int(meta["crop_size"])
            self.box_enlarge = float(meta["box_enlarge"])
            low, high = json.loads(meta["value_range"])
        except (KeyError, ValueError, TypeError) as e:
            raise ModelError(f"anonymizer metadata is incomplete or malformed ({e}); re-export it with the trainer.") from None
        spec = backend.input(ANONYMIZER_INPUT)
        if not any(o.name == ANONYMIZER_OUTPUT for o in backend.outputs):
            raise ModelError(f"anonymizer has no output named {ANONYMIZER_OUTPUT!r}.")
        if len(spec.shape) != 4 or spec.shape[1] != 3:
            raise ModelError(f"anonymizer input must be [N,3,S,S], not {list(spec.shape)}.")
        self.takes_landmarks = any(i.name == ANONYMIZER_LANDMARKS for i in backend.inputs)
        if self.takes_landmarks and list(backend.input(ANONYMIZER_LANDMARKS).shape)[1:] != [10]:
            raise ModelError(f"anonymizer input {ANONYMIZER_LANDMARKS!r} must be [N,10], not {list(backend.input(ANONYMIZER_LANDMARKS).shape)}.")
        self.backend = backend
        self.low, self.high = float(low), float(high)

    def __call__(self, rgb: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray | None = None) -> np.ndarray:
        """Anonymize the faces in place; returns the int regions changed, as xyxy.

        `landmarks` (N,10, frame pixels, the detector's) reach a model that
        takes them, so it paints eyes, nose and mouth where the person's are.
        """
        squares = square_regions(boxes, self.box_enlarge)
        if not len(squares):
            return np.zeros((0, 4), np.int64)
        crops = crop_squares(rgb, squares, self.crop_size)
        feeds = anonymizer_feeds(crops, (self.low, self.high), crop_landmarks(landmarks, squares) if self.takes_landmarks else None)
        batch = feeds[ANONYMIZER_INPUT]
        scale = (self.high - self.low) / 255.0
        out = self.backend.run(feeds)[ANONYMIZER_OUTPUT]
        if out.shape != batch.shape:
            raise ModelError(f"anonymizer returned shape {out.shape} for input {batch.shape}.")
        faces = np.clip((out - self.low) / scale, 0, 255).transpose(0, 2, 3, 1).astype(np.uint8)
        paste_squares(rgb, squares, faces)
        return square_bounds(squares, rgb.shape)


def apply_filter(rgb: np.ndarray, boxes: np.ndarray, config: AnonymizerConfig,
                 learned: LearnedAnonymizer | None = None, rng: np.random.Generator | None = None,
                 landmarks: np.ndarray | None = None):
    """A new frame with every face box anonymized, and the int xyxy regions that were changed."""
    out = rgb.copy()
    if config.filter == "learned":
        if learned is None:
            raise ModelError("filter 'learned' needs an anonymizer model, and none is loaded.")
        return out, learned(out, boxes, landmarks)
    regions = enlarge_boxes(boxes, config.box_enlarge, rgb.shape)
    if config.filter == "blur":
        blur(out, regions, config.blur_strength)
    elif config.filter == "mosaic":
        mosaic(out, regions, config.mosaic_cells)
    elif config.filter == "mask":
        mask(out, regions, config.mask_color)
    elif config.filter == "noise":
        noise(out, regions, config.noise_sigma, rng or np.random.default_rng(), config.blur_strength)
    else:
        raise ModelError(f"unknown filter {config.filter!r}.")
    return out, regions
