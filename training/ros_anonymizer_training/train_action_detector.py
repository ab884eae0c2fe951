"""Train the action detector A alone, score it on held-out frames and export it (the shipped edge model).

    python -m ros_anonymizer_training.train_action_detector --out ros_anonymizer/models/action_detector_edge.onnx

Held-out frames are the last 20% of each clip's annotated frames; the score
is frame-mAP@0.5 of the exported ONNX model run through the runtime's
`ActionDetector` on the original frames (and, with `--anonymize`, on the
frames the runtime anonymized), so it measures what the robot runs.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ros_anonymizer.actions import ActionDetector
from ros_anonymizer.backends import load_backend
from ros_anonymizer.config import FILTERS, AnonymizerConfig
from ros_anonymizer_evaluation.utility import frame_ap as class_frame_ap
from ros_anonymizer.pipeline import Pipeline

from .data.actions import ActionFrames, collate, frame_refs, holdout_split, normalize_images, used_classes
from .data.clips import read_frame
from .data.jhmdb import load_jhmdb
from .data.ucf24 import load_ucf24
from .models.action_detector import IMAGENET_NORMALIZATION, PRESETS, build_action_detector, detection_loss, export_action_detector


def frame_ap(detections: list, truths: list, num_classes: int, iou: float = 0.5) -> list[float]:
    """Per-class frame-AP with the evaluation harness's metric: `detections` per frame (boxes, scores, labels),
    `truths` per frame (boxes, labels)."""
    return [class_frame_ap([(boxes[labels == c], scores[labels == c]) for boxes, scores, labels in detections],
                           [boxes[labels == c] for boxes, labels in truths], iou)
            for c in range(num_classes)]


def anonymized_frames(refs, config: AnonymizerConfig) -> dict:
    """Each frame as the robot would publish it (the runtime's Pipeline with `config`), keyed by (clip, frame).

    Frames run in clip order with a track reset between clips, as a
    recording would; a frame the pipeline drops cannot be trained on, so it
    stops the command.
    """
    pipeline = Pipeline(config.replace(use_gpu=False, frame_deadline_ms=0.0))
    frames, clip = {}, None
    for ref in sorted(refs, key=lambda r: (r.clip.name, r.frame)):
        if ref.clip is not clip:
            clip = ref.clip
            pipeline.reset()
        result = pipeline.process(read_frame(ref.clip.video, ref.frame))
        if result.image is None:
            raise RuntimeError(f"the {config.filter} pipeline dropped {ref.clip.name} frame {ref.frame}: {result.error}")
        frames[ref.clip.name, ref.frame] = result.image
    return frames


def evaluate_onnx(path: Path, refs, classes: tuple[str, ...], frames: dict | None = None) -> list[float]:
    """Frame-AP per class of an exported model, through the runtime's decode, on original frames (or `frames`)."""
    detector = ActionDetector(load_backend(path, "onnxruntime", use_gpu=False), score_threshold=0.01)
    detections, truths = [], []
    for ref in refs:
        detector.reset()
        actions = detector(frames[ref.clip.name, ref.frame] if frames is not None else read_frame(ref.clip.video, ref.frame))
        detections.append((actions.boxes, actions.scores, actions.labels))
        names = [ref.clip.class_names[label] for label in ref.clip.labels[ref.frame]]
        keep = np.array([n in classes for n in names], bool)
        truths.append((ref.clip.boxes[ref.frame][keep], np.array([classes.index(n) for n in np.array(names)[keep]], np.int64)))
    return frame_ap(detections, truths, len(classes))


def train(model, dataset, steps: int, batch_size: int, lr: float, max_minutes: float, seed: int) -> list[dict]:
    """Adam with a cosine schedule over whichever runs out first, the steps or the time budget."""
    generator = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=len(dataset) > batch_size,
                                         collate_fn=collate, generator=generator)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    start, history, step = time.time(), [], 0
    model.train()
    with tqdm(total=steps, desc="train A") as bar:
        while step < steps:
            for images, targets in loader:
                progress = max(step / steps, (time.time() - start) / (max_minutes * 60))
                if progress >= 1:
                    return history
                for group in optimizer.param_groups:
                    group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * progress))
                losses = detection_loss(model(normalize_images(images)), targets)
                optimizer.zero_grad(set_to_none=True)
                losses["loss"].backward()
                optimizer.step()
                history.append({"step": step, "time": round(time.time() - start, 1), **{k: round(float(v), 4) for k, v in losses.items()}})
                bar.set_postfix(loss=f"{history[-1]['loss']:.3f}")
                bar.update()
                step += 1
                if step >= steps:
                    break
    return history


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ros_anonymizer_training.train_action_detector", description=__doc__.splitlines()[0])
    parser.add_argument("--jhmdb", default="../shared/data/jhmdb", help="JHMDB root ('' to leave out)")
    parser.add_argument("--ucf24", default="../shared/data/ucf101_24", help="UCF101-24 root ('' to leave out)")
    parser.add_argument("--preset", default="edge", choices=sorted(PRESETS))
    parser.add_argument("--out", default="runs/action_detector/action_detector_edge.onnx", help="ONNX file to write")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--max-minutes", type=float, default=25.0, help="stop training after this long, whatever --steps says")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--holdout", type=float, default=0.2, help="fraction of each clip's annotated frames held out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--anonymize", choices=("none",) + FILTERS, default="none",
                        help="train on frames anonymized by the runtime with this filter (the paper trains A on M's output); "
                             "held-out frames are scored both raw and anonymized")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    clips = (load_jhmdb(args.jhmdb) if args.jhmdb else []) + (load_ucf24(args.ucf24) if args.ucf24 else [])
    if not clips:
        parser.error("give at least one of --jhmdb and --ucf24.")
    train_refs, held_refs = holdout_split(frame_refs(clips), args.holdout)
    classes = used_classes(train_refs)
    input_size = PRESETS[args.preset]["input_size"]
    try:
        frames = anonymized_frames(train_refs + held_refs, AnonymizerConfig(filter=args.anonymize)) if args.anonymize != "none" else None
    except RuntimeError as e:
        print(f"train_action_detector: error: {e}", file=sys.stderr)
        return 2
    dataset = ActionFrames(train_refs, input_size, classes, augment=True, frames=frames)
    model = build_action_detector({"preset": args.preset, "num_classes": len(classes)})
    history = train(model, dataset, args.steps, args.batch_size, args.lr, args.max_minutes, args.seed)

    out = Path(args.out)
    trained_on = (f"{len(clips)} clips ({', '.join(c.name for c in clips)}), {len(train_refs)} frames"
                  + (f" anonymized by the runtime's {args.anonymize} filter" if frames is not None else "") + "; "
                  f"{len(history)} steps of batch {args.batch_size}, seed {args.seed}. A pipeline demonstrator, not a general action detector.")
    check = [normalize_images(dataset[i]["image"][None]).numpy() for i in range(min(2, len(dataset)))]
    worst = export_action_detector(model, out, input_size, classes, IMAGENET_NORMALIZATION, trained_on,
                                   preset=args.preset, check_inputs=check)
    held_ap = evaluate_onnx(out, held_refs, classes)
    train_ap = evaluate_onnx(out, train_refs, classes, frames)
    report = {"classes": classes, "clips": [c.name for c in clips], "train_frames": len(train_refs),
              "held_out_frames": len(held_refs), "steps": len(history), "minutes": history[-1]["time"] / 60 if history else 0,
              "final_loss": history[-1] if history else None, "first_loss": history[0] if history else None,
              "held_out_frame_ap": dict(zip(classes, held_ap)), "held_out_frame_map": float(np.nanmean(held_ap)),
              "train_frame_map": float(np.nanmean(train_ap)), "onnx_vs_torch": worst, "bytes": out.stat().st_size,
              "anonymized_with": args.anonymize}
    if frames is not None:
        held_anonymized = evaluate_onnx(out, held_refs, classes, frames)
        report["held_out_anonymized_frame_ap"] = dict(zip(classes, held_anonymized))
        report["held_out_anonymized_frame_map"] = float(np.nanmean(held_anonymized))
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    out.with_suffix(".history.jsonl").write_text("\n".join(json.dumps(h) for h in history) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
