"""JHMDB (Jhuang et al., ICCV 2013): one person per clip, the box of each frame is its puppet mask's extent.

Takes the official distribution unchanged, or the same files laid out flat:
- masks: `puppet_mask/<class>/<clip>/puppet_mask.mat` or `puppet_mask/<class>/<clip>.mat`
  (MATLAB v5, `part_mask` uint8 H x W x T, non-zero on the person);
- frames: `Rename_Images/<class>/<clip>/` or `<class>/<clip>/` (numbered images),
  or videos `ReCompress_Videos/<class>/<clip>.avi` or `<class>/<clip>.avi`;
- splits (optional): `splits/<class>_test_split<k>.txt`, lines `<clip>.avi 1|2` (1 train, 2 test).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from .clips import ActionClip, find_video

CLASSES = ("brush_hair", "catch", "clap", "climb_stairs", "golf", "jump", "kick_ball", "pick", "pour", "pullup", "push",
           "run", "shoot_ball", "shoot_bow", "shoot_gun", "sit", "stand", "swing_baseball", "throw", "walk", "wave")
_SUBSETS = {"train": "1", "test": "2"}


def mask_boxes(mask: np.ndarray) -> list[np.ndarray]:
    """H x W x T person mask -> per frame a (1, 4) box [x_min, y_min, x_max + 1, y_max + 1] (empty if no pixel)."""
    boxes = []
    for t in range(mask.shape[2]):
        ys, xs = np.nonzero(mask[:, :, t])
        if len(xs):
            boxes.append(np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32))
        else:
            boxes.append(np.zeros((0, 4), np.float32))
    return boxes


def read_puppet_mask(path: Path) -> np.ndarray:
    try:
        data = scipy.io.loadmat(str(path))
    except (ValueError, NotImplementedError, OSError) as e:
        raise ValueError(f"cannot read the JHMDB puppet mask {path} ({e}); it must be a MATLAB v5 file.") from None
    if "part_mask" not in data or data["part_mask"].ndim != 3:
        raise ValueError(f"{path} has no H x W x T 'part_mask' array; is it a JHMDB puppet mask?")
    return data["part_mask"]


def _mask_files(root: Path) -> list[tuple[str, str, Path]]:
    """(class, clip, mask path) for every clip with a puppet mask, in a stable order."""
    found = []
    for class_dir in sorted(p for p in (root / "puppet_mask").iterdir() if p.is_dir()):
        for entry in sorted(class_dir.iterdir()):
            if entry.is_dir() and (entry / "puppet_mask.mat").is_file():
                found.append((class_dir.name, entry.name, entry / "puppet_mask.mat"))
            elif entry.suffix == ".mat":
                found.append((class_dir.name, entry.stem, entry))
    return found


def _split_clips(root: Path, split: int, subset: str) -> set[tuple[str, str]]:
    files = sorted((root / "splits").glob(f"*_test_split{split}.txt"))
    if not files:
        raise FileNotFoundError(f"no JHMDB split files {root / 'splits'}/<class>_test_split{split}.txt; "
                                "download the official splits or load with split=None.")
    chosen = set()
    for path in files:
        action = path.name[: -len(f"_test_split{split}.txt")]
        for line in path.read_text().split("\n"):
            parts = line.split()
            if len(parts) == 2 and parts[1] == _SUBSETS[subset]:
                chosen.add((action, Path(parts[0]).stem))
    return chosen


def load_jhmdb(root: str | Path, split: int | None = None, subset: str = "train") -> list[ActionClip]:
    """Every JHMDB clip under `root` that has a mask and frames; with `split` (1-3), only its train or test part."""
    root = Path(root)
    if not (root / "puppet_mask").is_dir():
        raise FileNotFoundError(f"{root} has no puppet_mask folder; point it at the JHMDB root.")
    if subset not in _SUBSETS:
        raise ValueError(f"subset must be 'train' or 'test', not {subset!r}.")
    wanted = _split_clips(root, split, subset) if split is not None else None
    clips = []
    for action, clip, mask_path in _mask_files(root):
        if wanted is not None and (action, clip) not in wanted:
            continue
        if action not in CLASSES:
            raise ValueError(f"{mask_path}: {action!r} is not one of the 21 JHMDB classes.")
        video = find_video([root / "Rename_Images" / action / clip, root / action / clip,
                            root / "ReCompress_Videos" / action / clip])
        if video is None:
            raise FileNotFoundError(f"no frames or video for the JHMDB clip {action}/{clip} under {root}.")
        boxes = mask_boxes(read_puppet_mask(mask_path))
        label = CLASSES.index(action)
        labels = [np.full(len(b), label, np.int64) for b in boxes]
        clips.append(ActionClip(f"{action}/{clip}", video, len(boxes), boxes, labels, CLASSES))
    if not clips:
        raise FileNotFoundError(f"no JHMDB clips with both a puppet mask and frames under {root}.")
    return clips
