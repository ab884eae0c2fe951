"""Can the action detector still see people and their actions after anonymization?

Frame-mAP@0.5 follows the JHMDB/UCF101-24 protocol: per class, every
detection of every frame is ranked by score and is a true positive when it
overlaps an unmatched ground-truth box of that class at IoU >= 0.5; the
VOC all-point AP of each class is averaged over the classes that have
ground truth. Without ground truth, the detections on raw frames are the
reference and agreement says how many of them survive anonymization.

JHMDB and UCF101-24 are read by the trainer's readers
(`ros_anonymizer_training.data`, torch-free); MOTChallenge is read here.
"""
from __future__ import annotations

import configparser
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ros_anonymizer.faces import box_iou
from ros_anonymizer.media import read_image, read_video
from ros_anonymizer_training.data.clips import read_frames
from ros_anonymizer_training.data.jhmdb import load_jhmdb
from ros_anonymizer_training.data.ucf24 import load_ucf24

from . import DatasetError

IOU = 0.5
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

def _action_clips(load, root: str | Path, max_frames: int | None, dataset: str) -> list[Clip]:
    """The trainer's reader `load` (one set of dataset readers), frames decoded and labels as class names."""
    try:
        found = load(Path(root))
    except (OSError, ValueError) as e:
        raise DatasetError(str(e)) from None
    clips = []
    for clip in found:
        frames = read_frames(clip.video, max_frames)[:clip.num_frames]
        labels = [[clip.class_names[i] for i in ids] for ids in clip.labels[:len(frames)]]
        clips.append(Clip(f"{dataset}/{clip.name}", frames, clip.boxes[:len(frames)], labels))
    return clips


def jhmdb_clips(root: str | Path, max_frames: int | None = None) -> list[Clip]:
    """JHMDB clips (the trainer's reader): one person box per frame, the puppet mask's extent."""
    return _action_clips(load_jhmdb, root, max_frames, "jhmdb")


def ucf24_clips(root: str | Path, max_frames: int | None = None) -> list[Clip]:
    """UCF101-24 videos on disk with their action tubes (the trainer's reader)."""
    return _action_clips(load_ucf24, root, max_frames, "ucf24")


def mot_clips(root: str | Path, max_frames: int | None = None) -> list[Clip]:
    """MOTChallenge sequences (`<seq>/img1/*.jpg`, `gt/gt.txt`): pedestrians only, as label 'person'."""
    root = Path(root)
    clips = []
    for seq in sorted(p for p in root.iterdir() if (p / "seqinfo.ini").is_file()):
        info = configparser.ConfigParser()
        info.read(seq / "seqinfo.ini")
        images = sorted((seq / info.get("Sequence", "imDir", fallback="img1")).glob("*.jpg"))[:max_frames]
        frames = [read_image(p) for p in images]
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
    return Clip(f"video/{path.name}", read_video(path, max_frames))
