"""UCF101-24 (Soomro et al. 2012; corrected annotations by Singh et al.): action tubes from `pyannot.pkl`.

`pyannot.pkl` maps `<Class>/<video>` to `numf` (frames), `label` and
`annotations`: tubes with `sf`/`ef` (0-based first frame, one past the
last), `label` and `boxes` (x, y, w, h per frame at 320x240). Takes the
common distributions unchanged:
- annotations: `pyannot.pkl` or `splitfiles/pyannot.pkl`;
- frames: `rgb-images/<Class>/<video>/` (numbered images), or videos
  `videos/<Class>/<video>.avi`, `UCF-101/<Class>/<video>.avi`, `<Class>/<video>.avi`;
- splits (optional): `splitfiles/trainlist01.txt` / `testlist01.txt`, one `<Class>/<video>` per line.
Videos missing on disk are skipped (the annotation file covers all 3,194).
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from .clips import ActionClip, find_video

CLASSES = ("Basketball", "BasketballDunk", "Biking", "CliffDiving", "CricketBowling", "Diving", "Fencing",
           "FloorGymnastics", "GolfSwing", "HorseRiding", "IceDancing", "LongJump", "PoleVault", "RopeClimbing",
           "SalsaSpin", "SkateBoarding", "Skiing", "Skijet", "SoccerJuggling", "Surfing", "TennisSwing",
           "TrampolineJumping", "VolleyballSpiking", "WalkingWithDog")  # label ids 0-23 of the annotations
_NUMPY_GLOBALS = {("numpy.core.multiarray", "scalar"), ("numpy.core.multiarray", "_reconstruct"),
                  ("numpy", "ndarray"), ("numpy", "dtype")}


class _AnnotationUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: an annotation file must not run code."""

    def find_class(self, module, name):
        if (module, name) in _NUMPY_GLOBALS:
            module = module.replace("numpy.core", "numpy._core") if hasattr(np, "_core") else module
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"the annotation file refers to {module}.{name}, which an annotation file never needs.")


def read_annotations(path: str | Path) -> dict[str, dict]:
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = _AnnotationUnpickler(f, encoding="latin1").load()
    except (OSError, pickle.UnpicklingError, EOFError) as e:
        raise ValueError(f"cannot read the UCF101-24 annotations {path}: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a UCF101-24 pyannot.pkl (expected a mapping of videos).")
    return {str(k): v for k, v in data.items()}


def tube_frames(video: dict, num_frames: int | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """One video's tubes -> per frame boxes (n, 4) xyxy float32 and labels (n,)."""
    num_frames = int(video["numf"]) if num_frames is None else num_frames
    boxes = [[] for _ in range(num_frames)]
    labels = [[] for _ in range(num_frames)]
    for tube in video["annotations"]:
        xywh = np.asarray(tube["boxes"], np.float32).reshape(-1, 4)
        first, end = int(tube["sf"]), int(tube["ef"])
        if len(xywh) != end - first:
            raise ValueError(f"a tube has {len(xywh)} boxes for frames {first}..{end - 1}; the annotation file is damaged.")
        for frame, (x, y, w, h) in zip(range(first, end), xywh):
            if 0 <= frame < num_frames:
                boxes[frame].append((x, y, x + w, y + h))
                labels[frame].append(int(tube["label"]))
    return ([np.array(b, np.float32).reshape(-1, 4) for b in boxes], [np.array(l, np.int64) for l in labels])


def _split_videos(root: Path, split_file: str | Path) -> set[str]:
    path = Path(split_file) if Path(split_file).is_absolute() else root / split_file
    if not path.is_file():
        raise FileNotFoundError(f"UCF101-24 split file {path} does not exist.")
    return {line.strip().removesuffix(".avi") for line in path.read_text().split("\n") if line.strip()}


def load_ucf24(root: str | Path, split_file: str | Path | None = None) -> list[ActionClip]:
    """Every annotated UCF101-24 video under `root` whose frames are on disk (only those in `split_file` if given)."""
    root = Path(root)
    annotation = next((p for p in (root / "pyannot.pkl", root / "splitfiles" / "pyannot.pkl") if p.is_file()), None)
    if annotation is None:
        raise FileNotFoundError(f"no pyannot.pkl in {root} or {root / 'splitfiles'}; point it at the UCF101-24 root.")
    videos = read_annotations(annotation)
    wanted = _split_videos(root, split_file) if split_file is not None else None
    clips = []
    for name in sorted(videos):
        if wanted is not None and name not in wanted:
            continue
        action, clip = name.split("/", 1)
        video = find_video([root / "rgb-images" / action / clip, root / "videos" / action / clip,
                            root / "UCF-101" / action / clip, root / action / clip])
        if video is None:
            continue
        boxes, labels = tube_frames(videos[name])
        clips.append(ActionClip(name, video, int(videos[name]["numf"]), boxes, labels, CLASSES))
    if not clips:
        raise FileNotFoundError(f"none of the videos in {annotation} has frames or a video under {root}.")
    return clips
