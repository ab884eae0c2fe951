"""Identity leakage: does dlib still recognise a face after a filter has been applied?

Three attacks on the LFW pairs protocol, with one image of every pair (the
second) anonymized: re-identification against the same image's original,
verification of the pair at dlib's 0.6 threshold (50% is chance on a
balanced pairs file), and rank-1 identification against a gallery of the
other original images. A face dlib cannot find is not re-identified and is
counted separately.
"""
from __future__ import annotations

import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import DatasetError
from .judges import pose_expression_kept
from .recognizer import DISTANCE_THRESHOLD, Face
from .workers import FaceWorkers, Original, ProbeTask, content_key


@dataclass(frozen=True)
class ImageRef:
    person: str
    number: int

    @property
    def key(self) -> str:
        return f"{self.person}_{self.number:04d}"


@dataclass(frozen=True)
class Pair:
    first: ImageRef
    second: ImageRef  # the image that is anonymized

    @property
    def same(self) -> bool:
        return self.first.person == self.second.person


def read_pairs(path: str | Path) -> list[Pair]:
    """An LFW pairs file: `name i j` for a matched pair, `name1 i name2 j` for a mismatched one."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise DatasetError(f"cannot read the pairs file {path}: {e.strerror}.") from None
    pairs = []
    for number, line in enumerate(lines, 1):
        fields = line.split()
        try:
            if len(fields) == 3:
                pairs.append(Pair(ImageRef(fields[0], int(fields[1])), ImageRef(fields[0], int(fields[2]))))
            elif len(fields) == 4:
                pairs.append(Pair(ImageRef(fields[0], int(fields[1])), ImageRef(fields[2], int(fields[3]))))
            elif len(fields) > 2 or (number > 1 and fields):
                raise ValueError
        except ValueError:
            raise DatasetError(f"{path} line {number} is not an LFW pair ('name i j' or 'name1 i name2 j').") from None
    if not pairs:
        raise DatasetError(f"{path} holds no LFW pairs.")
    return pairs


def select_pairs(pairs: list[Pair], count: int | None) -> list[Pair]:
    """Up to `count` pairs, half matched and half mismatched, spread evenly over the file."""
    if count is None or count >= len(pairs):
        return pairs
    same = [p for p in pairs if p.same]
    different = [p for p in pairs if not p.same]
    n_same = min(len(same), (count + 1) // 2)
    n_diff = min(len(different), count - n_same)
    pick = lambda items, n: [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)] if n else []
    return pick(same, n_same) + pick(different, n_diff)


def image_path(root: str | Path, ref: ImageRef) -> Path:
    """LFW's `images/<Name>/<Name>_NNNN.jpg` (as shipped here) or the original `<Name>/<Name>_NNNN.jpg`."""
    root = Path(root)
    for folder in (root / "images", root):
        path = folder / ref.person / f"{ref.key}.jpg"
        if path.is_file():
            return path
    raise DatasetError(f"LFW image {ref.key}.jpg is missing under {root} (expected images/{ref.person}/{ref.key}.jpg).")


# Metrics over embeddings. A row of NaN is a face dlib did not find. -------------------------

def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Euclidean distance; NaN where either side has no face."""
    return np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64), axis=1)


def reidentified(original: np.ndarray, anonymized: np.ndarray, threshold: float = DISTANCE_THRESHOLD) -> np.ndarray:
    """Per face: is the anonymized embedding within `threshold` of its own original? (no face: False)"""
    d = distances(original, anonymized)
    return np.where(np.isnan(d), False, d < threshold)


def verification_accuracy(distance: np.ndarray, same: np.ndarray, threshold: float = DISTANCE_THRESHOLD) -> float:
    """Share of pairs judged correctly as same/different person; a pair without a face is judged 'different'."""
    predicted_same = np.where(np.isnan(distance), False, distance < threshold)
    return float(np.mean(predicted_same == np.asarray(same, bool)))


def best_threshold_accuracy(distance: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """Verification accuracy of an attacker who tunes the threshold on these very pairs: (accuracy, threshold)."""
    finite = np.sort(np.unique(distance[np.isfinite(distance)]))
    candidates = np.concatenate([[0.0], (finite[:-1] + finite[1:]) / 2, finite[-1:] + 1e-6]) if len(finite) else np.array([0.0])
    scores = [verification_accuracy(distance, same, t) for t in candidates]
    best = int(np.argmax(scores))
    return float(scores[best]), float(candidates[best])


def rank1_identification(probes: np.ndarray, probe_people: list[str], probe_keys: list[str],
                         gallery: np.ndarray, gallery_people: list[str], gallery_keys: list[str]) -> tuple[float, int]:
    """Share of probes whose nearest gallery face (other than the probe's own original) is the same person.

    Only probes whose person has another image in the gallery count; returns
    (rate, number of such probes). A probe without a face is a miss.
    """
    gallery = np.asarray(gallery, np.float64)
    people = np.array(gallery_people)
    keys = np.array(gallery_keys)
    hits, counted = 0, 0
    for embedding, person, key in zip(np.asarray(probes, np.float64), probe_people, probe_keys):
        others = keys != key
        if not np.any(others & (people == person)):
            continue
        counted += 1
        if np.isnan(embedding).any():
            continue
        d = np.linalg.norm(gallery[others] - embedding, axis=1)
        hits += people[others][int(np.argmin(d))] == person
    return (hits / counted if counted else float("nan")), counted


# The study: originals described once, then every method run over the anonymized side. -----------

@dataclass
class MethodRun:
    """What one method did to the probe images: metrics, and a few outputs for the sample grid."""

    metrics: dict
    samples: list[np.ndarray | None]


class OriginalsCache:
    """What dlib and CenterFace found on each original image, on disk, keyed by the image file's content.

    Describing the ~3,400 originals of the DevTrain pairs is the slowest part
    of a cold run; a second run (another filter, a new model) reuses them.
    """

    def __init__(self, path: Path | None):
        self.path = path
        self.entries: dict[str, Original] = {}
        if path is not None and path.is_file():
            try:
                with np.load(path) as data:
                    for i, key in enumerate(data["keys"]):
                        face = Face(data["box"][i], data["landmarks"][i], data["embedding"][i]) if data["has_face"][i] else None
                        self.entries[str(key)] = Original(face, data["reference_box"][i] if data["has_reference"][i] else None)
            except (OSError, ValueError, KeyError, zipfile.BadZipFile):
                self.entries = {}  # an unreadable cache is rebuilt, never trusted

    def save(self) -> None:
        if self.path is None or not self.entries:
            return
        keys = list(self.entries)
        values = [self.entries[k] for k in keys]
        nan = lambda *shape: np.full(shape, np.nan, np.float32)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".tmp"), "wb") as f:
            np.savez(f, keys=np.array(keys),
                     has_face=np.array([v.face is not None for v in values]),
                     box=np.array([nan(4) if v.face is None else v.face.box for v in values], np.float32),
                     landmarks=np.array([nan(5, 2) if v.face is None else v.face.landmarks for v in values], np.float32),
                     embedding=np.array([nan(128) if v.face is None else v.face.embedding for v in values], np.float32),
                     has_reference=np.array([v.reference_box is not None for v in values]),
                     reference_box=np.array([nan(4) if v.reference_box is None else v.reference_box for v in values], np.float32))
        self.path.with_suffix(".tmp").replace(self.path)


class LfwStudy:
    """LFW pairs with the second image of each pair anonymized; originals described once for all methods."""

    def __init__(self, root: str | Path, pairs: list[Pair], workers: FaceWorkers | None, progress=None,
                 cache: OriginalsCache | None = None, trained_people: set[str] | None = None):
        self.root = Path(root)
        self.pairs = pairs
        self.trained_people = trained_people or set()  # figures are also given for the pairs of the other people
        self.workers = workers
        self.progress = progress or (lambda items, **kw: items)
        cache = cache or OriginalsCache(None)
        refs = {r.key: r for p in pairs for r in (p.first, p.second)}
        self.probes = list({p.second.key: p.second for p in pairs}.values())
        self.originals = self._describe(refs, cache)
        cache.save()
        with_face = [k for k, o in self.originals.items() if o.face is not None]
        self.gallery_keys = with_face
        self.gallery_people = [refs[k].person for k in with_face]
        self.gallery = np.array([self.originals[k].face.embedding for k in with_face], np.float32).reshape(-1, 128)

    def _describe(self, refs: dict[str, ImageRef], cache: OriginalsCache) -> dict[str, Original]:
        """What dlib and CenterFace find on each original, from the cache or from the workers."""
        paths = {key: image_path(self.root, ref) for key, ref in refs.items()}
        content = {key: content_key(path) for key, path in paths.items()}
        missing = list(dict.fromkeys(c for c in content.values() if c not in cache.entries))
        if missing:
            first_path = {c: paths[k] for k, c in reversed(content.items())}
            described = self.workers.describe_originals([first_path[c] for c in missing])
            for c, original in zip(missing, self.progress(described, desc="originals", total=len(missing))):
                cache.entries[c] = original
        return {key: cache.entries[c] for key, c in content.items()}

    @property
    def originals_without_face(self) -> list[str]:
        return sorted(k for k, o in self.originals.items() if o.face is None)

    def run(self, method, samples: int = 0, located_probes: int | None = None) -> MethodRun:
        """Anonymize every probe with `method` and measure it; the located attack runs on the first `located_probes`."""
        start = time.perf_counter()
        tasks, located_left = [], len(self.probes) if located_probes is None else located_probes
        for index, ref in enumerate(self.probes):
            original = self.originals[ref.key]
            locate = original.face is not None and located_left > 0
            located_left -= locate
            tasks.append(ProbeTask(ref.key, image_path(self.root, ref), original, index < samples, locate))
        found_by_dlib, located, kept, dropped = {}, {}, [], 0
        still_found, ssim_face, ssim_rest, judged, noise, mesh_noise, original_pose = [], [], [], [], [], [], []
        for task, result in zip(tasks, self.progress(self.workers.measure(method, tasks), desc=method.label,
                                                     total=len(tasks), leave=False)):
            if task.keep_image:
                kept.append(result.image)
            dropped += result.dropped
            if result.found is not None:
                found_by_dlib[result.key] = result.found
            if result.located is not None:
                located[result.key] = result.located
            if result.still_found is not None:
                still_found.append(result.still_found)
            if result.ssim is not None:
                ssim_face.append(result.ssim[0])
                ssim_rest.append(result.ssim[1])
            if result.judged is not None:
                judged.append(result.judged)
                noise.append(result.landmark_noise)
                mesh_noise.append(result.mesh_noise)
                original_pose.append(result.original_pose)
        metrics = self._privacy(found_by_dlib, self.pairs)
        metrics["located_attack"] = self._located(located)
        if self.trained_people:
            unseen = lambda key: key.rsplit("_", 1)[0] not in self.trained_people
            pairs = [p for p in self.pairs if unseen(p.first.key) and unseen(p.second.key)]
            metrics["unseen_people"] = self._privacy({k: v for k, v in found_by_dlib.items() if unseen(k)}, pairs)
            metrics["unseen_people"]["located_attack"] = self._located({k: v for k, v in located.items() if unseen(k)})
        metrics["dropped_images"] = int(dropped)
        displacement = [v.displacement for v in judged if np.isfinite(v.displacement)]
        mesh_displacement = [v.mesh_displacement for v in judged if np.isfinite(v.mesh_displacement)]
        metrics["naturalness"] = {
            "judged_faces": len(judged),  # the located probes: dlib's detectors and landmarks, which no training term uses
            "dlib_cnn_found": _mean([v.cnn_found for v in judged]),
            "dlib_hog_found": _mean([v.hog_found for v in judged]),
            "mtcnn_found": _mean([v.mtcnn_found for v in judged]),
            "blazeface_found": _mean([v.blazeface_found for v in judged]),
            "cascade_found": _mean([v.cascade_found for v in judged]),
            "mesh_found": _mean([v.mesh_found for v in judged]),
            "landmark_displacement": float(np.median(displacement)) if displacement else float("nan"),
            "landmark_noise_original": float(np.median(noise)) if noise else float("nan"),
            "mesh_displacement": float(np.median(mesh_displacement)) if mesh_displacement else float("nan"),
            "mesh_noise_original": float(np.median(mesh_noise)) if mesh_noise else float("nan"),
            "kept": pose_expression_kept(original_pose, [v.pose_expression for v in judged]),  # Pearson's r with the original's, read off the mesh
            "images": len(still_found),
            "face_still_found": _mean(still_found),  # CenterFace: the runtime's and the trainer's detector, not independent
            "ssim_face": _mean(ssim_face),
            "ssim_outside": _mean(ssim_rest),
        }
        metrics["seconds"] = round(time.perf_counter() - start, 1)
        return MethodRun(metrics, kept)

    def _located(self, located: dict[str, np.ndarray]) -> dict:
        keys = list(located)
        probes = np.array([located[k] for k in keys], np.float32).reshape(-1, 128)
        return {"faces": len(keys), "reidentification": self._reidentification(keys, probes)}

    def _reidentification(self, keys: list[str], probes: np.ndarray) -> float:
        originals = np.array([self.originals[k].face.embedding for k in keys], np.float32).reshape(-1, 128)
        return float(np.mean(reidentified(originals, probes))) if keys else float("nan")

    def _privacy(self, anonymized: dict[str, np.ndarray], pairs: list[Pair]) -> dict:
        keys = list(anonymized)
        probes = np.array([anonymized[k] for k in keys], np.float32).reshape(-1, 128)
        people = [k.rsplit("_", 1)[0] for k in keys]
        pairs = [p for p in pairs if self.originals[p.first.key].face is not None and p.second.key in anonymized]
        pair_distance = np.array([distances(self.originals[p.first.key].face.embedding[None],
                                            anonymized[p.second.key][None])[0] for p in pairs])
        same = np.array([p.same for p in pairs], bool)
        best_accuracy, best_threshold = best_threshold_accuracy(pair_distance, same)
        rank1, rank1_probes = rank1_identification(probes, people, keys, self.gallery, self.gallery_people, self.gallery_keys)
        return {
            "faces": len(keys),
            "reidentification": self._reidentification(keys, probes),
            "no_face_found": float(np.mean(np.isnan(probes[:, 0]))) if keys else float("nan"),
            "pairs": len(pairs),
            "verification_accuracy": verification_accuracy(pair_distance, same) if pairs else float("nan"),
            "verification_chance": float(np.mean(~same)) if pairs else float("nan"),  # calling every pair "different"
            "verification_accuracy_tuned": best_accuracy,
            "verification_tuned_threshold": best_threshold,
            "rank1_identification": rank1,
            "rank1_probes": rank1_probes,
        }


def _mean(values: list) -> float:
    return float(np.mean(values)) if values else float("nan")
