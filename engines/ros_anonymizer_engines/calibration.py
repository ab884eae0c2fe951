"""INT8 calibration on real frames: a folder of images, a video or a rosbag2 recording.

Each model is calibrated on what it sees on the robot, prepared by the runtime's
own pre-processing: whole frames for the face detector and the action
detector, CenterFace's face crops for the anonymizer. TensorRT's calibration
cache is kept beside the engines, so a rebuild does not calibrate again.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ros_anonymizer.backends.base import ModelError
from ros_anonymizer.backends.tensorrt_backend import open_cuda
from ros_anonymizer.media import VIDEO_SUFFIXES, MediaError, image_files, read_image, read_video

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")


def read_frames(source: str | Path, limit: int = 64) -> list[np.ndarray]:
    """Up to `limit` RGB frames, evenly spread over a folder of images, a video file or a rosbag2 folder."""
    source = Path(source).expanduser()
    if (source / "metadata.yaml").is_file():
        frames = _bag_frames(source, limit)
    elif source.is_dir():
        files = image_files(source, recursive=True)
        frames = [_read_image(p) for p in _spread(files, limit)]
    elif source.suffix.lower() in VIDEO_SUFFIXES:
        frames = _spread(read_video(source), limit)
    else:
        raise ModelError(f"calibration data {source} is not a folder of images, a video or a rosbag2 folder.")
    frames = [f for f in frames if f is not None]
    if not frames:
        raise ModelError(f"no readable images in calibration data {source}.")
    return frames


def _spread(items: list, limit: int) -> list:
    if len(items) <= limit:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, limit).round().astype(int)]


def _read_image(path: Path) -> np.ndarray | None:
    try:
        return read_image(path)
    except MediaError:
        return None  # one unreadable image among many does not spoil the calibration


def _bag_frames(path: Path, limit: int) -> list[np.ndarray]:
    from rclpy.serialization import deserialize_message
    from rosbags.rosbag2 import Reader
    from sensor_msgs.msg import CompressedImage, Image

    from ros_anonymizer.image_io import compressed_to_rgb, image_to_rgb

    decoders = {IMAGE_TYPES[0]: (Image, image_to_rgb), IMAGE_TYPES[1]: (CompressedImage, compressed_to_rgb)}
    with Reader(path) as reader:
        connections = [c for c in reader.connections if c.msgtype in decoders]
        raws = [(c.msgtype, raw) for c, _, raw in reader.messages(connections=connections)]
    frames = []
    for msgtype, raw in _spread(raws, limit):
        kind, decode = decoders[msgtype]
        try:
            frames.append(decode(deserialize_message(raw, kind)))
        except ValueError:
            continue  # a malformed message is no calibration data
    return frames


def model_kind(metadata: dict[str, str], input_names: list[str]) -> str:
    """'anonymizer', 'action_detector' (from metadata) or 'face_detector' (CenterFace has no metadata)."""
    from ros_anonymizer.faces import CENTERFACE_INPUT

    kind = metadata.get("model_kind") or ("face_detector" if CENTERFACE_INPUT in input_names else "")
    if kind not in ("anonymizer", "action_detector", "face_detector"):
        raise ModelError("INT8 calibration knows the face detector, the anonymizer and the action detector; "
                         "this model is none of them (no model_kind in its metadata).")
    return kind


def calibration_batches(frames: list[np.ndarray], metadata: dict[str, str], profiles: dict) -> list[dict[str, np.ndarray]]:
    """Network inputs at the profile's optimal shape (TensorRT calibrates at that shape), made the runtime's way."""
    from ros_anonymizer.filters import ANONYMIZER_INPUT, ANONYMIZER_LANDMARKS, anonymizer_feeds

    kind = model_kind(metadata, list(profiles))
    if kind == "face_detector":
        (name, (_, opt, _)), = profiles.items()
        return [{name: _padded_blob(f, opt[2], opt[3])} for f in frames]
    if kind == "action_detector":
        from ros_anonymizer.actions import preprocess

        (name, _), = profiles.items()
        return [{name: preprocess(f, metadata)[0]} for f in frames]
    crops, landmarks = face_crops(frames, int(metadata["crop_size"]), float(metadata["box_enlarge"]))
    batch = profiles[ANONYMIZER_INPUT][1][0]
    if len(crops) < batch:
        raise ModelError(f"the calibration data holds {len(crops)} faces; the anonymizer needs at least {batch}.")
    # An M that takes the detector's landmarks calibrates on the real ones.
    inputs = anonymizer_feeds(crops, json.loads(metadata["value_range"]), landmarks if ANONYMIZER_LANDMARKS in profiles else None)
    return [{k: v[i:i + batch] for k, v in inputs.items()} for i in range(0, len(crops) - batch + 1, batch)]


def _padded_blob(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """CenterFace's input as the detector makes it: scaled to fit, padded bottom/right with zeros."""
    scale = min(height / rgb.shape[0], width / rgb.shape[1])
    h, w = max(1, round(rgb.shape[0] * scale)), max(1, round(rgb.shape[1] * scale))
    blob = np.zeros((1, 3, height, width), np.float32)
    blob[0, :, :h, :w] = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)
    return blob


def face_crops(frames: list[np.ndarray], size: int, enlarge: float) -> tuple[np.ndarray, np.ndarray]:
    """Square face crops as the runtime cuts them (CenterFace boxes through ONNX Runtime, enlarged like in training), and their landmarks in the crop."""
    from ros_anonymizer.backends import load_backend
    from ros_anonymizer.faces import CenterFaceDetector, centerface_onnx
    from ros_anonymizer.filters import crop_landmarks, crop_squares, square_regions

    detector = CenterFaceDetector(load_backend(centerface_onnx(), "onnxruntime", use_gpu=False))
    crops, landmarks = [np.zeros((0, size, size, 3), np.uint8)], [np.zeros((0, 10), np.float32)]
    for frame in tqdm(frames, desc="finding faces for calibration", unit="frame"):
        faces = detector(frame)
        squares = square_regions(faces.boxes, enlarge)
        crops.append(crop_squares(frame, squares, size))
        landmarks.append(crop_landmarks(faces.landmarks, squares))
    return np.concatenate(crops), np.concatenate(landmarks)


def entropy_calibrator(trt, batches: list[dict[str, np.ndarray]], cache_file: Path):
    """A TensorRT IInt8EntropyCalibrator2 that feeds `batches` from page-locked memory and keeps its cache."""
    base = getattr(trt, "IInt8EntropyCalibrator2", None)
    if base is None:
        raise ModelError(f"{trt.__name__} has no INT8 calibration; build with --precision fp16.")
    if not batches:
        raise ModelError("no calibration batches could be made from the calibration data.")

    class EntropyCalibrator(base):
        def __init__(self):
            base.__init__(self)
            self.cuda = open_cuda()
            self.pending = iter(batches)
            self.buffers = {n: (self.cuda.pinned(a.nbytes), self.cuda.device(a.nbytes)) for n, a in batches[0].items()}

        def get_batch_size(self):
            return int(next(iter(batches[0].values())).shape[0])

        def get_batch(self, names, *_):
            batch = next(self.pending, None)
            if batch is None:
                return None
            with self.cuda:
                for name in names:
                    host, device = self.buffers[name]
                    host[:] = np.ascontiguousarray(batch[name], np.float32).view(np.uint8).reshape(-1)
                    self.cuda.to_device(device, host)
                self.cuda.synchronize()
            return [self.buffers[n][1] for n in names]

        def read_calibration_cache(self):
            return cache_file.read_bytes() if cache_file.is_file() else None

        def write_calibration_cache(self, cache):
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            cache_file.write_bytes(bytes(cache))

    return EntropyCalibrator()
