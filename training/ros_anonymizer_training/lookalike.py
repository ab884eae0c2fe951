"""Reference anonymizers made of real strangers' faces: what a perfect M could publish, for privacy_check only.

M sees only a low-pass copy of the crop and paints detail over it. The best
such a painter could do is paint a real face of somebody else. `Lookalike`
does exactly that without any network: among the trained identities' crops
(people in no hold-out gallery) it takes the one whose low-pass copy, mean
removed, is nearest to this face's (the same pose and lighting layout), and
publishes this face's own low-pass copy plus that stranger's detail, blended
back with the runtime's elliptical mask. With `whole=True` it pastes the
stranger's whole crop instead, so only what lies outside the mask (hair,
ears, background) is still the person's.

So privacy_check can split what is left of a person in M's output: what
even a real stranger's face over the same low-pass copy leaves (context and
the low-pass copy itself; no painter with M's input can do better) and what
M's own painting adds. Never shipped: it holds real people's faces.
"""
from __future__ import annotations

import cv2
import numpy as np

from ros_anonymizer.filters import crop_squares, paste_squares, square_bounds, square_regions


def low_pass(crops: np.ndarray, size: int) -> np.ndarray:
    """Crops (N,S,S,3) uint8 -> their size x size area averages, bilinearly resized back to S, float32, as M's base."""
    side = crops.shape[1]
    return np.stack([cv2.resize(cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32),
                                (side, side), interpolation=cv2.INTER_LINEAR) for c in crops])


class Lookalike:
    """An anonymizer with the runtime filter's call (frame in place, boxes -> regions changed) that pastes strangers' faces.

    `labels` (one identity per stranger) let `faces` skip a face's own
    identity, as the trainer's `l1_target: lookalike` needs on trained faces.
    `detail_scale` below 1 paints the stranger's detail fainter: the line
    from the bare low-pass copy (0) to a real face (1), the trade-off any
    painter with this input faces.
    """

    def __init__(self, strangers: np.ndarray, box_enlarge: float, input_size: int, whole: bool = False,
                 labels: np.ndarray | None = None, detail_scale: float = 1.0):
        if not len(strangers):
            raise ValueError("Lookalike needs at least one stranger's face crop.")
        self.strangers = strangers
        self.crop_size = strangers.shape[1]
        self.box_enlarge, self.input_size, self.whole = box_enlarge, input_size, whole
        self.labels = labels
        self.detail = (strangers.astype(np.float32) - low_pass(strangers, input_size)) * detail_scale
        self.keys = self._layout(strangers)

    def _layout(self, crops: np.ndarray) -> np.ndarray:
        """Each crop's low-pass copy with its mean colour removed: pose and lighting, not skin tone."""
        small = np.stack([cv2.resize(c, (self.input_size, self.input_size), interpolation=cv2.INTER_AREA) for c in crops]).astype(np.float32)
        return (small - small.mean((1, 2), keepdims=True)).reshape(len(crops), -1)

    def nearest(self, crops: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """Index of the stranger whose layout is nearest each crop's; with `labels`, never one of the crop's own identity."""
        keys = self._layout(crops)
        distance = ((keys[:, None, :] - self.keys[None]) ** 2).sum(-1)
        if labels is not None:
            distance[np.asarray(labels)[:, None] == self.labels[None]] = np.inf
        return distance.argmin(1)

    def faces(self, crops: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """uint8 crops (N,S,S,3) -> what replaces them: own low-pass copy + nearest stranger's detail (or the stranger's whole crop)."""
        chosen = self.nearest(crops, labels)
        if self.whole:
            return self.strangers[chosen]
        return np.clip(low_pass(crops, self.input_size) + self.detail[chosen], 0, 255).astype(np.uint8)

    def __call__(self, rgb: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray | None = None) -> np.ndarray:
        """The runtime filter's call; the stranger is chosen by layout, so `landmarks` are not used."""
        squares = square_regions(boxes, self.box_enlarge)
        if not len(squares):
            return np.zeros((0, 4), np.int64)
        paste_squares(rgb, squares, self.faces(crop_squares(rgb, squares, self.crop_size)))
        return square_bounds(squares, rgb.shape)
