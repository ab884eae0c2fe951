"""The rule a candidate M must pass to replace the bundled one, person by person on privacy_check's figures.

Two runs of one recipe differ by a few people in 177 on every attack, so
comparing shares invites choosing noise. The rule compares the same people
under both models (privacy_check's per-person `leaks`, dlib's attacks only:
FaceNet and MTCNN stay judges that chose nothing) and puts privacy first:

1. Naturalness floor (issue 10's targets): dlib's CNN finds a face in at
   least 90% of the outputs and HOG in at least 80%.
2. No attack finds more people: for each of one frame, rank-1, parrot
   rank-1, track re-id and track rank-1, the people found only under the
   candidate may exceed those found only under the bundled model by at most
   `MARGIN` (one person: the spread of reruns); for the shortlist, whose
   counts are ten times larger, by `SHORTLIST_MARGIN` of the people.
3. A gain: landmark displacement lower by `POSE_GAIN`, or some attack
   finding at least two people fewer.
"""
from __future__ import annotations

FIGURES = {"matched": "one frame", "rank1": "rank-1", "parrot_rank1": "parrot rank-1", "shortlist": "shortlist",
           "track_matched": "track re-id", "track_rank1": "track rank-1"}
CNN_FLOOR, HOG_FLOOR = 0.90, 0.80
MARGIN = 1  # people
SHORTLIST_MARGIN = 0.02  # of the people
POSE_GAIN = 0.005  # inter-ocular distances


def ship_verdict(candidate: dict, bundled: dict) -> tuple[bool, list[str]]:
    """(whether `candidate` may replace `bundled`, one line per check): both are privacy_check results on the same people."""
    if "leaks" not in candidate or "leaks" not in bundled:
        raise ValueError("both models need privacy_check's per-person leaks (measured since 1 Dec): measure them again.")
    lines, fails, gains = [], 0, 0
    for key, floor, judge in (("cnn_found", CNN_FLOOR, "dlib CNN"), ("hog_found", HOG_FLOOR, "dlib HOG")):
        ok = candidate[key] >= floor
        fails += not ok
        lines.append(f"{'ok  ' if ok else 'FAIL'} {judge} finds a face in {candidate[key]:.1%} (floor {floor:.0%}; bundled {bundled[key]:.1%})")
    people = candidate["faces"]
    for key, label in FIGURES.items():
        if key not in candidate["leaks"] or key not in bundled["leaks"]:
            continue
        mine, theirs = set(candidate["leaks"][key]), set(bundled["leaks"][key])
        worse = len(mine - theirs) - len(theirs - mine)
        margin = max(MARGIN, round(SHORTLIST_MARGIN * people)) if key == "shortlist" else MARGIN
        ok = worse <= margin
        fails += not ok
        gains += worse <= -2
        lines.append(f"{'ok  ' if ok else 'FAIL'} {label}: {len(mine)} people against {len(theirs)} "
                     f"({len(mine - theirs)} only under the candidate, {len(theirs - mine)} only under the bundled; margin {margin})")
    pose = bundled["landmark_displacement"] - candidate["landmark_displacement"]
    gains += pose >= POSE_GAIN
    lines.append(f"{'gain' if pose >= POSE_GAIN else '    '} landmark displacement {candidate['landmark_displacement']:.3f} "
                 f"against {bundled['landmark_displacement']:.3f}")
    ships = not fails and gains > 0
    lines.append("SHIPS: it may replace the bundled model" if ships else
                 "does not ship: " + ("it fails a check above" if fails else "no gain over the bundled model"))
    return ships, lines
