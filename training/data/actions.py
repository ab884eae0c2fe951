"""Action frames for training A (and M's detection loss): image, person boxes, actions, face boxes.

Frames go through the runtime's own `letterbox`, so a box learnt here is
a box the robot decodes. Face boxes come from the runtime's CenterFace and
are computed once per video, then cached on disk (keyed by path and mtime),
because the joint stage needs them every epoch.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import cv2
import numpy as np
import torch
from tqdm import tqdm

from ros_anonymizer.actions import letterbox

from ..models.action_detector import IMAGENET_NORMALIZATION
from .clips import ActionClip, read_frame, read_frames


@dataclass(frozen=True)
class FrameRef:
    clip: ActionClip
    frame: int


def frame_refs(clips: Sequence[ActionClip], annotated_only: bool = True) -> list[FrameRef]:
    """Every frame of the clips (only those with a person box when `annotated_only`)."""
    return [FrameRef(c, f) for c in clips for f in (c.annotated_frames() if annotated_only else range(c.num_frames))]


def holdout_split(refs: Sequence[FrameRef], fraction: float = 0.2) -> tuple[list[FrameRef], list[FrameRef]]:
    """(train, held out): the last `fraction` of each clip's frames are held out.

    A contiguous tail rather than every n-th frame, since neighbouring frames
    are near copies and would make held-out scores meaningless.
    """
    train, held = [], []
    by_clip: dict[str, list[FrameRef]] = {}
    for ref in refs:
        by_clip.setdefault(ref.clip.name, []).append(ref)
    for clip_refs in by_clip.values():
        cut = len(clip_refs) - max(1, round(len(clip_refs) * fraction)) if len(clip_refs) > 1 else len(clip_refs)
        train += clip_refs[:cut]
        held += clip_refs[cut:]
    return train, held


def used_classes(refs: Sequence[FrameRef]) -> tuple[str, ...]:
    """The sorted names of the actions that occur in these frames."""
    return tuple(sorted({ref.clip.class_names[label] for ref in refs for label in ref.clip.labels[ref.frame]}))


class FaceBoxCache:
    """CenterFace face boxes of every frame of a video, computed once and kept as an .npz file.

    Action datasets are low resolution (320x240) and CenterFace misses most
    faces there, so frames are enlarged until their short side is `min_side`
    before detection (on the shared JHMDB clip: 1 of 10 frames at 240p, 6 at 480p).
    """

    def __init__(self, cache_dir: str | Path, score_threshold: float = 0.4, min_side: int = 480):
        self.cache_dir = Path(cache_dir)
        self.score_threshold = score_threshold
        self.min_side = min_side
        self._detector = None
        self._loaded: dict[str, list[np.ndarray]] = {}

    def path_for(self, video: Path) -> Path:
        video = Path(video).resolve()
        key = hashlib.sha1(f"{video}:{video.stat().st_mtime_ns}:{self.score_threshold}:{self.min_side}".encode()).hexdigest()[:20]
        return self.cache_dir / f"{video.stem}-{key}.npz"

    def boxes(self, video: Path) -> list[np.ndarray]:
        """Per frame (m, 4) float32 xyxy face boxes in frame pixels."""
        path = self.path_for(video)
        if str(path) not in self._loaded:
            if not path.is_file():
                self._compute(Path(video), path)
            with np.load(path) as data:
                frame, boxes = data["frame"], data["boxes"]
                self._loaded[str(path)] = [boxes[frame == i] for i in range(int(data["num_frames"]))]
        return self._loaded[str(path)]

    def _compute(self, video: Path, path: Path) -> None:
        if self._detector is None:
            from ros_anonymizer.backends import load_backend
            from ros_anonymizer.faces import CenterFaceDetector, centerface_onnx

            backend = load_backend(centerface_onnx(), "onnxruntime", use_gpu=torch.cuda.is_available())
            self._detector = CenterFaceDetector(backend, self.score_threshold)
        frames = read_frames(video)
        found = [self._detect(rgb) for rgb in tqdm(frames, desc=f"faces in {video.name}", leave=False)]
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp.npz")
        np.savez(temporary, num_frames=len(frames),
                 frame=np.concatenate([np.full(len(f), i, np.int64) for i, f in enumerate(found)] or [np.zeros(0, np.int64)]),
                 boxes=np.concatenate([f.boxes for f in found]).reshape(-1, 4).astype(np.float32),
                 scores=np.concatenate([f.scores for f in found]).astype(np.float32))
        temporary.replace(path)

    def _detect(self, rgb: np.ndarray):
        factor = max(1.0, self.min_side / min(rgb.shape[:2]))
        faces = self._detector(cv2.resize(rgb, None, fx=factor, fy=factor) if factor > 1 else rgb)
        faces.boxes = faces.boxes / factor
        return faces


class ActionFrames(torch.utils.data.Dataset):
    """One item per frame: the letterboxed image and its boxes in network-input pixels.

    Items are dicts: `image` uint8 [3, H, W] (RGB, letterboxed), `boxes`
    float32 [n, 4] xyxy, `labels` int64 [n] (indices into `classes`; actions
    outside `classes` are left out), `faces` float32 [m, 4] xyxy, `scale`
    (frame pixel -> input pixel) and `name` ("<clip>#<frame>").
    """

    def __init__(self, refs: Sequence[FrameRef], input_size: Sequence[int], classes: Sequence[str] | None = None,
                 face_cache: FaceBoxCache | None = None, augment: bool = False):
        self.refs = list(refs)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.classes = tuple(classes) if classes is not None else used_classes(self.refs)
        self.face_cache = face_cache
        self.augment = augment

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, index: int) -> dict:
        ref = self.refs[index]
        clip = ref.clip
        rgb = read_frame(clip.video, ref.frame)
        names = [clip.class_names[label] for label in clip.labels[ref.frame]]
        keep = np.array([name in self.classes for name in names], bool)
        boxes = clip.boxes[ref.frame][keep].copy()
        labels = np.array([self.classes.index(n) for n, k in zip(names, keep) if k], np.int64)
        faces = self.face_cache.boxes(clip.video)[ref.frame].copy() if self.face_cache else np.zeros((0, 4), np.float32)
        if self.augment and torch.rand(()) < 0.5:
            width = rgb.shape[1]
            rgb = rgb[:, ::-1]
            boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
            faces[:, [0, 2]] = width - faces[:, [2, 0]]
        padded, scale = letterbox(np.ascontiguousarray(rgb), self.input_size)
        return {"image": torch.from_numpy(padded).permute(2, 0, 1).contiguous(),
                "boxes": torch.from_numpy(boxes * scale), "labels": torch.from_numpy(labels),
                "faces": torch.from_numpy(faces * scale), "scale": scale, "name": f"{clip.name}#{ref.frame}"}


def collate(batch: Sequence[dict]) -> tuple[torch.Tensor, list[dict]]:
    """Items -> (images uint8 [B, 3, H, W], targets: one dict per image with `boxes`, `labels`, `faces`, `scale`, `name`)."""
    images = torch.stack([item["image"] for item in batch])
    targets = [{k: v for k, v in item.items() if k != "image"} for item in batch]
    return images, targets


def normalize_images(images: torch.Tensor, normalization: Mapping = IMAGENET_NORMALIZATION) -> torch.Tensor:
    """uint8 (or 0-255 float) [B, 3, H, W] -> the network input, exactly as `ros_anonymizer.actions.preprocess` makes it."""
    mean = torch.tensor(normalization["mean"], dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(normalization["std"], dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std
