"""Each method over the video clips once: utility, leaks, speed, flicker and track re-identification from the same published frames.

The raw frames' face boxes (reference detector) and action detections are
computed once and shared by every method.
"""
from __future__ import annotations

import time

from .leaks import LeakCounter
from .speed import SpeedMeter
from .temporal import TemporalMeter
from .utility import Clip, Detections, agreement, frame_map, person_ap


def detections_of(actions) -> Detections:
    return Detections(actions.boxes, actions.scores, actions.names())


class ClipStudy:
    def __init__(self, clips: list[Clip], reference_detector, action_detector=None, agreement_threshold: float = 0.3,
                 progress=None, recognizer=None):
        self.clips = clips
        self.recognizer = recognizer  # dlib, for re-identification over face tracks; None: flicker only
        self.action_detector = action_detector
        self.agreement_threshold = agreement_threshold
        self.progress = progress or (lambda items, **kw: items)
        self.faces = [[reference_detector(frame).boxes for frame in clip.frames]
                      for clip in self.progress(clips, desc="reference faces")]
        self.raw = [self._detect_clip(clip.frames) for clip in clips] if action_detector is not None else None

    def _detect_clip(self, frames) -> list[Detections]:
        self.action_detector.reset()
        return [detections_of(self.action_detector(frame)) for frame in frames]

    def run(self, method, measure_utility: bool = True) -> dict:
        """Publish every frame through `method`; utility and speed only when `measure_utility`."""
        leaks, speed = LeakCounter(), SpeedMeter()
        temporal = TemporalMeter(self.recognizer)
        published: list[list[Detections]] = []
        run_actions = measure_utility and self.action_detector is not None
        for clip, faces in zip(self.progress(self.clips, desc=method.label, leave=False), self.faces):
            method.reset()
            temporal.start_clip()
            if run_actions:
                self.action_detector.reset()
            detections = []
            for frame, boxes in zip(clip.frames, faces):
                start = time.perf_counter()
                output = method(frame)
                stages = dict(output.timings_ms)
                if run_actions:
                    found = Detections.empty() if output.image is None else detections_of(self.action_detector(output.image))
                    stages["actions"] = (time.perf_counter() - start) * 1000 - stages.get("total", 0.0)
                    detections.append(found)
                speed.add(frame.shape, stages, (time.perf_counter() - start) * 1000)
                leaks.add(frame, output.image, boxes)
                if measure_utility:
                    temporal.add(frame, output.image, boxes)
            published.append(detections)
        result = {"leaks": leaks.summary()}
        if measure_utility:
            result["speed"] = speed.summary()
            result["video"] = temporal.summary()
            if run_actions:
                result["utility"] = self._utility(published)
        return result

    def _utility(self, published: list[list[Detections]]) -> dict:
        every = range(len(self.clips))
        with_truth = [i for i in every if self.clips[i].boxes is not None]
        with_actions = [i for i in with_truth if self.clips[i].has_actions]
        flat = lambda per_clip, indices: [item for i in indices for item in per_clip[i]]
        boxes = [c.boxes for c in self.clips]
        out = {"clips": len(self.clips), "frames": sum(len(c.frames) for c in self.clips)}
        if with_actions:
            out["frame_map"], out["frame_ap_per_class"] = frame_map(
                flat(published, with_actions), flat(boxes, with_actions), flat([c.labels for c in self.clips], with_actions))
        if with_truth:
            out["person_ap"] = person_ap(flat(published, with_truth), flat(boxes, with_truth))
        out["agreement_with_raw"] = agreement(flat(self.raw, every), flat(published, every), self.agreement_threshold)
        return out
