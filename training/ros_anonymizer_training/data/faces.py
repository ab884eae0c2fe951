"""Faces with identity labels from any ImageFolder-style dataset (LFW, CASIA-WebFace, VGGFace2).

Crops are cut exactly as the robot cuts them: the runtime's CenterFace
detector finds the face, `ros_anonymizer.filters.square_regions` grows the
box by `box_enlarge` into a square and `crop_squares` resamples it to
`crop_size`, as the runtime's `LearnedAnonymizer` does. So the
faces M trains on are, to the pixel, the faces M sees at run time. Detection
is slow on a CPU, so the crops are computed once and cached on disk.

Identities, not images, are held out: the hold-out people are never seen by
M or D, and the privacy figures are measured on them.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ros_anonymizer.media import IMAGE_SUFFIXES, read_image


@dataclass
class FaceCrops:
    """Square RGB face crops (uint8 [N,S,S,3]) with integer identity labels and their source."""

    crops: np.ndarray
    labels: np.ndarray
    paths: list
    squares: np.ndarray  # (x, y, side) region of the source image the crop was cut from (runtime's square_regions)
    landmarks: np.ndarray  # [N,10] the detector's 5 points in the crop, 0..1 (runtime's crop_landmarks); -1 where unknown

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class FaceSplits:
    train: FaceCrops  # images of the trained identities
    val: FaceCrops  # other images of the same identities: D's accuracy on faces it did not fit
    holdout: FaceCrops  # identities nobody trained on; labels index `holdout_names`
    names: list  # identity names of train/val labels
    holdout_names: list


def scan_identities(root: str | Path) -> dict[str, list[str]]:
    """<root>/<identity>/<image> -> {identity: sorted image paths relative to root}."""
    root = Path(root)
    people = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        images = sorted(f"{folder.name}/{p.name}" for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if images:
            people[folder.name] = images
    if not people:
        raise FileNotFoundError(f"no <identity>/<image> folders with images in {root}.")
    return people


def split_identities(people: dict[str, list[str]], cfg) -> tuple[dict, dict]:
    """Seeded split (`split_seed`) into trained identities (enough images for D) and hold-out identities."""
    names = sorted(people)
    random.Random(cfg.split_seed).shuffle(names)
    n_holdout = round(len(names) * cfg.holdout_identities)
    holdout = {n: people[n] for n in names[:n_holdout]}
    trained = {n: people[n] for n in names[n_holdout:] if len(people[n]) >= cfg.min_images_per_identity}
    if cfg.max_identities:
        biggest = sorted(trained, key=lambda n: (-len(trained[n]), n))[:cfg.max_identities]
        trained = {n: trained[n] for n in sorted(biggest)}
        holdout = {n: holdout[n] for n in sorted(holdout, key=lambda n: (-len(holdout[n]), n))[:cfg.max_identities]}
    if cfg.max_images_per_identity:
        trained = {n: p[:cfg.max_images_per_identity] for n, p in trained.items()}
        holdout = {n: p[:cfg.max_images_per_identity] for n, p in holdout.items()}
    return dict(sorted(trained.items())), dict(sorted(holdout.items()))


def load_face_splits(cfg) -> FaceSplits:
    """Train/val/hold-out crops; without the image folder, the crop cache alone will do (e.g. on a GPU box)."""
    cache = CropCache(cfg)
    root = Path(cfg.faces_root)
    if root.is_dir():
        people = scan_identities(root)
    elif cache.listing:
        people = {}
        for path in cache.listing:
            people.setdefault(path.split("/")[0], []).append(path)
    else:
        raise FileNotFoundError(f"face dataset folder {root} does not exist; set faces_root to an ImageFolder-style folder (<identity>/<image>.jpg).")
    trained, holdout = split_identities(people, cfg)
    if len(trained) < 2:
        raise ValueError(f"only {len(trained)} identities in {cfg.faces_root} have {cfg.min_images_per_identity}+ images; D needs at least 2.")
    wanted = [p for paths in trained.values() for p in paths] + [p for paths in holdout.values() for p in paths]
    all_crops = cache.crops(wanted, sorted(p for paths in people.values() for p in paths))
    train, val = _per_identity(all_crops, trained, cfg.val_images_per_identity)
    held, _ = _per_identity(all_crops, holdout, 0)
    return FaceSplits(train, val, held, list(trained), list(holdout))


def _per_identity(all_crops: dict, identities: dict, n_val: int) -> tuple[FaceCrops, FaceCrops]:
    """Crops of `identities`; the last `n_val` found faces of each go to the second set."""
    parts = ([], [])
    for label, (name, paths) in enumerate(identities.items()):
        found = [p for p in paths if p in all_crops]
        for i, path in enumerate(found):
            parts[i >= len(found) - n_val if n_val else 0].append((path, label))
    return tuple(_stack(all_crops, items) for items in parts)


def _stack(all_crops: dict, items: list) -> FaceCrops:
    if not items:
        size = next(iter(all_crops.values()))[0].shape[0] if all_crops else 1
        return FaceCrops(np.zeros((0, size, size, 3), np.uint8), np.zeros(0, np.int64), [], np.zeros((0, 3), np.int64), np.zeros((0, 10), np.float32))
    crops = np.stack([all_crops[p][0] for p, _ in items])
    squares = np.stack([all_crops[p][1] for p, _ in items])
    landmarks = np.stack([all_crops[p][2] for p, _ in items])
    return FaceCrops(crops, np.array([label for _, label in items], np.int64), [p for p, _ in items], squares, landmarks)


class CropCache:
    """One compressed .npz per (dataset, crop size, enlargement, threshold): crops, their squares and landmarks, misses, the listing."""

    def __init__(self, cfg):
        self.cfg = cfg
        key = json.dumps([Path(cfg.faces_root).resolve().parent.name, Path(cfg.faces_root).name, cfg.crop_size, cfg.box_enlarge, cfg.detect_threshold,
                          "landmarks"])
        self.path = Path(cfg.cache_dir) / f"faces_{hashlib.sha1(key.encode()).hexdigest()[:12]}.npz"
        self.known: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.missed: set[str] = set()
        self.listing: list[str] = []
        if self.path.exists():
            with np.load(self.path) as data:
                for path, crop, square, marks in zip(data["paths"], data["crops"], data["squares"], data["landmarks"]):
                    self.known[str(path)] = (crop, square, marks)
                self.missed = set(map(str, data["missed"]))
                self.listing = list(map(str, data["listing"]))

    def crops(self, paths: list[str], listing: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """{relative path: (crop, square region, landmarks)} for every image of `paths` where a face was found."""
        todo = [p for p in paths if p not in self.known and p not in self.missed]
        if todo:
            cut = FaceCutter(self.cfg.crop_size, self.cfg.box_enlarge, self.cfg.detect_threshold)
            root = Path(self.cfg.faces_root)
            for path in tqdm(todo, desc="cutting face crops (CenterFace, cached)", unit="img"):
                found = cut(read_image(root / path))
                if found is None:
                    self.missed.add(path)
                else:
                    self.known[path] = found
        if todo or listing != self.listing:
            self.listing = listing
            self._save()
        return {p: self.known[p] for p in paths if p in self.known}

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp.npz")
        paths = sorted(self.known)
        crops = np.stack([self.known[p][0] for p in paths]) if paths else np.zeros((0, 1, 1, 3), np.uint8)
        squares = np.stack([self.known[p][1] for p in paths]) if paths else np.zeros((0, 3), np.int64)
        landmarks = np.stack([self.known[p][2] for p in paths]) if paths else np.zeros((0, 10), np.float32)
        np.savez_compressed(tmp, paths=np.array(paths, dtype=str), crops=crops, squares=squares, landmarks=landmarks,
                            missed=np.array(sorted(self.missed), dtype=str), listing=np.array(self.listing, dtype=str))
        tmp.replace(self.path)


class FaceCutter:
    """The runtime's detector and crop geometry: image -> (crop, square region x, y, side, landmarks in the crop) of its main face, or None."""

    def __init__(self, crop_size: int, box_enlarge: float, detect_threshold: float):
        from ros_anonymizer.config import AnonymizerConfig
        from ros_anonymizer.faces import load_face_detector

        self.detector = load_face_detector(AnonymizerConfig(score_threshold=detect_threshold, use_gpu=False))
        self.crop_size, self.box_enlarge = crop_size, box_enlarge

    def __call__(self, rgb: np.ndarray):
        from ros_anonymizer.filters import crop_landmarks, crop_squares, square_regions

        faces = self.detector(rgb)
        if not len(faces):
            return None
        main = _main_face(faces.boxes, faces.scores, rgb.shape)
        square = square_regions(faces.boxes[main:main + 1], self.box_enlarge)
        return crop_squares(rgb, square, self.crop_size)[0], square[0], crop_landmarks(faces.landmarks[main:main + 1], square)[0]


def _main_face(boxes: np.ndarray, scores: np.ndarray, shape) -> int:
    """The face the image is about: big, confident and near the centre (LFW centres the named person)."""
    centre = np.array([shape[1] / 2, shape[0] / 2])
    distance = np.linalg.norm((boxes[:, :2] + boxes[:, 2:]) / 2 - centre, axis=1) / max(shape[:2])
    size = np.sqrt(np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)) / max(shape[:2])
    return int(np.argmax(scores + size - 2 * distance))


def to_tensor(crops: np.ndarray):
    """uint8 [N,S,S,3] -> float32 [N,3,S,S] in [-1, 1], the anonymizer contract's range."""
    import torch

    return torch.from_numpy(crops).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(faces) -> np.ndarray:
    """float [N,3,S,S] in [-1, 1] -> uint8 [N,S,S,3]."""
    return ((faces.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def flip_landmarks(landmarks):
    """[N,10] crop landmarks of the mirrored crops: x -> 1 - x, left and right eye and mouth corner swap; unknown (-1) rows stay."""
    import torch

    mirrored = landmarks[:, [2, 3, 0, 1, 4, 5, 8, 9, 6, 7]].clone()
    mirrored[:, 0::2] = 1 - mirrored[:, 0::2]
    return torch.where(landmarks[:, :1] >= 0, mirrored, landmarks)
