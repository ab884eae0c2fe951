"""Which parts of a face's pose repeat across one person's photos, and so can identify them?

    python -m ros_anonymizer_training.pose_repeats --config edge --people 400

For each hold-out person with 2+ photos, the runtime's detector finds the face
on the first two, and M's template fit (models/anonymizer.py, `pose_fit`)
reads the five landmarks in the runtime's crop as centre (x, y), size, roll
and yaw. A part that is pose varies from photo to photo; a part that is the
face's proportions (where the points sit in the detector's box, how far they
spread) repeats. The table gives each part's correlation between a person's
two photos, and how often the nearest second photo by that part alone is the
person's own (rank-1; chance 1/people), which is what an attacker holding
anonymized photos of the same person could exploit if M painted it.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from tqdm import tqdm

from ros_anonymizer.config import AnonymizerConfig
from ros_anonymizer.faces import load_face_detector
from ros_anonymizer.filters import crop_landmarks, square_regions
from ros_anonymizer.media import read_image
from ros_anonymizer_evaluation.recognizer import pick_face

from .config import TrainConfig
from .models.anonymizer import LowPassAnonymizer
from .privacy_check import holdout_people

PARTS = ("x", "y", "size", "roll", "yaw")
GROUPS = {"x": ("x",), "y": ("y",), "size": ("size",), "roll": ("roll",), "yaw": ("yaw",), "x, roll, yaw (turn)": ("x", "roll", "yaw"),
          "all five (pose)": PARTS}


def pose_parts(detector, rgb: np.ndarray, box_enlarge: float) -> np.ndarray | None:
    """The photo's main face as (x, y, size, roll, yaw) in its runtime crop, or None where no face is found."""
    faces = detector(rgb)
    main = pick_face(faces.boxes, rgb.shape)
    if main is None:
        return None
    points = crop_landmarks(faces.landmarks[main:main + 1], square_regions(faces.boxes[main:main + 1], box_enlarge))
    cx, cy, a, b, yaw = (float(t) for t in LowPassAnonymizer.pose_fit(torch.from_numpy(points)))
    return np.array([cx, cy, np.hypot(a, b), np.arctan2(b, a), yaw])


def rank1(probes: np.ndarray, gallery: np.ndarray) -> float:
    """Share of probes whose nearest gallery row (standardised distance) is their own."""
    scale = gallery.std(0) + 1e-9
    distances = (((probes[:, None] - gallery[None]) / scale) ** 2).sum(-1)
    return float((distances.argmin(1) == np.arange(len(probes))).mean())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="edge", help="training preset or YAML (its faces, split and seed)")
    parser.add_argument("--people", type=int, default=400, help="hold-out people to try (those with 2+ photos)")
    args = parser.parse_args(argv)
    cfg = TrainConfig.load(args.config)
    detector = load_face_detector(AnonymizerConfig(use_gpu=False))
    pairs = []
    for probe, gallery in tqdm(holdout_people(cfg, args.people), desc="pose", unit="person"):
        parts = tuple(pose_parts(detector, read_image(path), cfg.box_enlarge) for path in (probe, gallery))
        if parts[0] is not None and parts[1] is not None:
            pairs.append(parts)
    probes, gallery = (np.array([pair[i] for pair in pairs]) for i in (0, 1))
    print(f"{len(pairs)} hold-out people, two photos each; rank-1 chance {1 / len(pairs):.1%}\n")
    print("| part | correlation between a person's two photos | spread (sd, crop units or radians) | rank-1 by it alone |")
    print("|---|---|---|---|")
    for name, group in GROUPS.items():
        columns = [PARTS.index(p) for p in group]
        corr = f"{np.corrcoef(probes[:, columns[0]], gallery[:, columns[0]])[0, 1]:+.2f}" if len(columns) == 1 else ""
        spread = f"{probes[:, columns[0]].std():.3f}" if len(columns) == 1 else ""
        print(f"| {name} | {corr} | {spread} | {rank1(probes[:, columns], gallery[:, columns]):.1%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
