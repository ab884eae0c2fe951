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


def test_offline_tools_have_no_frame_deadline(tmp_path, astronaut):
    """The node's deadline would drop a slow frame (a 4K photo takes seconds here); offline it is anonymized."""
    src, dst = tmp_path / "in.png", tmp_path / "out.png"
    cv2.imwrite(str(src), astronaut[:, :, ::-1])
    assert main(["anonymize", str(src), str(dst), "--filter", "mask", "--set", "frame_deadline_ms=0.01"]) == 0
    assert (cv2.imread(str(dst))[100:150, 200:250] == 0).all()


def _write_video(path, frames, fps=10):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, frames[0].shape[1::-1])
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
    writer.release()


def test_a_video_keeps_its_frame_count_with_black_frames_where_anonymization_failed(tmp_path, astronaut):
    """A real CenterFace that outputs NaN on dark frames: those frames come out black, the others anonymized, none lost."""
    from onnx_models import centerface_nan_when_dark

    model = centerface_nan_when_dark(tmp_path / "nan.onnx")
    face = cv2.resize(astronaut, (320, 320))[40:280]
    frames = [face if i not in (3, 4) else face // 8 for i in range(8)]
    src, dst = tmp_path / "in.avi", tmp_path / "out.avi"
    _write_video(src, frames)
    assert main(["anonymize", str(src), str(dst), "--filter", "mask", "--set", f"face_model={model}"]) == 1
    out = read_video(dst)
    assert len(out) == len(frames)
    assert all(out[i].max() < 20 for i in (3, 4)), "a failed frame must be black"
    assert all(out[i].mean() > 60 for i in (0, 1, 2, 5, 6, 7))


def _streams(path) -> str:
    from ros_anonymizer.file_cli import ffmpeg_executable

    return subprocess.run([ffmpeg_executable(), "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr


def test_a_video_keeps_its_audio_track(tmp_path, astronaut):
    from ros_anonymizer.file_cli import ffmpeg_executable

    face = cv2.resize(astronaut, (320, 320))[40:280]
    silent, src, dst = tmp_path / "silent.avi", tmp_path / "in.mp4", tmp_path / "out.mp4"
    _write_video(silent, [face] * 10)
    subprocess.run([ffmpeg_executable(), "-loglevel", "error", "-i", str(silent), "-f", "lavfi", "-i", "sine=frequency=440:duration=1",
                    "-c:v", "mpeg4", "-c:a", "aac", "-shortest", str(src)], check=True)
    assert "Audio:" in _streams(src)
    assert main(["anonymize", str(src), str(dst), "--filter", "mask"]) == 0
    streams = _streams(dst)
    assert "Audio:" in streams and "Video:" in streams
    out = read_video(dst)
    assert len(out) == 10 and all((frame[10:60, 120:165] < 40).all() for frame in out), "the pictures are the anonymized ones"
    assert not list(tmp_path.glob(".anonymizing-*")), "temporary files are removed"


def _photo_folder(folder, astronaut, names):
    """The astronaut photo, then photos of an empty scene: a face painted over those would be a persisted track."""
    folder.mkdir()
    empty = np.full_like(astronaut, 127)
    for i, name in enumerate(names):
        cv2.imwrite(str(folder / name), (astronaut if i == 0 else empty)[:, :, ::-1])


def test_unrelated_photos_do_not_share_face_tracks(tmp_path, astronaut):
    _photo_folder(tmp_path / "photos", astronaut, ["beach.png", "kitchen.png", "street.png"])
    assert main(["anonymize", str(tmp_path / "photos"), str(tmp_path / "out"), "--filter", "mask"]) == 0
    for name in ("kitchen.png", "street.png"):
        assert (cv2.imread(str(tmp_path / "out" / name)) == 127).all(), f"{name} got a face region from another photo"


def test_frame_sequences_keep_face_tracks(tmp_path, astronaut):
    _photo_folder(tmp_path / "frames", astronaut, ["frame_0009.png", "frame_0010.png", "frame_0011.png"])
    assert main(["anonymize", str(tmp_path / "frames"), str(tmp_path / "out"), "--filter", "mask"]) == 0
    assert (cv2.imread(str(tmp_path / "out" / "frame_0010.png")) == 0).any(), "a frame right after a face keeps it covered"
    assert main(["anonymize", str(tmp_path / "frames"), str(tmp_path / "out2"), "--filter", "mask", "--photos"]) == 0
    assert (cv2.imread(str(tmp_path / "out2" / "frame_0010.png")) == 127).all()
    _photo_folder(tmp_path / "named", astronaut, ["a.png", "b.png", "c.png"])
    assert main(["anonymize", str(tmp_path / "named"), str(tmp_path / "out3"), "--filter", "mask", "--sequence"]) == 0
    assert (cv2.imread(str(tmp_path / "out3" / "b.png")) == 0).any()
