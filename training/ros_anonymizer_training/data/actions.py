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
from ros_anonymizer.filters import square_regions

from ..models.action_detector import IMAGENET_NORMALIZATION, PRESETS, build_action_detector, detection_loss
from .clips import ActionClip, read_frame, read_frames
from .jhmdb import load_jhmdb
from .ucf24 import load_ucf24


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
                 face_cache: FaceBoxCache | None = None, augment: bool = False, frames: Mapping | None = None):
        self.refs = list(refs)
        self.frames = frames  # replacement RGB frames keyed by (clip name, frame), e.g. anonymized by the runtime
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.classes = tuple(classes) if classes is not None else used_classes(self.refs)
        self.face_cache = face_cache
        self.augment = augment

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, index: int) -> dict:
        ref = self.refs[index]
        clip = ref.clip
        rgb = self.frames[clip.name, ref.frame] if self.frames is not None else read_frame(clip.video, ref.frame)
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


def _square_grids(squares: torch.Tensor, size: int, height: int, width: int) -> torch.Tensor:
    """grid_sample grids [N, size, size, 2] that cut each (x, y, side) square out of a height x width image."""
    steps = (torch.arange(size, dtype=torch.float32, device=squares.device) + 0.5) / size
    xs = squares[:, 0:1] + steps[None] * squares[:, 2:3]  # pixel-edge coordinates
    ys = squares[:, 1:2] + steps[None] * squares[:, 2:3]
    gx = (2 * xs / width - 1)[:, None, :].expand(-1, size, -1)
    gy = (2 * ys / height - 1)[:, :, None].expand(-1, -1, size)
    return torch.stack([gx, gy], -1)


def _paste_grids(squares: torch.Tensor, height: int, width: int, feather: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """For every image pixel, where it falls in each square's crop ([N, H, W, 2], in [-1, 1] inside) and the
    runtime's soft elliptical mask there ([N, 1, H, W])."""
    xs = (torch.arange(width, dtype=torch.float32, device=squares.device) + 0.5)[None] - squares[:, 0:1]
    ys = (torch.arange(height, dtype=torch.float32, device=squares.device) + 0.5)[None] - squares[:, 1:2]
    u = (2 * xs / squares[:, 2:3] - 1)[:, None, :].expand(-1, height, -1)
    v = (2 * ys / squares[:, 2:3] - 1)[:, :, None].expand(-1, -1, width)
    mask = ((1 - torch.sqrt(u * u + v * v)) / feather).clamp(0, 1)
    return torch.stack([u, v], -1), mask[:, None]


def paste_anonymized(images: torch.Tensor, faces: Sequence[torch.Tensor], anonymizer, crop_size: int, box_enlarge: float) -> torch.Tensor:
    """Frames (0-255 float [B, 3, H, W]) with M's output blended over every face, differentiable w.r.t. M.

    Faces are cut and pasted as the runtime does it (`square_regions`, then
    the soft elliptical mask), with bilinear sampling so gradients reach M.
    """
    height, width = images.shape[-2:]
    owners = [i for i, f in enumerate(faces) for _ in range(len(f))]
    if not owners:
        return images
    boxes = torch.cat([torch.as_tensor(f, dtype=torch.float32).reshape(-1, 4).cpu() for f in faces]).numpy()
    squares = torch.from_numpy(square_regions(boxes, box_enlarge).astype(np.float32)).to(images.device)
    owner = torch.tensor(owners, device=images.device)
    crops = torch.nn.functional.grid_sample(images[owner], _square_grids(squares, crop_size, height, width),
                                            mode="bilinear", padding_mode="border", align_corners=False)
    modified = (anonymizer(crops / 127.5 - 1).float().clamp(-1, 1) + 1) * 127.5
    grids, masks = _paste_grids(squares, height, width)
    placed = torch.nn.functional.grid_sample(modified, grids, mode="bilinear", padding_mode="zeros", align_corners=False)
    out = images
    for face in range(len(owners)):  # in order, so overlapping faces blend as the runtime's loop does
        index = owners[face]
        blended = out[index] + (placed[face] - out[index]) * masks[face]
        out = torch.cat([out[:index], blended[None], out[index + 1:]])
    return out


class ActionTraining:
    """A, its optimiser and its frames, in the shape the trainer's `pretrain-a` and `joint` stages use.

    Reads optional trainer config fields `jhmdb_root`, `ucf24_root`, `lr_a` and
    `action_holdout` (defaults: the shared clips, 2e-3, 0.2).
    """

    def __init__(self, dataset: ActionFrames, seed: int = 0, normalization: Mapping = IMAGENET_NORMALIZATION):
        self.dataset = dataset
        self.seed = seed
        self.normalization = normalization
        self._orders: dict[int, torch.Tensor] = {}

    @classmethod
    def build(cls, cfg, device) -> tuple[torch.nn.Module, torch.optim.Optimizer, "ActionTraining"]:
        jhmdb, ucf24 = getattr(cfg, "jhmdb_root", "../shared/data/jhmdb"), getattr(cfg, "ucf24_root", "../shared/data/ucf101_24")
        clips = (load_jhmdb(jhmdb) if jhmdb else []) + (load_ucf24(ucf24) if ucf24 else [])
        train_refs, _ = holdout_split(frame_refs(clips), getattr(cfg, "action_holdout", 0.2))
        preset = cfg.preset if cfg.preset in PRESETS else "edge"
        dataset = ActionFrames(train_refs, PRESETS[preset]["input_size"], face_cache=FaceBoxCache(Path(cfg.cache_dir) / "faces"),
                               augment=cfg.augment)
        model = build_action_detector({"preset": preset, "num_classes": len(dataset.classes)}).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=getattr(cfg, "lr_a", 2e-3), weight_decay=1e-4)
        return model, optimizer, cls(dataset, cfg.seed)

    def _items(self, step: int, batch_size: int) -> list[dict]:
        """A fixed, shuffled-per-epoch order, so a resumed run sees the same batches."""
        n, start = len(self.dataset), step * batch_size
        picked = []
        for position in range(start, start + batch_size):
            epoch = position // n
            if epoch not in self._orders:
                self._orders = {epoch: torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 100003 + epoch))}
            picked.append(self.dataset[int(self._orders[epoch][position % n])])
        return picked

    def _targets(self, targets: list[dict], device) -> list[dict]:
        return [{**t, "boxes": t["boxes"].to(device), "labels": t["labels"].to(device), "faces": t["faces"].to(device)} for t in targets]

    def batch(self, step: int, batch_size: int, device) -> tuple[torch.Tensor, list[dict]]:
        """Normalised network input [B, 3, H, W] and targets (boxes in network-input pixels)."""
        images, targets = collate(self._items(step, batch_size))
        return normalize_images(images.to(device), self.normalization), self._targets(targets, device)

    def anonymized_batch(self, step: int, batch_size: int, device, anonymizer, cfg) -> tuple[torch.Tensor, list[dict]]:
        """Like `batch`, with M's output pasted over every cached CenterFace face (gradients flow into M)."""
        images, targets = collate(self._items(step, batch_size))
        pasted = paste_anonymized(images.to(device).float(), [t["faces"] for t in targets], anonymizer, cfg.crop_size, cfg.box_enlarge)
        return normalize_images(pasted, self.normalization), self._targets(targets, device)

    @staticmethod
    def loss(outputs: Mapping[str, torch.Tensor], targets: Sequence[Mapping]) -> torch.Tensor:
        return detection_loss(outputs, targets)["loss"]
