"""The things compared: `none`, each runtime filter (through the real Pipeline) and deface's own output.

Every method maps an RGB frame to an `Output`, so the metrics never need to
know which one produced it. Runtime filters go through `Pipeline.process`,
so the evaluation measures exactly what the robot publishes, dropped frames
included.
"""
from __future__ import annotations

import contextlib
import io
import json
import time
from dataclasses import dataclass, field

import numpy as np

from ros_anonymizer.config import FILTERS, AnonymizerConfig
from ros_anonymizer.filters import BUNDLED_ANONYMIZER, bundled_model
from ros_anonymizer.pipeline import Pipeline

DEFACE_THRESHOLD = 0.2  # deface's command-line defaults
DEFACE_MASK_SCALE = 1.3
METHODS = ("none",) + FILTERS + ("deface",)


@dataclass
class Output:
    image: np.ndarray | None  # None: the method published nothing for this frame
    timings_ms: dict[str, float] = field(default_factory=dict)
    error: str | None = None


class Method:
    """A named way of turning a frame into what would be published."""

    name: str
    setting: dict

    @property
    def label(self) -> str:
        return self.name + "".join(f" {k}={v}" for k, v in self.setting.items())

    def __call__(self, rgb: np.ndarray) -> Output:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget tracks between unrelated images or clips."""

    def recipe(self) -> tuple:
        """(build, args), picklable: `build(*args, threads=n)` makes this method again in a worker process."""
        return _rebuild, (type(self),)


class Unchanged(Method):
    """The raw frame: the privacy floor and the utility ceiling."""

    name, setting = "none", {}

    def __call__(self, rgb: np.ndarray) -> Output:
        return Output(rgb.copy(), {"total": 0.0})


class PipelineMethod(Method):
    """A runtime filter through the real Pipeline (detection, persistence, filter).

    Methods that differ only in run-time parameters share one Pipeline,
    reconfigured when another method takes over (as `ros2 param set` would
    on the robot): one CenterFace session for all of them instead of one
    each, and each session's buffers grow by about 400 MB on 1080p frames.
    """

    def __init__(self, config: AnonymizerConfig, setting: dict | None = None, pipeline: Pipeline | None = None):
        self.name = config.filter
        self.setting = setting or {}
        self.config = config
        if pipeline is None:
            pipeline = Pipeline(config)
        else:
            pipeline.reconfigure(config)  # loads the learned anonymizer now, so a bad model fails before any measurement
        self.pipeline = pipeline

    def __call__(self, rgb: np.ndarray) -> Output:
        if self.pipeline.config != self.config:
            self.pipeline.reconfigure(self.config)
        result = self.pipeline.process(rgb)
        return Output(result.image, result.timings_ms, result.error)

    def reset(self) -> None:
        self.pipeline.reset()

    def recipe(self) -> tuple:
        return _pipeline_method, (self.config, self.setting)


class Deface(Method):
    """deface 1.5's own CenterFace + elliptical blur with its command-line defaults: the external baseline."""

    name, setting = "deface", {}

    def __init__(self):
        from deface.centerface import CenterFace
        from deface.deface import anonymize_frame

        with contextlib.redirect_stdout(io.StringIO()):  # deface prints its execution provider
            self._centerface = CenterFace(override_execution_provider="CPUExecutionProvider")
        self._anonymize = anonymize_frame

    def __call__(self, rgb: np.ndarray) -> Output:
        start = time.perf_counter()
        detections, _ = self._centerface(rgb, threshold=DEFACE_THRESHOLD)
        detected = time.perf_counter()
        frame = rgb.copy()
        self._anonymize(detections, frame, mask_scale=DEFACE_MASK_SCALE, replacewith="blur", ellipse=True,
                        draw_scores=False, replaceimg=None, mosaicsize=20)
        done = time.perf_counter()
        faces_ms, filter_ms = (detected - start) * 1000, (done - detected) * 1000
        return Output(frame, {"faces": faces_ms, "filter": filter_ms, "total": faces_ms + filter_ms})


def _rebuild(cls, threads: int = 0) -> Method:
    return cls()  # deface sets up ONNX Runtime itself, with its default threads


def _pipeline_method(config: AnonymizerConfig, setting: dict, threads: int = 0) -> PipelineMethod:
    return PipelineMethod(config.replace(cpu_threads=threads) if threads else config, setting)


def evaluation_config(config: AnonymizerConfig) -> AnonymizerConfig:
    """The robot's config minus what would distort the measurement on a busy machine.

    No frame deadline (a loaded CI machine would drop frames the robot would
    publish) and no action model inside the pipeline (the evaluation runs A on
    every method's output alike, timed as its own stage).
    """
    return config.replace(frame_deadline_ms=0.0, action_model="", use_gpu=False)


def build_methods(names: list[str], config: AnonymizerConfig, notes: list[str]) -> list[Method]:
    """The requested methods in order; a learned row without a model is skipped with a note."""
    config = evaluation_config(config)
    methods: list[Method] = []
    shared = None
    for name in names:
        if name == "none":
            methods.append(Unchanged())
        elif name == "deface":
            methods.append(Deface())
        elif name == "learned" and not config.anonymizer_model and bundled_model(BUNDLED_ANONYMIZER) is None:
            notes.append(f"learned: skipped, no trained anonymizer (ros_anonymizer/models/{BUNDLED_ANONYMIZER} "
                         "is missing and anonymizer_model is not set).")
        else:
            method = PipelineMethod(config.replace(filter=name), pipeline=shared)
            shared = method.pipeline
            if name == "learned":
                notes.append(f"learned: anonymizer trained on: {method.pipeline.learned.backend.metadata.get('trained_on', 'not stated')}.")
            methods.append(method)
    return methods


SWEEPS = {"blur": ("blur_strength", (0.1, 0.2, 0.7)), "mosaic": ("mosaic_cells", (12, 3)), "noise": ("noise_sigma", (30.0, 160.0))}


def sweep_methods(names: list[str], config: AnonymizerConfig, pipeline: Pipeline | None = None) -> list[Method]:
    """Extra settings of the hand-crafted filters, for the privacy-utility chart (sharing `pipeline` when given)."""
    config = evaluation_config(config)
    methods: list[Method] = []
    for name in names:
        if name in SWEEPS:
            parameter, values = SWEEPS[name]
            for value in values:
                if value != getattr(config, parameter):
                    methods.append(PipelineMethod(config.replace(filter=name, **{parameter: value}), {parameter: value}, pipeline))
                    pipeline = methods[-1].pipeline
    return methods


def trained_identities(methods: list[Method]) -> set[str]:
    """The people the learned anonymizer was trained against, from its ONNX metadata (empty when it does not say)."""
    for method in methods:
        if method.name == "learned":
            try:
                return {str(n) for n in json.loads(method.pipeline.learned.backend.metadata.get("trained_identities", "[]"))}
            except (json.JSONDecodeError, TypeError):
                return set()
    return set()
