"""Over time, on video: does the replacement face stay steady, and does identity come back over a whole track?

A per-frame anonymizer can flicker (a new face every frame draws the eye
and breaks trackers) and can leak over time: an attacker who averages a
person's faces over a track may recover what no single frame gives away.
- flicker: the mean change of the published face region between
  consecutive frames, over the same change in the raw frames (1: as steady
  as the video itself; blur is below 1, a flickering M above it);
- track re-identification: faces linked frame to frame by overlap; dlib's
  ResNet embeds each raw face and the published pixels at the same place
  and alignment (the located attack); a track is re-identified when its
  averaged published embedding lies within 0.6 of its averaged raw one;
- the same attack's controls, because a threshold alone cannot tell
  identity from "any face of this footage": track rank-1, the share of
  tracks whose averaged published face is nearest their own averaged raw
  face among all raw tracks (chance: 1 / tracks), and the impostor rate,
  the share of pairs of different raw tracks that dlib already matches
  (on animated faces most do, so the track re-id there says little).
  Two tracks of one person count as impostors, so on footage where people
  leave and come back the impostor rate reads high.
"""
from __future__ import annotations

import numpy as np

from ros_anonymizer.faces import box_iou

from .recognizer import DISTANCE_THRESHOLD, FaceRecognizer

MATCH_IOU = 0.3  # a face box overlapping the previous frame's by this much is the same face
MIN_FACE = 20  # pixels; smaller faces are left out of the track attack (dlib aligns them poorly)


class TemporalMeter:
    """Feed it (raw frame, published frame, raw face boxes) in order, clip by clip; `summary` gives the figures."""

    def __init__(self, recognizer: FaceRecognizer | None = None):
        self.recognizer = recognizer  # None: flicker only
        self.change_published = self.change_raw = 0.0
        self.pairs = 0
        self.tracks: list[dict] = []
        self.start_clip()

    def start_clip(self) -> None:
        self._previous = None  # (raw, published, boxes, track index per box)

    def add(self, raw: np.ndarray, published: np.ndarray | None, boxes: np.ndarray) -> None:
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        if published is None:  # a dropped frame shows nothing: no flicker, no leak, and it breaks the tracks
            self.start_clip()
            return
        owners = [-1] * len(boxes)
        if self._previous is not None and len(boxes) and len(self._previous[2]):
            previous_raw, previous_published, previous_boxes, previous_owners = self._previous
            iou = box_iou(boxes, previous_boxes)
            for i in range(len(boxes)):
                j = int(np.argmax(iou[i]))
                if iou[i, j] < MATCH_IOU:
                    continue
                owners[i] = previous_owners[j]
                region = _region(np.maximum(boxes[i], 0), previous_boxes[j], raw.shape)
                if region is not None:
                    self.change_published += _change(published, previous_published, region)
                    self.change_raw += _change(raw, previous_raw, region)
                    self.pairs += 1
        for i, box in enumerate(boxes):
            if owners[i] < 0:
                self.tracks.append({"raw": [], "published": []})
                owners[i] = len(self.tracks) - 1
            if self.recognizer is not None and min(box[2] - box[0], box[3] - box[1]) >= MIN_FACE:
                face = self.recognizer.describe_box(raw, box)
                self.tracks[owners[i]]["raw"].append(face.embedding)
                self.tracks[owners[i]]["published"].append(self.recognizer.embed_at(published, face))
        self._previous = (raw, published, boxes, owners)

    def summary(self) -> dict:
        out = {"face_pairs": self.pairs,
               "flicker_ratio": self.change_published / self.change_raw if self.change_raw > 0 else float("nan")}
        if self.recognizer is not None:
            tracks = [t for t in self.tracks if t["raw"]]
            frames = [_distance(r, p) for t in tracks for r, p in zip(t["raw"], t["published"])]
            pooled = pooled_attack([np.mean(t["raw"], 0) for t in tracks], [np.mean(t["published"], 0) for t in tracks])
            out.update(tracks=len(tracks), track_faces=len(frames),
                       track_reidentification=pooled["reidentified"], frame_reidentification=_share(frames),
                       tracks_with_a_reidentified_frame=_share([min(_distance(r, p) for r, p in zip(t["raw"], t["published"]))
                                                                for t in tracks]),
                       track_rank1=pooled["rank1"], track_rank1_chance=pooled["rank1_chance"],
                       impostor_track_match=pooled["impostor_match"], track_matches_others=pooled["published_matches_others"])
        return out


def pooled_attack(raw, published, threshold: float = DISTANCE_THRESHOLD) -> dict:
    """The attack on averaged embeddings, one per track (or person): raw and published, T embeddings each.

    reidentified: share of tracks whose published average lies within
    `threshold` (dlib's 0.6 unless another recognizer's) of their raw one;
    rank1, shortlist, median_rank: how high each published average ranks its
    own raw average among all T (gallery_search; rank-1 chance 1/T);
    impostor_match: share of pairs of different raw averages the recognizer
    already matches; published_matches_others: share of pairs (a published
    track, another person's raw track) within the threshold, the rate at
    which a match says nothing of who it is (a filter that paints one
    generic face matches many people). NaN where there are too few tracks.
    """
    nan = float("nan")
    out = {"reidentified": nan, "impostor_match": nan, "published_matches_others": nan, **gallery_search(np.zeros((0, 0)), [])}
    if not len(raw):
        return out
    raw, published = np.asarray(raw, np.float64), np.asarray(published, np.float64)
    to_raw = np.linalg.norm(published[:, None] - raw[None], axis=2)
    out["reidentified"] = _share(list(np.diag(to_raw)), threshold)
    if len(raw) >= 2:
        between = np.linalg.norm(raw[:, None] - raw[None], axis=2)[np.triu_indices(len(raw), 1)]
        others = to_raw[~np.eye(len(raw), dtype=bool)]
        out.update(gallery_search(to_raw, list(range(len(raw)))), impostor_match=float(np.mean(between < threshold)),
                   published_matches_others=float(np.mean(others < threshold)))
    return out


def gallery_ranks(distance: np.ndarray, own: list) -> np.ndarray:
    """Per probe, how many gallery faces lie nearer than its own (0: rank-1); distance is (probes, gallery), own[i] probe i's column."""
    return np.sum(distance < distance[np.arange(len(own)), own][:, None], axis=1)


def shortlist_size(gallery: int) -> int:
    """The nearest tenth of a gallery of that size: the shortlist an attacker narrowing down candidates would read."""
    return int(np.ceil(gallery / 10))


def gallery_search(distance: np.ndarray, own: list) -> dict:
    """How high each probe's own gallery face ranks: distance is (probes, gallery), own[i] the column of probe i's person.

    rank1: share of probes whose own face is the nearest (chance 1/G);
    shortlist: share whose own face is among the nearest tenth of the gallery
    (chance about 10%), what an attacker narrowing down candidates gets;
    median_rank: the median share of the gallery nearer than the own face
    (chance 0.5). A filter can keep rank-1 near chance while still moving
    people's own photos up the list: soft traits (skin tone, hair, face
    shape) that do not name anyone but narrow the search.
    """
    nan = float("nan")
    if not len(own) or distance.shape[1] < 2:
        return {"rank1": nan, "rank1_chance": nan, "shortlist": nan, "shortlist_chance": nan, "median_rank": nan}
    ranks = gallery_ranks(distance, own)
    size = distance.shape[1]
    tenth = shortlist_size(size)
    return {"rank1": float(np.mean(ranks == 0)), "rank1_chance": 1 / size, "shortlist": float(np.mean(ranks < tenth)),
            "shortlist_chance": tenth / size, "median_rank": float(np.median(ranks) / size)}


def _region(a: np.ndarray, b: np.ndarray, shape) -> tuple[slice, slice] | None:
    """The union of two boxes as int slices inside the frame, or None when empty."""
    x1, y1 = int(max(min(a[0], b[0]), 0)), int(max(min(a[1], b[1]), 0))
    x2, y2 = int(min(max(a[2], b[2]), shape[1])), int(min(max(a[3], b[3]), shape[0]))
    return (slice(y1, y2), slice(x1, x2)) if x2 > x1 and y2 > y1 else None


def _change(frame: np.ndarray, previous: np.ndarray, region) -> float:
    return float(np.abs(frame[region].astype(np.float32) - previous[region].astype(np.float32)).mean())


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))


def _share(distances: list[float], threshold: float = DISTANCE_THRESHOLD) -> float:
    return float(np.mean(np.array(distances) < threshold)) if distances else float("nan")
