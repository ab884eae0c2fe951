"""Privacy and naturalness of an anonymizer on hold-out LFW people, judged by models nobody here trained.

    python -m ros_anonymizer_training.privacy_check --config edge --models runs/edge/anonymizer_edge.onnx --people 150
    python -m ros_anonymizer_training.privacy_check --config edge --models M.onnx --people 60 --sweep --chart tradeoff.png
    python -m ros_anonymizer_training.privacy_check --config edge --models M.onnx --lookalike 4   # with real strangers' faces as references
    python -m ros_anonymizer_training.privacy_check --config edge --people 400 --track-frames 8 \
        --models NEW.onnx ros_anonymizer/models/anonymizer_edge.onnx --ship NEW.onnx   # may NEW replace the bundled M (shipping.py)?

Hold-out people (identities the trainer never saw) with at least two
images: the first is anonymized (the probe), the second stays original and
joins the rank-1 gallery. For each probe the runtime's CenterFace finds the
face and the runtime's filter anonymizes the frame, then:
- privacy, dlib's ResNet (the attacker): re-identified when the anonymized
  face, embedded at the original face's box and landmarks (the attacker
  knows where it was: the located attack), lies within 0.6 of the
  original's embedding; the same when dlib must find the face itself;
  rank-1: the located embedding's nearest gallery face is the same person
  (chance: 1 / gallery size); shortlist and median rank: how high the own
  gallery photo ranks even when it is not first (in the nearest tenth,
  chance about 10%; the share of the gallery nearer than it, chance 0.5),
  the soft traits that narrow a search without naming anyone; [others]: how often the anonymized face lies
  within 0.6 of *another* person's original, the level at which a match
  says nothing of who it is (a filter that paints one generic face matches
  many people; re-id well above [others] is the person's own identity);
  parrot rank-1: the same, against a gallery anonymized by the same filter
  (the filter is public: an attacker can anonymize the photos they hold
  and match like with like);
- privacy, FaceNet (a second attacker from another lineage, aligned by
  MTCNN; ros_anonymizer_evaluation.facenet): the same located attacks,
  under FaceNet's threshold of 1.0;
- naturalness, judges no training term uses (ros_anonymizer_evaluation.judges):
  dlib's HOG and CNN face detectors, MTCNN and MediaPipe's BlazeFace find a
  face overlapping the original's, and dlib's 68 points and MediaPipe's
  468-point mesh on the output move little from the original's (mean
  distance over the inter-ocular distance; each judge's own noise on the
  original is printed beside it), the mesh scoring a face where it was;
- CenterFace, the TRAINING detector (the edge trainer's landmark term uses
  it): still finds a face; not an independent figure;
- with --track-frames K, the track attack: each probe becomes K frames of a
  person standing before the camera (the photo and K-1 copies moved, turned,
  scaled and lit a little differently, with sensor noise); dlib's located
  embeddings of the anonymized frames are averaged, as an attacker holding
  the whole track would, and compared with the raw frames' average
  (re-identified under 0.6, [others] as above; track rank-1 among all
  people's raw averages); FaceNet's the same way, its averages L2-normalised.
  One frame's attack can miss what the average finds: M's per-frame
  variations cancel and whatever it keeps of the person adds up.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ros_anonymizer.errors import UserError
from ros_anonymizer.media import read_image
from ros_anonymizer_evaluation.temporal import gallery_ranks, gallery_search, pooled_attack, shortlist_size

from .config import TrainConfig
from .data.faces import scan_identities, split_identities
from .shipping import ship_verdict

DEFAULT_BASELINES = ("blur", "mosaic")
BUNDLED = "ros_anonymizer/models/anonymizer_edge.onnx"
REFERENCES = ("lookalike", "stranger")  # --lookalike's methods: real strangers' faces, not filters
FURTHER = ("further_matched", "further_rank1", "further_parrot_rank1")  # the attacks on further photos (dlib)
SWEEP = ("blur:0.05", "blur:0.1", "blur:0.2", "mosaic:16", "mosaic:10", "mosaic:6", "noise:40", "noise:80", "noise:160", "mask")


def holdout_photos(cfg: TrainConfig, count: int) -> list[list[Path]]:
    """All photos of up to `count` hold-out people with 2+ images, in a seeded order: probe, gallery, then the further ones."""
    _, holdout = split_identities(scan_identities(cfg.faces_root), cfg)
    people = sorted(n for n, paths in holdout.items() if len(paths) >= 2)
    random.Random(cfg.split_seed).shuffle(people)
    root = Path(cfg.faces_root)
    return [[root / p for p in holdout[n]] for n in people[:count]]


def holdout_people(cfg: TrainConfig, count: int) -> list[tuple[Path, Path]]:
    """(probe, gallery image) of up to `count` hold-out people with 2+ images, in a seeded order."""
    return [(photos[0], photos[1]) for photos in holdout_photos(cfg, count)]


def track_frame(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Another frame of a person standing still: shifted up to 4 px, turned up to 4 degrees, scaled 0.93-1.07, lit 0.9-1.1, noise sigma 2."""
    import cv2

    h, w = rgb.shape[:2]
    warp = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-4, 4), rng.uniform(0.93, 1.07))
    warp[:, 2] += rng.uniform(-4, 4, 2)
    moved = cv2.warpAffine(rgb, warp, (w, h), borderMode=cv2.BORDER_REFLECT).astype(np.float32)
    return np.clip(moved * rng.uniform(0.9, 1.1) + rng.normal(0, 2, moved.shape), 0, 255).astype(np.uint8)


class Attack:
    """One recognizer's located attacks on every method, collected person by person.

    raw/gallery: the person's original probe and gallery photos; published:
    the anonymized probe, embedded where the original face was; parrot: the
    gallery photo anonymized by the same method (the filter is public, so an
    attacker can anonymize a gallery to match anonymized faces against);
    track_raw/track_published: embeddings averaged over the person's track;
    further_raw/further: the person's further photos ('person:k'), original
    and anonymized, each one more probe (`--further-photos`).
    """

    def __init__(self, recognizer, threshold: float, unit: bool, methods: dict):
        self.recognizer, self.threshold, self.unit = recognizer, threshold, unit
        self.raw, self.gallery, self.track_raw, self.further_raw = {}, {}, {}, {}
        self.published, self.parrot, self.track_published, self.further = ({name: {} for name in methods} for _ in range(4))

    def average(self, embeddings: list) -> np.ndarray:
        """A track's pooled embedding; L2-normalised again for a recognizer whose embeddings are unit vectors."""
        mean = np.mean(embeddings, 0)
        return mean / max(float(np.linalg.norm(mean)), 1e-12) if self.unit else mean

    def figures(self, name: str) -> dict:
        people = list(self.published[name])
        raw = [self.raw[p] for p in people]
        published = [self.published[name][p] for p in people]
        pooled = pooled_attack(raw, published, self.threshold)
        search, parrot = _search(self.published[name], self.gallery), _search(self.published[name], self.parrot[name])
        out = {"matched": pooled["reidentified"], "matched_others": pooled["published_matches_others"],
               "rank1": search["rank1"], "shortlist": search["shortlist"], "median_rank": search["median_rank"],
               "parrot_rank1": parrot["rank1"], "parrot_shortlist": parrot["shortlist"]}
        if self.track_published[name]:
            tracked = list(self.track_published[name])
            track = pooled_attack([self.track_raw[p] for p in tracked], [self.track_published[name][p] for p in tracked], self.threshold)
            out.update(track_matched=track["reidentified"], track_rank1=track["rank1"], track_shortlist=track["shortlist"],
                       track_impostor_match=track["impostor_match"], track_matched_others=track["published_matches_others"])
        if self.further[name]:
            photos = len(self.further[name])
            out.update(further_photos=photos, **{key: len(found) / photos for key, found in self.further_leaks(name).items()})
        return out

    def near(self, published: dict, raw: dict) -> list:
        """The keys whose anonymized embedding lies within the threshold of their original's: the located attack."""
        return [p for p in published if np.linalg.norm(np.asarray(published[p], np.float64) - raw[p]) < self.threshold]

    def further_leaks(self, name: str) -> dict:
        """Per attack on the further photos (FURTHER), the photos it finds ('person:k')."""
        photos = self.further[name]
        found = (self.near(photos, self.further_raw), _found_photos(photos, self.gallery), _found_photos(photos, self.parrot[name]))
        return dict(zip(FURTHER, found))

    def leaks(self, name: str) -> dict:
        """Per attack, the people it finds (person indices): what a shipping decision compares person by person."""
        out = {"matched": self.near(self.published[name], self.raw), "rank1": _found(self.published[name], self.gallery),
               "shortlist": _found(self.published[name], self.gallery, shortlist_size(len(self.gallery))),
               "parrot_rank1": _found(self.published[name], self.parrot[name])}
        if self.track_published[name]:
            out.update(track_matched=self.near(self.track_published[name], self.track_raw),
                       track_rank1=_found(self.track_published[name], self.track_raw))
        if self.further[name]:
            out.update(self.further_leaks(name))
        return out


def _found_photos(photos: dict, gallery: dict) -> list:
    """The photos ('person:k' -> embedding) whose person's gallery face is the nearest: `_found`'s rank-1, photo by photo."""
    return [key for key, embedding in photos.items() if _found({int(key.split(":")[0]): embedding}, gallery)]


def _ranked(probes: dict, gallery: dict) -> tuple[list, np.ndarray, list]:
    """(people searched, their distances to the gallery's faces, each one's own column); a person without a gallery face is left out."""
    owners = list(gallery)
    searched = [p for p in probes if p in gallery]
    if not searched:
        return [], np.zeros((0, 0)), []
    faces = np.array([gallery[p] for p in owners]).reshape(len(owners), -1)
    distance = np.array([np.linalg.norm(faces - probes[p], axis=1) for p in searched]).reshape(len(searched), len(owners))
    return searched, distance, [owners.index(p) for p in searched]


def _search(probes: dict, gallery: dict) -> dict:
    """gallery_search of probes (person -> embedding) among the gallery's people."""
    _, distance, own = _ranked(probes, gallery)
    return gallery_search(distance, own)


def _found(probes: dict, gallery: dict, within: int = 1) -> list:
    """The people whose own gallery face is among the `within` nearest to their probe (1: rank-1)."""
    searched, distance, own = _ranked(probes, gallery)
    if distance.shape[1] < 2:
        return []
    return [p for p, rank in zip(searched, gallery_ranks(distance, own)) if rank < within]


def measure(methods: dict, people: list[tuple[Path, Path]], samples: dict | None = None, sample_people: int = 0,
            track_frames: int = 1, further: dict[int, list[Path]] | None = None) -> dict:
    """Figures per method; with `samples`, also each method's output around the face for the first `sample_people` people;
    with `further` (person index -> their further photos), dlib's one-frame and rank-1 attacks also on those."""
    from ros_anonymizer.config import AnonymizerConfig
    from ros_anonymizer_evaluation.facenet import FACENET_THRESHOLD, FaceNetRecognizer
    from ros_anonymizer_evaluation.judges import FACE_FOUND, NaturalnessJudges, pose_expression_kept
    from ros_anonymizer_evaluation.naturalness import face_still_found, main_face, reference_detector
    from ros_anonymizer_evaluation.recognizer import DISTANCE_THRESHOLD, FaceRecognizer
    from ros_anonymizer.faces import load_face_detector
    from ros_anonymizer.filters import apply_filter

    runtime_detector = load_face_detector(AnonymizerConfig(use_gpu=False))

    def anonymize(rgb, faces, config, learned):
        """The frame as a method publishes it, given the runtime detector's faces on it (found once per frame, for every method)."""
        return rgb if config is None else apply_filter(rgb, faces.boxes, config, learned, landmarks=faces.landmarks)[0]

    reference = reference_detector()
    judges = NaturalnessJudges()
    dlib = Attack(FaceRecognizer(), DISTANCE_THRESHOLD, False, methods)
    facenet = Attack(FaceNetRecognizer(judges.mtcnn), FACENET_THRESHOLD, True, methods)
    attacks = {"": dlib, "facenet_": facenet}  # the figures' key prefixes
    keys = ("matched_dlib_detector", *FACE_FOUND, "centerface_found", "displacement", "mesh_displacement", "pose_out", "pose_in", "distance")
    counts = {name: {k: [] for k in keys} for name in methods}
    noise, mesh_noise = [], []
    rng = np.random.default_rng(0)
    for person, (path, gallery_path) in enumerate(tqdm(people, desc="privacy check", unit="person")):
        rgb, gallery_rgb = read_image(path), read_image(gallery_path)
        faces = {attack: (attack.recognizer.describe(rgb), attack.recognizer.describe(gallery_rgb)) for attack in attacks.values()}
        for attack, (_, gallery) in faces.items():
            if gallery is not None:  # the gallery holds every person the recognizer finds, as an attacker's would
                attack.gallery[person] = gallery.embedding
        original = faces[dlib][0]
        ref_box = main_face(reference(rgb), rgb.shape)
        if original is None or ref_box is None:
            continue
        points = judges.points(rgb, original.box)
        noise.append(points.landmark_noise)
        mesh_noise.append(points.mesh_noise)
        for attack, (probe, _) in faces.items():
            if probe is not None:
                attack.raw[person] = probe.embedding
        probe_faces, gallery_faces = runtime_detector(rgb), runtime_detector(gallery_rgb)
        for name, (config, learned) in methods.items():
            out = anonymize(rgb, probe_faces, config, learned)
            if samples is not None and person < sample_people:
                samples.setdefault(name, []).append(_around(out, original.box))
            published_gallery = anonymize(gallery_rgb, gallery_faces, config, learned)
            for attack, (probe, gallery) in faces.items():
                if probe is not None:
                    attack.published[name][person] = attack.recognizer.embed_at(out, probe)
                if gallery is not None:
                    attack.parrot[name][person] = attack.recognizer.embed_at(published_gallery, gallery)
            c = counts[name]
            c["distance"].append(float(np.linalg.norm(dlib.published[name][person] - original.embedding)))
            found = dlib.recognizer.describe(out, near=original.box)
            c["matched_dlib_detector"].append(found is not None and np.linalg.norm(found.embedding - original.embedding) < DISTANCE_THRESHOLD)
            verdict = judges.judge(out, original.box, points)
            for key in FACE_FOUND:
                c[key].append(getattr(verdict, key))
            c["displacement"].append(verdict.displacement)
            c["mesh_displacement"].append(verdict.mesh_displacement)
            c["pose_in"].append(points.pose_expression)
            c["pose_out"].append(verdict.pose_expression)
            c["centerface_found"].append(face_still_found(reference(out), ref_box))
        if track_frames > 1:
            _add_track(attacks.values(), person, rgb, methods, track_frames, rng, runtime_detector, anonymize)
        for k, photo in enumerate((further or {}).get(person, ()), 2):
            photo_rgb = read_image(photo)
            described = dlib.recognizer.describe(photo_rgb)
            if described is None:
                continue
            dlib.further_raw[f"{person}:{k}"] = described.embedding
            photo_faces = runtime_detector(photo_rgb)
            for name, (config, learned) in methods.items():
                dlib.further[name][f"{person}:{k}"] = dlib.recognizer.embed_at(anonymize(photo_rgb, photo_faces, config, learned), described)
    results = {}
    for name, c in counts.items():
        n = len(c["distance"])
        mean = lambda k: float(np.mean(c[k])) if c[k] else float("nan")
        results[name] = {"faces": n, "matched_dlib_detector": mean("matched_dlib_detector"), "rank1_chance": 1 / max(len(dlib.gallery), 1),
                         **{key: mean(key) for key in FACE_FOUND},
                         "landmark_displacement": float(np.median(c["displacement"])) if n else float("nan"),
                         "landmark_noise_original": float(np.median(noise)) if noise else float("nan"),
                         "mesh_displacement": float(np.median(c["mesh_displacement"])) if n else float("nan"),
                         "mesh_noise_original": float(np.median(mesh_noise)) if mesh_noise else float("nan"),
                         "kept": pose_expression_kept(c["pose_in"], c["pose_out"]),
                         "centerface_found_training_detector": mean("centerface_found"),
                         "median_distance": float(np.median(c["distance"])) if n else float("nan"),
                         "facenet_faces": len(facenet.published[name]), "facenet_rank1_chance": 1 / max(len(facenet.gallery), 1)}
        for prefix, attack in attacks.items():
            results[name].update({prefix + k: v for k, v in attack.figures(name).items()})
        results[name]["leaks"] = dlib.leaks(name)  # dlib only: the judge that decides what ships (ship_verdict)
        if track_frames > 1:
            results[name]["track_frames"] = track_frames
    return results


def _add_track(attacks, person: int, rgb, methods: dict, frames: int, rng, detect, anonymize) -> None:
    """One person's track: the photo and frames-1 moved copies, each anonymized by every method; keeps each recognizer's averages.

    The photo itself was anonymized and embedded by the one-frame attack; its embeddings open the track.
    """
    moved = [track_frame(rgb, rng) for _ in range(frames - 1)]
    tracked = [attack for attack in attacks if person in attack.raw]
    # Each recognizer's face in each moved frame; a frame where it loses the face is left out, as a tracker would lose it.
    seen = {attack: [attack.recognizer.describe(m) for m in moved] for attack in tracked}
    published = {attack: {name: [attack.published[name][person]] for name in methods} for attack in tracked}
    for index, frame in enumerate(moved):
        found = detect(frame)
        for name, (config, learned) in methods.items():
            out = anonymize(frame, found, config, learned)
            for attack, faces in seen.items():
                if faces[index] is not None:
                    published[attack][name].append(attack.recognizer.embed_at(out, faces[index]))
    for attack, faces in seen.items():
        attack.track_raw[person] = attack.average([attack.raw[person]] + [face.embedding for face in faces if face is not None])
        for name in methods:
            attack.track_published[name][person] = attack.average(published[attack][name])


def _around(rgb: np.ndarray, box: np.ndarray, size: int = 112) -> np.ndarray:
    """The face and some of its surroundings (twice the box), resized for a sample grid."""
    from ros_anonymizer.filters import crop_squares, square_regions

    return crop_squares(rgb, square_regions(box[None], 2.0), size)[0]


def sample_grid(samples: dict, path: Path) -> Path:
    """One row per person, one column per method (original | learned | blur ...), labelled, as JPEG or PNG."""
    import cv2

    names = list(samples)
    rows = [np.concatenate([samples[n][i] for n in names], 1) for i in range(min(len(v) for v in samples.values()))]
    grid = np.concatenate(rows, 0)
    header = np.full((22, grid.shape[1], 3), 255, np.uint8)
    width = grid.shape[1] // len(names)
    for i, label in enumerate(grid_labels(names)):
        cv2.putText(header, label[:18], (i * width + 4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate([header, grid], 0), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    return path


def grid_labels(names: list[str]) -> list[str]:
    """Column labels: each method's file name, or its folder where runs share a file name (every run exports anonymizer_edge.onnx)."""
    files = [name.split("/")[-1].replace(".onnx", "") for name in names]
    return [name.removeprefix("learned:").split("/")[0] if files.count(file) > 1 else file for name, file in zip(names, files)]


def baseline_config(spec: str):
    """'blur', 'blur:0.1', 'mosaic:10', 'noise:40', 'mask' -> the runtime config of that filter setting."""
    from ros_anonymizer.config import AnonymizerConfig

    kind, _, value = spec.partition(":")
    setting = {"blur": "blur_strength", "mosaic": "mosaic_cells", "noise": "noise_sigma", "mask": None}
    if kind not in setting:
        raise SystemExit(f"privacy_check: unknown baseline {spec!r}; use blur, mosaic, noise or mask, optionally with :value.")
    changes = {"filter": kind}
    if value and setting[kind]:
        changes[setting[kind]] = int(value) if kind == "mosaic" else float(value)
    return AnonymizerConfig(use_gpu=False).replace(**changes)


def lookalike_name(size: int, scale: float) -> str:
    """'lookalike:4' (a stranger's full detail over the 4x4 copy) or 'lookalike:4x0.5' (at half strength)."""
    return f"{REFERENCES[0]}:{size}" + (f"x{scale:g}" if scale != 1 else "")


def lookalike_scale(name: str) -> float:
    """The detail strength in a lookalike_name."""
    _, _, scale = name.partition(":")[2].partition("x")
    return float(scale) if scale else 1.0


def method_name(model: str) -> str:
    """'learned:<folder>/<file>': how a model's figures are named in the tables and the JSON."""
    return f"learned:{Path(model).parent.name}/{Path(model).name}"


def build_methods(models: list[str], baselines=DEFAULT_BASELINES, original: bool = True,
                  lookalike: int = 0, cfg: TrainConfig | None = None, detail_scales=(1.0,)) -> dict:
    """Method name -> (runtime config, learned anonymizer); with `lookalike` N, the stranger references (lookalike.py) too:
    a stranger's detail at each of `detail_scales` over the face's own NxN copy, and a stranger's whole crop."""
    from ros_anonymizer.backends import load_backend
    from ros_anonymizer.config import AnonymizerConfig
    from ros_anonymizer.filters import LearnedAnonymizer

    learned_config = AnonymizerConfig(use_gpu=False).replace(filter="learned")
    methods = {"original": (None, None)} if original else {}
    methods.update({spec: (baseline_config(spec), None) for spec in baselines})
    for model in models:
        learned = LearnedAnonymizer(load_backend(model, "onnxruntime", use_gpu=False))
        methods[method_name(model)] = (learned_config, learned)
    if lookalike:
        from .data.faces import load_face_splits
        from .lookalike import Lookalike

        strangers = load_face_splits(cfg).train.crops
        for scale in detail_scales:
            methods[lookalike_name(lookalike, scale)] = (learned_config, Lookalike(strangers, cfg.box_enlarge, lookalike, detail_scale=scale))
        methods[REFERENCES[1]] = (learned_config, Lookalike(strangers, cfg.box_enlarge, lookalike, whole=True))
    return methods


PRIVACY_AXES = {"matched": "re-identified by dlib, one frame (located attack)",
                "track_matched": "re-identified by dlib, embeddings averaged over a track"}


def tradeoff_chart(results: dict, path: Path, privacy: str = "matched") -> Path:
    """Re-identification (one frame, or over a track) against each independent detector's face-found share, one point per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = {name: r for name, r in results.items() if privacy in r}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    # Zoom in on the low-re-id corner: the original (always re-identified) is left above the chart.
    top = min(1.05, max(0.1, 1.15 * max((r[privacy] for name, r in results.items() if name != "original"), default=0.0)))
    bottom = -top / 20  # room for the points at zero
    line = [results[name] for name in sorted((n for n in results if n.startswith(REFERENCES[0])), key=lookalike_scale)]
    for ax, key, title in zip(axes, ("cnn_found", "hog_found"), ("dlib CNN (MMOD) finds a face", "dlib HOG finds a face")):
        if len(line) > 1:  # a stranger's detail from faint to full: the line any painter with M's input moves along
            ax.plot([r[key] for r in line], [r[privacy] for r in line], color="tab:gray", lw=1, alpha=0.6, zorder=0)
        for name, r in results.items():
            learned, reference = name.startswith("learned"), name.startswith(REFERENCES)
            ax.scatter(r[key], r[privacy], s=60 if learned else 30, marker="*" if learned else "D" if reference else "o",
                       color="tab:red" if learned else "black" if name == "original" else "tab:gray" if reference else "tab:blue")
            ax.annotate(name.split("/")[-1].replace(".onnx", ""), (r[key], r[privacy]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(f"{title} (share of outputs)")
        ax.set_xlim(-0.05, 1.05)
        ax.grid(alpha=0.3)
        ax.axvspan(0.8 if key == "hog_found" else 0.9, 1.05, ymax=(0.03 - bottom) / (top - bottom), color="tab:green", alpha=0.15)
    axes[0].set_ylabel(PRIVACY_AXES[privacy])
    axes[0].set_ylim(bottom, top)
    fig.suptitle("Privacy against naturalness, hold-out LFW people; green: the targets (re-id <= 3%, CNN >= 90% / HOG >= 80%);\n"
                 "grey diamonds: real strangers' faces (references, not filters)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def print_table(results: dict) -> None:
    """The figures as three tables: dlib's attacks with the naturalness judges, FaceNet's attacks, and the track attacks."""
    nan = float("nan")
    print(f"{'method':42s} faces  re-id(located) [others] re-id(dlib finds) rank-1 (chance) shortlist median rank parrot rank-1"
          f"  HOG found  CNN found  MTCNN found  BlazeFace found  cascade found  mesh found  landmarks (noise)  mesh (noise)"
          f"  CenterFace [training detector]")
    for name, r in results.items():  # earlier --json runs may predate a figure: shown as nan
        print(f"{name:42s} {r['faces']:5d}  {r['matched']:13.1%} [{r.get('matched_others', nan):5.1%}] {r['matched_dlib_detector']:16.1%}"
              f" {r['rank1']:6.1%} ({r['rank1_chance']:.1%}) {r.get('shortlist', nan):9.1%} {r.get('median_rank', nan):11.2f}"
              f" {r.get('parrot_rank1', nan):13.1%}  {r['hog_found']:9.1%}  {r['cnn_found']:9.1%}  {r.get('mtcnn_found', nan):11.1%}  {r.get('blazeface_found', nan):15.1%}  {r.get('cascade_found', nan):13.1%}"
              f"  {r.get('mesh_found', nan):10.1%}  {r['landmark_displacement']:9.3f} ({r['landmark_noise_original']:.3f})"
              f"  {r.get('mesh_displacement', nan):5.3f} ({r.get('mesh_noise_original', nan):.3f})  {r['centerface_found_training_detector']:9.1%}")
    print("(shortlist: the own gallery photo among the nearest tenth, chance about 10%; median rank: share of the gallery "
          "nearer than it, chance 0.50)")
    facenet = {name: r for name, r in results.items() if "facenet_matched" in r}
    if facenet:
        print("\nFaceNet (a second recognizer, MTCNN-aligned), the same located attacks")
        print(f"{'method':42s} faces  re-id [others]  rank-1 (chance)  shortlist  median rank  parrot rank-1")
        for name, r in facenet.items():
            print(f"{name:42s} {r['facenet_faces']:5d} {r['facenet_matched']:6.1%} [{r['facenet_matched_others']:5.1%}]"
                  f" {r['facenet_rank1']:7.1%} ({r['facenet_rank1_chance']:.1%}) {r['facenet_shortlist']:10.1%}"
                  f" {r['facenet_median_rank']:12.2f} {r['facenet_parrot_rank1']:14.1%}")
    tracked = {name: r for name, r in results.items() if "track_matched" in r}
    if tracked:
        first = next(iter(tracked.values()))
        print(f"\ntracks of {first['track_frames']} frames (dlib matches {first['track_impostor_match']:.1%} of pairs of different people's raw tracks)")
        print(f"{'method':42s} track re-id [others]  rank-1  shortlist  FaceNet track re-id [others]  rank-1  shortlist")
        for name, r in tracked.items():
            print(f"{name:42s} {r['track_matched']:11.1%} [{r.get('track_matched_others', nan):5.1%}] {r['track_rank1']:7.1%}"
                  f" {r.get('track_shortlist', nan):10.1%}  {r.get('facenet_track_matched', nan):19.1%}"
                  f" [{r.get('facenet_track_matched_others', nan):5.1%}] {r.get('facenet_track_rank1', nan):7.1%}"
                  f" {r.get('facenet_track_shortlist', nan):10.1%}")
    posed = {name: r for name, r in results.items() if "kept" in r}
    if posed:
        names = list(next(iter(posed.values()))["kept"])
        print("\nhead turn and expression kept: Pearson's r with the original's over the faces, read off MediaPipe's mesh "
              "(1: kept; about 0: a generic face)")
        print(f"{'method':42s} " + " ".join(f"{n:>11s}" for n in names))
        for name, r in posed.items():
            print(f"{name:42s} " + " ".join(f"{r['kept'][n]:11.2f}" for n in names))
    further = {name: r for name, r in results.items() if "further_photos" in r}
    if further:
        print("\nfurther photos of the same people (dlib; each one more probe against the same galleries)")
        print(f"{'method':42s} photos  re-id(located)  rank-1  parrot rank-1")
        for name, r in further.items():
            print(f"{name:42s} {r['further_photos']:6d} {r['further_matched']:15.1%} {r['further_rank1']:7.1%} {r['further_parrot_rank1']:14.1%}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ros_anonymizer_training.privacy_check", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="edge", help="training preset or YAML (decides the hold-out people)")
    parser.add_argument("--models", nargs="*", default=[], help="anonymizer ONNX files to compare with the baselines")
    parser.add_argument("--people", type=int, default=150, help="hold-out people (2+ images each) to use")
    parser.add_argument("--baselines", nargs="*", default=list(DEFAULT_BASELINES), help="filter settings: blur, blur:0.1, mosaic:10, noise:40, mask")
    parser.add_argument("--sweep", action="store_true", help=f"add the trade-off sweep: {', '.join(SWEEP)}")
    parser.add_argument("--track-frames", type=int, default=1, metavar="K",
                        help="also attack tracks of K frames per person (averaged embeddings); 8 takes about 4x as long")
    parser.add_argument("--lookalike", type=int, default=0, metavar="N",
                        help="also measure two references made of trained people's real faces (lookalike.py): a stranger's detail "
                        "over the face's own NxN low-pass copy (a perfect M with NxN input; the bundled M's is 4), and a stranger's whole crop")
    parser.add_argument("--lookalike-detail", type=float, nargs="+", default=[1.0], metavar="SCALE",
                        help="with --lookalike, paint the stranger's detail at each of these strengths (0: the bare copy, 1: a real face)")
    parser.add_argument("--further-photos", action="store_true",
                        help="also attack each person's further photos (beyond probe and gallery) with dlib: several times more probes, "
                             "to tell apart models that differ by a few people")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--with-results", type=Path, nargs="*", default=[],
                        help="figures of other methods from earlier --json runs on the same people, shown and charted alongside")
    parser.add_argument("--chart", type=Path, help="also draw re-identification against independent face-ness here (PNG; "
                        "with --track-frames also NAME_track.png, over tracks)")
    parser.add_argument("--grid", type=Path, help="also write a sample grid here: one row per person, one column per method")
    parser.add_argument("--grid-people", type=int, default=8, help="rows of the sample grid")
    parser.add_argument("--ship", metavar="MODEL", help="also say whether this measured model may replace the bundled one "
                        "(shipping.py's rule, person by person on dlib's attacks)")
    parser.add_argument("--bundled", default=BUNDLED, metavar="MODEL", help=f"the model --ship compares with (default {BUNDLED})")
    args = parser.parse_args(argv)
    if args.track_frames < 1:
        raise SystemExit("privacy_check: --track-frames must be 1 (no track attack) or more.")
    if args.lookalike < 0:
        raise SystemExit("privacy_check: --lookalike takes the low-pass size, 1 or more (0: no references).")
    if any(not 0 <= scale <= 2 for scale in args.lookalike_detail):
        raise SystemExit("privacy_check: --lookalike-detail takes strengths between 0 and 2 (1: a real stranger's detail).")
    cfg = TrainConfig.load(args.config)
    baselines = list(dict.fromkeys(args.baselines + (list(SWEEP) if args.sweep else [])))
    photos = holdout_photos(cfg, args.people)
    people = [(p[0], p[1]) for p in photos]
    earlier = {}
    for path in args.with_results:
        for name, r in json.loads(path.read_text()).items():
            if r.get("people") != [str(p) for p, _ in people]:
                raise SystemExit(f"privacy_check: {path} was measured on other people; use the same --config and --people.")
            earlier[name] = r
    if args.ship:  # before the measuring, which takes minutes
        known = set(earlier) | {method_name(m) for m in args.models}
        missing = list(dict.fromkeys(m for m in (args.ship, args.bundled) if method_name(m) not in known))
        if missing:
            raise SystemExit(f"privacy_check: --ship needs {' and '.join(missing)} measured: add it to --models or --with-results.")
    samples = {} if args.grid else None
    methods = build_methods(args.models, baselines, args.grid is not None or "original" not in earlier,
                            args.lookalike, cfg, args.lookalike_detail)
    methods = {name: m for name, m in methods.items() if name not in earlier or name == "original"}  # measured already
    try:
        measured = measure(methods, people, samples, args.grid_people, args.track_frames,
                           {i: p[2:] for i, p in enumerate(photos)} if args.further_photos else None)
    except UserError as e:  # a judge that cannot load says what to install
        raise SystemExit(f"privacy_check: {e}") from None
    for r in measured.values():
        r["people"] = [str(p) for p, _ in people]
    results = {**earlier, **measured}
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if args.chart:
        tradeoff_chart(results, args.chart)
        if any("track_matched" in r for r in results.values()):
            tradeoff_chart(results, args.chart.with_name(f"{args.chart.stem}_track{args.chart.suffix}"), "track_matched")
    if args.grid:
        sample_grid(samples, args.grid)
    if args.ship:
        try:
            _, lines = ship_verdict(results[method_name(args.ship)], results[method_name(args.bundled)])
        except ValueError as e:
            raise SystemExit(f"privacy_check: {e}") from None
        print(f"\nshipping rule (training/ros_anonymizer_training/shipping.py): {args.ship} against {args.bundled}")
        print("\n".join("  " + line for line in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
