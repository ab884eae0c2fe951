"""`ros-anonymizer anonymize` and `demo`: real files in, anonymized files out, plain errors."""
from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

from ros_anonymizer.cli import main
from ros_anonymizer.media import read_image, read_video


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ros_anonymizer.cli", *args], capture_output=True, text=True, timeout=120)


def test_anonymize_one_image(tmp_path, astronaut):
    src, dst = tmp_path / "in.png", tmp_path / "out.png"
    cv2.imwrite(str(src), astronaut[:, :, ::-1])
    assert main(["anonymize", str(src), str(dst), "--filter", "mask"]) == 0
    out = read_image(dst)
    assert out.shape == astronaut.shape
    assert (out[100:150, 200:250] == 0).all() and np.array_equal(out[400:], astronaut[400:])


def test_anonymize_a_folder(tmp_path, sample_faces):
    src = tmp_path / "faces"
    src.mkdir()
    for name, face in sample_faces[:3]:
        cv2.imwrite(str(src / f"{name}.jpg"), face[:, :, ::-1])
    assert main(["anonymize", str(src), str(tmp_path / "out"), "--set", "filter=mosaic"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in src.iterdir())


def test_anonymize_a_video(tmp_path, sample_clip, sample_faces):
    clip, out = tmp_path / "in.avi", tmp_path / "out.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (320, 240))
    for i, frame in enumerate(sample_clip):
        frame = frame.copy()
        frame[20:130, 150 + i:260 + i] = sample_faces[0][1][60:170, 70:180]
        writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
    writer.release()
    assert main(["anonymize", str(clip), str(out), "--filter", "mask"]) == 0
    frames = read_video(out)
    assert len(frames) == 40
    assert all((frame[40:110, 180 + i:230 + i] < 10).all() for i, frame in enumerate(frames))  # the face is masked in each


@pytest.mark.parametrize("args, message", [
    (["anonymize", "/nonexistent.png", "out.png"], "does not exist"),
    (["anonymize", "{src}", "{dst}", "--set", "filter=pixelate"], "filter must be one of"),
    (["anonymize", "{src}", "{dst}", "--set", "filter"], "KEY=VALUE"),
    (["anonymize", "{src}", "{src}"], "must not be the input"),
    (["anonymize", "{src}", "{dst}", "--set", "filter=learned", "--set", "anonymizer_model=/nope.onnx"], "does not exist"),
    (["anonymize", "{src}", "{dst}", "--config", "/nonexistent.yaml"], "cannot read config file"),
])
def test_bad_input_stops_with_one_plain_sentence(tmp_path, astronaut, args, message):
    src, dst = tmp_path / "in.png", tmp_path / "out.png"
    cv2.imwrite(str(src), astronaut[:, :, ::-1])
    done = _cli(*(a.format(src=src, dst=dst) for a in args))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not dst.exists()


def test_demo_writes_a_preview(tmp_path):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    preview = read_image(tmp_path / "preview.png")
    assert preview.shape[1] >= 4 * 300
    assert (tmp_path / "blur.png").is_file() and (tmp_path / "mask.png").is_file()


def test_one_frame_size_limit_a_4k_photo_passes_a_larger_one_is_one_sentence(tmp_path, astronaut):
    """The file tool applies max_image_pixels (4K UHD by default), like the node, bag tool and pipeline."""
    src, dst = tmp_path / "uhd.png", tmp_path / "out.png"
    cv2.imwrite(str(src), cv2.resize(astronaut, (3840, 2160))[:, :, ::-1])
    fast = ["--set", "frame_deadline_ms=0", "--set", "detection_scale=0.25"]  # a 4K frame takes seconds on 2 cores
    assert main(["anonymize", str(src), str(dst), "--filter", "mask", *fast]) == 0
    out = read_image(dst)
    assert out.shape == (2160, 3840, 3) and (out == 0).all(axis=2).mean() > 0.01  # the face was masked
    small = _cli("anonymize", str(src), str(tmp_path / "refused.png"), "--set", f"max_image_pixels={3840 * 2160 - 1}")
    assert small.returncode == 2 and "Traceback" not in small.stderr and not (tmp_path / "refused.png").exists()
    assert small.stderr.strip() == (f"ros-anonymizer anonymize: error: {src} is 3840x2160, more than max_image_pixels "
                                    f"({3840 * 2160 - 1} pixels); raise it with --set max_image_pixels=N if this size is intended.")
