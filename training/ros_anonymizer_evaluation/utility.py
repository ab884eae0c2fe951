"""Can the action detector still see people and their actions after anonymization?

Frame-mAP@0.5 follows the JHMDB/UCF101-24 protocol: per class, every
detection of every frame is ranked by score and is a true positive when it
overlaps an unmatched ground-truth box of that class at IoU >= 0.5; the
VOC all-point AP of each class is averaged over the classes that have
ground truth. Without ground truth, the detections on raw frames are the
reference and agreement says how many of them survive anonymization.

Readers for the JHMDB, UCF101-24 and MOTChallenge layouts live here (the
runtime never imports `training/`, which has its own).
"""
from __future__ import annotations

import configparser
import pickle
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ros_anonymizer.faces import box_iou
from ros_anonymizer.media import read_video
from . import DatasetError

IOU = 0.5
VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".mov")
PERSON = "person"


@dataclass
class Clip:
    """Frames of one video, with per-frame ground truth when the dataset has it."""

    name: str
    frames: list[np.ndarray]  # RGB uint8
    boxes: list[np.ndarray] | None = None  # per frame (K, 4) xyxy
    labels: list[list[str]] | None = None  # per frame K class names ("person" when the dataset has no actions)

    @property
    def has_actions(self) -> bool:
        return self.labels is not None and any(name != PERSON for names in self.labels for name in names)


@dataclass
class Detections:
    """One frame's detections: boxes (K, 4), scores (K,), class names."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: list[str]

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), [])


# Metrics ---------------------------------------------------------------------------------

def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC all-point interpolated average precision (area under the monotone precision envelope)."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    changes = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[changes + 1] - mrec[changes]) * mpre[changes + 1]))


def frame_ap(detections: list[tuple[np.ndarray, np.ndarray]], truth: list[np.ndarray], iou: float = IOU) -> float:
    """AP over frames of one class: `detections[f]` = (boxes, scores), `truth[f]` = boxes; NaN without truth."""
    total = sum(len(t) for t in truth)
    if total == 0:
        return float("nan")
    ranked = sorted(((float(s), f, b) for f, (boxes, scores) in enumerate(detections) for b, s in zip(boxes, scores)),
                    key=lambda item: -item[0])
    used = [np.zeros(len(t), bool) for t in truth]
    hits = np.zeros(len(ranked))
    for rank, (_, frame, box) in enumerate(ranked):
        if not len(truth[frame]):
            continue
        overlap = box_iou(np.asarray(box, np.float32)[None], np.asarray(truth[frame], np.float32))[0]
        overlap[used[frame]] = -1.0
        best = int(np.argmax(overlap))
        if overlap[best] >= iou:
            used[frame][best] = True
            hits[rank] = 1
    true_positives = np.cumsum(hits)
    precision = true_positives / np.arange(1, len(ranked) + 1) if len(ranked) else np.zeros(0)
    return voc_ap(true_positives / total, precision)


def frame_map(detections: list[Detections], truth_boxes: list[np.ndarray], truth_labels: list[list[str]],
              iou: float = IOU) -> tuple[float, dict[str, float]]:
    """Mean over ground-truth classes of the per-class frame AP; returns (mAP, AP per class)."""
    classes = sorted({name for names in truth_labels for name in names})
    per_class = {}
    for name in classes:
        dets = [(d.boxes[[l == name for l in d.labels]], d.scores[[l == name for l in d.labels]]) for d in detections]
        truth = [np.asarray(b, np.float32).reshape(-1, 4)[[l == name for l in names]] for b, names in zip(truth_boxes, truth_labels)]
        per_class[name] = frame_ap(dets, truth, iou)
    return (float(np.mean(list(per_class.values()))) if per_class else float("nan")), per_class


def person_ap(detections: list[Detections], truth_boxes: list[np.ndarray], iou: float = IOU) -> float:
    """Frame AP of person boxes, whatever the action label."""
    return frame_ap([(d.boxes, d.scores) for d in detections], [np.asarray(b, np.float32).reshape(-1, 4) for b in truth_boxes], iou)


def agreement(reference: list[Detections], anonymized: list[Detections], threshold: float, iou: float = IOU) -> dict:
    """How many confident person boxes on raw frames are found again, with the same action, on anonymized frames."""
    matched = labels_same = n_ref = n_anon = 0
    for ref, anon in zip(reference, anonymized):
        ref_keep, anon_keep = ref.scores >= threshold, anon.scores >= threshold
        ref_boxes, anon_boxes = ref.boxes[ref_keep], anon.boxes[anon_keep]
        ref_labels = [l for l, k in zip(ref.labels, ref_keep) if k]
        anon_labels = [l for l, k in zip(anon.labels, anon_keep) if k]
        n_ref, n_anon = n_ref + len(ref_boxes), n_anon + len(anon_boxes)
        if not len(ref_boxes) or not len(anon_boxes):
            continue
        overlap = box_iou(ref_boxes, anon_boxes)
        used_ref, used_anon = set(), set()
        for flat in np.argsort(-overlap, axis=None):
            r, a = np.unravel_index(flat, overlap.shape)
            if overlap[r, a] < iou:
                break
            if r not in used_ref and a not in used_anon:
                used_ref.add(r)
                used_anon.add(a)
                matched += 1
                labels_same += ref_labels[r] == anon_labels[a]
    recall = matched / n_ref if n_ref else float("nan")
    precision = matched / n_anon if n_anon else float("nan")
    f1 = 2 * matched / (n_ref + n_anon) if n_ref + n_anon else float("nan")
    return {"recall": recall, "precision": precision, "f1": f1,
            "same_action": labels_same / matched if matched else float("nan"), "reference_boxes": n_ref}


# Datasets --------------------------------------------------------------------------------

def read_clip(path: Path, max_frames: int | None = None) -> list[np.ndarray]:
    frames = read_video(path, max_frames)
    if not frames:
        raise DatasetError(f"cannot decode any frame of {path}; is it a video OpenCV can read?")
    return frames


def jhmdb_clips(root: str | Path, max_frames: int | None = None) -> list[Clip]:
    """JHMDB: `<class>/<clip>.avi` with `puppet_mask/<class>/<clip>.mat`; the person box is the mask's extent."""
    import scipy.io

    root = Path(root)
    masks = sorted((root / "puppet_mask").glob("*/*.mat")) + sorted((root / "puppet_mask").glob("*/*/puppet_mask.mat"))
    clips = []
    for mask_path in masks:
        action = mask_path.parent.name if mask_path.name != "puppet_mask.mat" else mask_path.parent.parent.name
        name = mask_path.stem if mask_path.name != "puppet_mask.mat" else mask_path.parent.name
        video = _find_video([root / action / name, root / "ReCompress_Videos" / action / name])
        if video is None:
            continue
        try:
            mask = scipy.io.loadmat(str(mask_path))["part_mask"]
        except (KeyError, ValueError, NotImplementedError, OSError):
            raise DatasetError(f"{mask_path} is not a JHMDB puppet mask (a MATLAB v5 file with 'part_mask').") from None
        frames = read_clip(video, max_frames)
        boxes = []
        for t in range(min(len(frames), mask.shape[2])):
            ys, xs = np.nonzero(mask[:, :, t])
            boxes.append(np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32) if len(xs) else np.zeros((0, 4), np.float32))
        frames = frames[:len(boxes)]
        clips.append(Clip(f"jhmdb/{action}/{name}", frames, boxes, [[action] * len(b) for b in boxes]))
    if not clips:
        raise DatasetError(f"no JHMDB clip under {root} (expected <class>/<clip>.avi and puppet_mask/<class>/<clip>.mat).")
    return clips


class _AnnotationUnpickler(pickle.Unpickler):
    """Plain containers and numpy arrays only: an annotation file must not be able to run code."""

    _ALLOWED = {("numpy.core.multiarray", "scalar"), ("numpy.core.multiarray", "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"the annotation file refers to {module}.{name}, which an annotation file never needs")
        return super().find_class(module.replace("numpy.core", "numpy._core") if hasattr(np, "_core") else module, name)


def ucf24_clips(root: str | Path, max_frames: int | None = None) -> list[Clip]:
    """UCF101-24: `pyannot.pkl` (tubes: sf, ef one past the last frame, boxes x,y,w,h) and `videos/<Class>/<video>.avi`."""
    root = Path(root)
    pkl = root / "pyannot.pkl"
    try:
        with pkl.open("rb") as f:
            annotations = {str(k): v for k, v in _AnnotationUnpickler(f, encoding="latin1").load().items()}
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError) as e:
        raise DatasetError(f"cannot read the UCF101-24 annotations {pkl}: {e}.") from None
    clips = []
    for video in sorted(p for p in (root / "videos").glob("*/*") if p.suffix in VIDEO_SUFFIXES):
        key = f"{video.parent.name}/{video.stem}"
        if key not in annotations:
            continue
        frames = read_clip(video, max_frames)
        boxes = [[] for _ in frames]
        for tube in annotations[key]["annotations"]:
            xywh = np.asarray(tube["boxes"], np.float32).reshape(-1, 4)
            for frame, (x, y, w, h) in zip(range(int(tube["sf"]), int(tube["ef"])), xywh):
                if frame < len(frames):
                    boxes[frame].append((x, y, x + w, y + h))
        clips.append(Clip(f"ucf24/{key}", frames, [np.array(b, np.float32).reshape(-1, 4) for b in boxes],
                          [[video.parent.name] * len(b) for b in boxes]))
    if not clips:
        raise DatasetError(f"no annotated UCF101-24 video under {root}/videos (expected videos/<Class>/<video>.avi).")
    return clips


def mot_clips(root: str | Path, max_frames: int | None = None) -> list[Clip]:
    """MOTChallenge sequences (`<seq>/img1/*.jpg`, `gt/gt.txt`): pedestrians only, as label 'person'."""
    root = Path(root)
    clips = []
    for seq in sorted(p for p in root.iterdir() if (p / "seqinfo.ini").is_file()):
        info = configparser.ConfigParser()
        info.read(seq / "seqinfo.ini")
        images = sorted((seq / info.get("Sequence", "imDir", fallback="img1")).glob("*.jpg"))[:max_frames]
        frames = [_read_image(p) for p in images]
        try:
            gt = np.loadtxt(seq / "gt" / "gt.txt", delimiter=",", ndmin=2) if (seq / "gt" / "gt.txt").is_file() else np.zeros((0, 9))
        except ValueError:
            raise DatasetError(f"{seq / 'gt' / 'gt.txt'} is not MOTChallenge ground truth (comma-separated numbers).") from None
        boxes = []
        for image in images:
            rows = gt[(gt[:, 0] == int(image.stem)) & (gt[:, 6] == 1) & (gt[:, 7] == 1)]
            boxes.append(np.concatenate([rows[:, 2:4], rows[:, 2:4] + rows[:, 4:6]], 1).astype(np.float32).reshape(-1, 4))
        clips.append(Clip(f"mot/{seq.name}", frames, boxes, [[PERSON] * len(b) for b in boxes]))
    if not clips:
        raise DatasetError(f"no MOTChallenge sequence under {root} (expected <seq>/seqinfo.ini, img1/, gt/gt.txt).")
    return clips


def video_clip(path: str | Path, max_frames: int | None = None) -> Clip:
    """Any video without ground truth: utility is then agreement with the raw frames."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"video {path} does not exist.")
    return Clip(f"video/{path.name}", read_clip(path, max_frames))


def _read_image(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DatasetError(f"{path} is not a readable image.")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _find_video(candidates: list[Path]) -> Path | None:
    for base in candidates:
        for suffix in VIDEO_SUFFIXES:
            if base.with_suffix(suffix).is_file():
                return base.with_suffix(suffix)
    return None
