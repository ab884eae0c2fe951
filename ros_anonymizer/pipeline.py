"""One frame in, one anonymized frame (or nothing) out; no ROS in here.

`Pipeline.process` is the fail-closed boundary: whatever goes wrong inside it
(bad frame, model error, deadline miss), the result carries no image and an
error record. It never hands back the input array.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .actions import ActionDetector, Actions, load_action_detector
from .backends import load_model
from .config import AnonymizerConfig, ConfigError
from .errors import raise_if_interrupted
from .faces import Faces, FaceTracker, load_face_detector
from .filters import BUNDLED_ANONYMIZER, LearnedAnonymizer, apply_filter, bundled_model

class FrameError(ValueError):
    """A frame the pipeline cannot take (wrong type, shape or size)."""


@dataclass
class FrameResult:
    image: np.ndarray | None  # anonymized RGB frame; None: publish nothing
    faces: Faces = field(default_factory=Faces)
    regions: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int64))  # pixels that were changed
    actions: Actions = field(default_factory=Actions)
    error: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.image is not None


def failure_frame(shape: tuple[int, ...], config: AnonymizerConfig) -> np.ndarray | None:
    """What replaces a frame that could not be anonymized: a black frame, or nothing."""
    return np.zeros(shape, np.uint8) if config.on_failure == "black" else None


def check_frame(frame, max_pixels: int) -> None:
    """FrameError unless `frame` is a non-empty HxWx3 uint8 array of at most `max_pixels` (max_image_pixels)."""
    if not isinstance(frame, np.ndarray):
        raise FrameError(f"a frame must be a numpy array, not {type(frame).__name__}")
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise FrameError(f"a frame must be HxWx3 uint8 RGB, not {frame.dtype} with shape {frame.shape}")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise FrameError("the frame is empty (zero width or height)")
    if frame.shape[0] * frame.shape[1] > max_pixels:
        raise FrameError(f"the frame is {frame.shape[1]}x{frame.shape[0]}, more than max_image_pixels ({max_pixels})")


def load_anonymizer(config: AnonymizerConfig) -> LearnedAnonymizer:
    model = config.anonymizer_model or bundled_model(BUNDLED_ANONYMIZER)
    if model is None:
        raise ConfigError("filter 'learned' needs an anonymizer model: set anonymizer_model to an .onnx or .engine file "
                          "(train one with `python -m ros_anonymizer_training`), or choose another filter.")
    return LearnedAnonymizer(load_model(model, config, "anonymizer"))


class Pipeline:
    """Face detection -> persistence -> filter -> action detection, for one camera stream.

    Models are loaded here, at start-up, so a missing or broken model stops the
    program before the first frame instead of failing every frame.
    """

    def __init__(self, config: AnonymizerConfig):
        self.config = config
        self.detector = load_face_detector(config)
        self.tracker = FaceTracker(config.persist_frames, config.coast_enlarge)
        self.learned = load_anonymizer(config) if config.filter == "learned" else None
        self.action_detector = load_action_detector(config)
        self._rng = np.random.default_rng()

    @property
    def backend_name(self) -> str:
        return self.detector.backend.name

    def reconfigure(self, config: AnonymizerConfig) -> None:
        """Apply changed run-time parameters; other changes need a restart and raise ConfigError."""
        dynamic = config.dynamic_parameters()
        fixed = [k for k, v in config.to_dict().items() if v != getattr(self.config, k) and k not in dynamic]
        if fixed:
            raise ConfigError(f"{', '.join(fixed)} cannot change while running; restart with the new value.")
        learned = self.learned
        if config.filter == "learned" and learned is None:
            learned = load_anonymizer(config)
        self.detector.score_threshold = config.score_threshold
        self.detector.detection_scale = config.detection_scale
        self.detector.small_frame_height = config.small_frame_height
        self.tracker.persist_frames = config.persist_frames
        self.tracker.coast_enlarge = config.coast_enlarge
        if self.action_detector is not None:
            self.action_detector.score_threshold = config.action_threshold
        self.learned, self.config = learned, config

    def reset(self) -> None:
        """Forget face and person tracks (a new stream or a jump in time)."""
        self.tracker.reset()
        if self.action_detector is not None:
            self.action_detector.reset()

    def for_another_camera(self) -> "Pipeline":
        """A pipeline for another stream that shares this one's models (one set per process) but has its own tracks."""
        other = Pipeline.__new__(Pipeline)
        other.config, other.detector, other.learned = self.config, self.detector, self.learned
        other.tracker = FaceTracker(self.config.persist_frames, self.config.coast_enlarge)
        other.action_detector = (None if self.action_detector is None else
                                 ActionDetector(self.action_detector.backend, self.action_detector.score_threshold))
        other._rng = np.random.default_rng()
        return other

    def process(self, frame: np.ndarray, detected: Faces | None = None) -> FrameResult:
        """Anonymize one frame; `detected`: this frame's faces when the caller ran the detector (batched) already."""
        config, start = self.config, time.perf_counter()
        timings: dict[str, float] = {}

        def lap(stage: str) -> None:
            timings[stage] = (time.perf_counter() - start) * 1000.0 - sum(timings.values())

        try:
            check_frame(frame, config.max_image_pixels)
            if detected is None:
                detected = self.detector(frame)
            faces = self.tracker.update(detected, frame.shape)
            lap("faces")
            image, regions = apply_filter(frame, faces.boxes, config, self.learned, self._rng, faces.landmarks)
            lap("filter")
            actions = self.action_detector(image) if self.action_detector is not None else Actions()
            lap("actions")
            total = sum(timings.values())
            timings["total"] = total
            if config.frame_deadline_ms and total > config.frame_deadline_ms:
                return FrameResult(None, faces, regions, actions,
                                   f"deadline missed: {total:.0f} ms > {config.frame_deadline_ms:.0f} ms", timings)
            return FrameResult(image, faces, regions, actions, None, timings)
        except Exception as e:  # fail closed: every failure becomes "no frame"
            raise_if_interrupted(e)
            timings["total"] = (time.perf_counter() - start) * 1000.0
            return FrameResult(None, error=f"{type(e).__name__}: {e}", timings_ms=timings)


def process_batch(pipelines: list[Pipeline], frames: list[np.ndarray]) -> list[FrameResult]:
    """Several streams' latest frames through pipelines that share one detector (`for_another_camera`).

    Frames of one size go through the face detector as one batch; each pipeline then applies its own
    tracks, filter and actions (`process`). Fails closed like `process`: a detector failure fails every
    frame of its batch.
    """
    results: list[FrameResult | None] = [None] * len(frames)
    batches: dict = {}
    for i, frame in enumerate(frames):
        batches.setdefault(frame.shape if isinstance(frame, np.ndarray) else i, []).append(i)
    for members in batches.values():
        if len(members) == 1:
            results[members[0]] = pipelines[members[0]].process(frames[members[0]])
            continue
        detector = pipelines[members[0]].detector
        try:
            if any(pipelines[i].detector is not detector for i in members):
                raise ValueError("batched pipelines must share one detector (Pipeline.for_another_camera)")
            for i in members:
                check_frame(frames[i], pipelines[i].config.max_image_pixels)
            found = detector.detect([frames[i] for i in members])
        except Exception as e:  # fail closed, as in process()
            raise_if_interrupted(e)
            for i in members:
                results[i] = FrameResult(None, error=f"{type(e).__name__}: {e}")
            continue
        for i, faces in zip(members, found):
            results[i] = pipelines[i].process(frames[i], faces)
    return results
