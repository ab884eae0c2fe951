"""`ros-anonymizer anonymize IN OUT`: images, folders of images and videos, without ROS."""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from .cli_args import add_config_arguments, config_from_args
from .errors import UserError
from .media import IMAGE_SUFFIXES, VIDEO_SUFFIXES, VideoReader, image_files, read_image
from .pipeline import Pipeline, failure_frame


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="an image, a folder of images, or a video")
    parser.add_argument("output", type=Path, help="output image, folder or video (same kind as the input)")
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if not args.input.exists():
        raise UserError(f"{args.input} does not exist.")
    if args.output.resolve() == args.input.resolve():
        raise UserError("the output must not be the input: anonymized files never overwrite their originals.")
    pipeline = Pipeline(config)
    if args.input.is_dir():
        stats = anonymize_folder(pipeline, args.input, args.output)
    elif args.input.suffix.lower() in VIDEO_SUFFIXES:
        stats = anonymize_video(pipeline, args.input, args.output)
    elif args.input.suffix.lower() in IMAGE_SUFFIXES:
        stats = anonymize_images(pipeline, [args.input], args.output, single=True)
    else:
        raise UserError(f"{args.input.name} is neither an image ({', '.join(sorted(IMAGE_SUFFIXES))}), "
                        f"a video ({', '.join(sorted(VIDEO_SUFFIXES))}) nor a folder.")
    print(f"{stats['written']} frames written, {stats['faces']} faces anonymized, {stats['failed']} frames dropped -> {args.output}")
    return 1 if stats["failed"] else 0


def anonymize_images(pipeline: Pipeline, paths: list[Path], output: Path, single: bool = False) -> dict:
    stats = {"written": 0, "faces": 0, "failed": 0}
    for path in tqdm(paths, desc="images", unit="img", disable=single):
        rgb = read_image(path, pipeline.config.max_image_pixels)
        target = output if single else output / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        image = _anonymize(pipeline, rgb, stats)
        if image is not None and not cv2.imwrite(str(target), image):
            raise UserError(f"cannot write {target}: choose a file name ending in a known image type such as .png.")
    return stats


def anonymize_folder(pipeline: Pipeline, folder: Path, output: Path) -> dict:
    paths = image_files(folder)
    if not paths:
        raise UserError(f"{folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    if output.exists() and not output.is_dir():
        raise UserError(f"{output} exists and is not a folder.")
    return anonymize_images(pipeline, paths, output)


def anonymize_video(pipeline: Pipeline, path: Path, output: Path) -> dict:
    video = VideoReader(path, pipeline.config.max_image_pixels)
    output.parent.mkdir(parents=True, exist_ok=True)
    fourcc = cv2.VideoWriter_fourcc(*("mp4v" if output.suffix.lower() in {".mp4", ".m4v", ".mov"} else "MJPG"))
    writer = cv2.VideoWriter(str(output), fourcc, video.fps, video.size)
    if not writer.isOpened():
        video.close()
        raise UserError(f"cannot write a video to {output}: use an .mp4 or .avi name.")
    stats = {"written": 0, "faces": 0, "failed": 0}
    try:
        for rgb in tqdm(video, total=video.frame_count, desc="video", unit="frame"):
            image = _anonymize(pipeline, rgb, stats)
            if image is not None:
                writer.write(image)
    finally:
        video.close()
        writer.release()
    return stats


def _anonymize(pipeline: Pipeline, rgb: np.ndarray, stats: dict) -> np.ndarray | None:
    """The anonymized frame (BGR, to write), the failure frame, or None; never the input."""
    result = pipeline.process(rgb)
    if result.image is None:
        stats["failed"] += 1
        tqdm.write(f"frame dropped: {result.error}")
        black = failure_frame(rgb.shape, pipeline.config)
        if black is not None:
            stats["written"] += 1
        return black
    stats["written"] += 1
    stats["faces"] += len(result.faces)
    return np.ascontiguousarray(result.image[:, :, ::-1])
