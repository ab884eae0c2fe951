"""`ros-anonymizer evaluate`: privacy, naturalness, utility, leaks and speed per filter, as one report.

Dataset paths default to `../shared/data/...` when that folder exists, so
`make evaluate` needs no arguments on the development machine.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from pathlib import Path

from tqdm import tqdm

from ros_anonymizer.actions import BUNDLED_MODEL, ActionDetector
from ros_anonymizer.backends import load_backend
from ros_anonymizer.errors import UserError
from ros_anonymizer.cli_args import add_config_arguments, config_from_args
from ros_anonymizer.filters import bundled_model
from .clips import ClipStudy
from .leaks import ReferenceFaces
from .methods import METHODS, PipelineMethod, build_methods, sweep_methods, trained_identities
from .privacy import LfwStudy, OriginalsCache, read_pairs, select_pairs
from .recognizer import FaceRecognizer
from .report import write_report
from .workers import FaceWorkers
from .utility import jhmdb_clips, mot_clips, ucf24_clips, video_clip

DEFAULT_DATA = Path("../shared/data")
MAP_SCORE_THRESHOLD = 0.05  # mAP ranks detections, so low-scoring ones must be kept
MAX_WORKERS = 8  # each holds dlib's and CenterFace's models (about 300 MB)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("out/evaluation"), help="folder for report.json, report.md and the plots")
    add_config_arguments(parser)
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated methods to compare (default: all of {', '.join(METHODS)})")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="folder whose lfw/, jhmdb/, ucf101_24/ and mot17_mini/ are the defaults below")
    parser.add_argument("--lfw", type=Path, help="identity dataset in LFW layout (images/<Name>/<Name>_NNNN.jpg); 'none' skips privacy")
    parser.add_argument("--pairs", type=Path, help="LFW pairs file (default: pairsDevTrain.txt or pairs.txt in --lfw)")
    parser.add_argument("--max-pairs", type=int, help="use this many pairs, half matched and half mismatched (default: all)")
    parser.add_argument("--trained-people", type=Path,
                        help="names of the LFW people a model was trained on, one a line: privacy is also reported without "
                             "their pairs (default: the names in the learned anonymizer's metadata)")
    parser.add_argument("--located-probes", type=int, default=300,
                        help="anonymized faces also attacked at their known location (the slowest attack; default 300)")
    parser.add_argument("--jhmdb", type=Path, help="JHMDB folder (<class>/<clip>.avi, puppet_mask/); 'none' skips it")
    parser.add_argument("--ucf24", type=Path, help="UCF101-24 folder (pyannot.pkl, videos/<Class>/*.avi); 'none' skips it")
    parser.add_argument("--mot", type=Path, help="MOTChallenge folder (<seq>/img1, gt/gt.txt); 'none' skips it")
    parser.add_argument("--video", type=Path, action="append", default=[], help="a clip without ground truth (repeatable)")
    parser.add_argument("--max-frames", type=int, help="read at most this many frames per clip")
    parser.add_argument("--action-model", help="action detector A (.onnx/.engine; default: the bundled one when it exists)")
    parser.add_argument("--sweep-pairs", type=int, default=200,
                        help="pairs used for the extra blur/mosaic/noise settings of the chart (0: no sweep)")
    parser.add_argument("--cache", type=Path, default=Path("~/.cache/ros_anonymizer/evaluation"),
                        help="where dlib's findings on original images are kept between runs ('none': recompute)")
    parser.add_argument("--samples", type=int, default=6, help="faces per method in the sample grid")
    parser.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, MAX_WORKERS),
                        help=f"processes for the face recognizer, which runs on one core each (default: one per core, at most {MAX_WORKERS})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    started, load_before = time.perf_counter(), os.getloadavg()
    progress = (lambda items, **kw: items) if args.no_progress else (lambda items, **kw: tqdm(items, dynamic_ncols=True, **kw))
    names = [n.strip() for n in args.methods.split(",") if n.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown or not names:
        raise UserError(f"unknown method(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(METHODS)}.")
    for option, least in (("max_pairs", 1), ("max_frames", 1), ("located_probes", 0), ("sweep_pairs", 0), ("samples", 0), ("workers", 1)):
        value = getattr(args, option)
        if value is not None and value < least:
            raise UserError(f"--{option.replace('_', '-')} must be at least {least}, not {value}.")
    config = config_from_args(args)
    notes: list[str] = []
    lfw_root, pairs_file = _lfw_paths(args)
    clips = _clips(args)
    if lfw_root is None and not clips:
        raise UserError(f"nothing to evaluate: {args.data} has no lfw/ or clip datasets; give --lfw and/or --jhmdb, --ucf24, --mot, --video.")

    methods = build_methods(names, config, notes)
    shared = next((m.pipeline for m in methods if isinstance(m, PipelineMethod)), None)
    sweeps = sweep_methods(names, config, shared) if args.sweep_pairs else []
    report = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "config": config.to_dict(), "notes": notes, "methods": []}
    rows = {m.label: {"name": m.name, "setting": m.setting, "label": m.label} for m in methods + sweeps}
    samples: dict[str, list] = {}

    if lfw_root is not None:
        _privacy(args, lfw_root, pairs_file, methods, sweeps, progress, rows, samples, report)
    else:
        notes.append("privacy and naturalness: skipped, no LFW dataset.")

    if clips:
        action_detector = _action_detector(args, config, notes)
        study = ClipStudy(clips, ReferenceFaces(), action_detector, config.action_threshold, progress, FaceRecognizer())
        report["clips"] = [{"name": c.name, "frames": len(c.frames), "size": f"{c.frames[0].shape[1]}x{c.frames[0].shape[0]}"}
                           for c in clips]
        for method in progress(methods + sweeps, desc="clips"):
            rows[method.label]["clips"] = study.run(method)
            if isinstance(method, PipelineMethod) and method.config.persist_frames:
                rows[method.label]["leaks_without_persistence"] = study.run(_without_persistence(method), measure_utility=False)["leaks"]
    else:
        notes.append("utility, leaks and speed: skipped, no clips.")

    report["methods"] = list(rows.values())
    report["duration_s"] = time.perf_counter() - started
    report["machine"] = {"cpus": os.cpu_count(), "load_before": load_before, "load_after": os.getloadavg(),
                         "description": f"{platform.machine()} {os.cpu_count()} CPUs, load average "
                                        f"{load_before[0]:.1f} at start and {os.getloadavg()[0]:.1f} at end"}
    write_report(report, samples, args.out)
    print(f"ros-anonymizer evaluate: wrote {args.out / 'report.md'} and report.json in {report['duration_s']:.0f} s.")
    return 0


def _privacy(args, root, pairs_file, methods, sweeps, progress, rows, samples, report) -> None:
    pairs = select_pairs(read_pairs(pairs_file), args.max_pairs)
    trained = _people(args.trained_people) if args.trained_people else trained_identities(methods)
    if trained and not args.trained_people:
        report["notes"].append(f"privacy: the learned anonymizer's metadata names the {len(trained)} people it was trained "
                               "against; figures without their pairs are reported as unseen_people.")
    with FaceWorkers(args.workers) as workers:
        cache = OriginalsCache(None if str(args.cache) == "none" else args.cache.expanduser() / f"lfw_originals_up{workers.upsample}.npz")
        cached = len(cache.entries)
        study = LfwStudy(root, pairs, workers, progress, cache, trained)
        report["lfw"] = {"root": str(root), "pairs_file": str(pairs_file), "pairs": len(pairs), "probes": len(study.probes),
                         "originals": len(study.originals), "originals_without_face": len(study.originals_without_face),
                         "located_probes": min(args.located_probes, len(study.probes)), "originals_cached_before": cached,
                         "trained_people": len(trained), "trained_people_file": str(args.trained_people or ""),
                         "workers": workers.processes}
        for method in progress(methods, desc="privacy"):
            result = study.run(method, args.samples, args.located_probes)
            rows[method.label]["privacy"] = result.metrics
            samples[method.label] = result.samples
        if sweeps:
            sweep_study = LfwStudy(root, select_pairs(pairs, args.sweep_pairs), workers, cache=cache)
            report["lfw"]["sweep_pairs"] = len(sweep_study.pairs)
            for method in progress(sweeps, desc="settings"):
                result = sweep_study.run(method, args.samples, args.located_probes)
                rows[method.label]["privacy"] = result.metrics
                samples[method.label] = result.samples


def _people(path: Path) -> set[str]:
    try:
        return {line.strip() for line in path.read_text().splitlines() if line.strip()}
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read the people list {path} ({e}); it must be a text file with one name a line.") from None


def _lfw_paths(args) -> tuple[Path | None, Path | None]:
    root = args.lfw or (args.data / "lfw" if (args.data / "lfw").is_dir() else None)
    if root is None or str(root) == "none":
        return None, None
    if not root.is_dir():
        raise UserError(f"LFW folder {root} does not exist.")
    pairs = args.pairs or next((root / n for n in ("pairsDevTrain.txt", "pairs.txt") if (root / n).is_file()), None)
    if pairs is None:
        raise UserError(f"no pairs file in {root}; give one with --pairs.")
    return root, pairs


def _clips(args):
    clips = []
    for option, folder, reader in (("jhmdb", "jhmdb", jhmdb_clips), ("ucf24", "ucf101_24", ucf24_clips), ("mot", "mot17_mini", mot_clips)):
        path = getattr(args, option) or (args.data / folder if (args.data / folder).is_dir() else None)
        if path is None or str(path) == "none":
            continue
        if not path.is_dir():
            raise UserError(f"--{option} folder {path} does not exist.")
        clips += reader(path, args.max_frames)
    return clips + [video_clip(v, args.max_frames) for v in args.video]


def _action_detector(args, config, notes):
    model = args.action_model or bundled_model(BUNDLED_MODEL)
    if model is None:
        notes.append(f"utility: skipped, no action detector (ros_anonymizer/models/{BUNDLED_MODEL} is missing; give --action-model).")
        return None
    detector = ActionDetector(load_backend(model, config.backend, use_gpu=False), score_threshold=MAP_SCORE_THRESHOLD)
    trained_on = detector.backend.metadata.get("trained_on", "not stated in its metadata")
    notes.append(f"utility: action detector {model} (classes {', '.join(detector.class_names)}), trained on: {trained_on.rstrip('.')}. "
                 "Compare each row with the `none` row; a detector trained on the evaluation clips flatters every row alike.")
    return detector


def _without_persistence(method):
    return PipelineMethod(method.config.replace(persist_frames=0), method.setting, method.pipeline)
