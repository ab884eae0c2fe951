"""The LFW study's per-image work, spread over processes.

dlib's ResNet runs on one thread (about 80 ms a face here), and the privacy
study embeds every original and every anonymized face, so a run is bound by
it. Each worker process holds its own dlib recognizer and reference
detector and builds each method once; a run with N workers embeds N faces
at a time. With one worker the same functions run in this process.
"""
from __future__ import annotations

import hashlib
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ros_anonymizer.media import read_image

from .judges import NaturalnessJudges, Verdict
from .naturalness import face_still_found, main_face, reference_detector, ssim_inside_outside
from .recognizer import Face, FaceRecognizer

NO_FACE = np.full(128, np.nan, np.float32)  # the embedding of a face dlib does not find


@dataclass
class Original:
    face: Face | None  # dlib's face on the original image; None: dlib finds none, the image is left out
    reference_box: np.ndarray | None  # CenterFace's face box (score >= 0.5), for naturalness


@dataclass(frozen=True)
class ProbeTask:
    key: str
    path: Path
    original: Original
    keep_image: bool  # for the sample grid
    locate: bool  # also run the located attack (embed at the original's landmarks) and the independent naturalness judges


@dataclass
class ProbeResult:
    key: str
    image: np.ndarray | None  # the output, only when keep_image
    dropped: bool  # the method published nothing
    found: np.ndarray | None  # embedding of the face dlib finds where the original was (NO_FACE: none); None: original has no face
    located: np.ndarray | None  # embedding at the original's landmarks; None: not asked
    still_found: bool | None  # CenterFace still finds the face; None: no reference face on the original
    ssim: tuple[float, float] | None  # (inside, outside) the reference box; None: no reference face or no output
    judged: Verdict | None = None  # the independent detectors and landmark judges on the output; None: not asked
    landmark_noise: float | None = None  # the 68-point predictor's own noise on the original (mirror image against image)
    mesh_noise: float | None = None  # the face mesh's own noise on the original (region moved by 2%)
    original_pose: np.ndarray | None = None  # the original's head turn and expression, read off the mesh


def content_key(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


class FaceWorkers:
    """N processes (or this one, for N = 1) that describe originals and measure anonymized probes."""

    def __init__(self, processes: int = 1, upsample: int = 0):
        self.processes = max(1, processes)
        self.upsample = upsample
        self._pool = None
        if self.processes == 1:
            _start(upsample, threads=0)
        else:  # spawn: ONNX Runtime and dlib in this process must not be forked mid-flight
            self._pool = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_start, initargs=(upsample, 1))

    def map(self, function, tasks: list):
        """Results in task order, as they complete; chunks keep inter-process traffic small."""
        if self._pool is None:
            return map(function, tasks)
        return self._pool.map(function, tasks, chunksize=max(1, min(16, len(tasks) // (8 * self.processes))))

    def describe_originals(self, paths: list[Path]):
        return self.map(describe_original, paths)

    def measure(self, method, tasks: list[ProbeTask]):
        """`method` over every probe; worker processes build their own copy of it from its recipe."""
        if self._pool is None:
            return (measure_probe(method, task, _worker["recognizer"], _worker["detector"], _worker["judges"]) for task in tasks)
        return self.map(_Measure(method.label, method.recipe()), tasks)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# What runs in each worker. ------------------------------------------------------------------

_worker: dict = {}


def _start(upsample: int, threads: int) -> None:
    _worker.update(recognizer=FaceRecognizer(upsample), detector=reference_detector(threads=threads), judges=NaturalnessJudges(),
                   threads=threads, methods={})


def describe_original(path: Path) -> Original:
    rgb = read_image(path)
    return Original(_worker["recognizer"].describe(rgb), main_face(_worker["detector"](rgb), rgb.shape))


class _Measure:
    """Picklable: the method's label and how to build it, then one probe per call."""

    def __init__(self, label: str, recipe):
        self.label, self.recipe = label, recipe

    def __call__(self, task: ProbeTask) -> ProbeResult:
        methods = _worker["methods"]
        if self.label not in methods:
            build, args = self.recipe
            methods[self.label] = build(*args, threads=_worker["threads"])
        return measure_probe(methods[self.label], task, _worker["recognizer"], _worker["detector"], _worker["judges"])


def measure_probe(method, task: ProbeTask, recognizer: FaceRecognizer, detector, judges: NaturalnessJudges) -> ProbeResult:
    """Anonymize one probe image with `method` and run every attack and naturalness check on it."""
    rgb = read_image(task.path)
    method.reset()  # each LFW image is its own scene: no face persists into the next
    image = method(rgb).image
    unchanged = image is not None and np.array_equal(image, rgb)
    original = task.original
    found = located = still_found = ssim = judged = noise = mesh_noise = original_pose = None
    if original.face is not None:
        if unchanged:
            found = original.face.embedding
        else:
            face = None if image is None else recognizer.describe(image, near=original.face.box)
            found = NO_FACE if face is None else face.embedding
        if task.locate:
            located = (original.face.embedding if unchanged else NO_FACE if image is None else
                       recognizer.embed_at(image, original.face))
            points = judges.points(rgb, original.face.box)
            noise, mesh_noise, original_pose = points.landmark_noise, points.mesh_noise, points.pose_expression
            judged = Verdict.no_output() if image is None else judges.judge(image, original.face.box, points)
    if original.reference_box is not None:
        still_found = image is not None and face_still_found(detector(image), original.reference_box)
        if image is not None:
            ssim = ssim_inside_outside(rgb, image, original.reference_box)
    return ProbeResult(task.key, image if task.keep_image else None, image is None, found, located, still_found, ssim, judged, noise,
                       mesh_noise, original_pose)
