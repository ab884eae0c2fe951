"""A fifth lineage of face detector: a boosted cascade of simple features.

The other detector judges are learned end to end or on gradients (dlib's
HOG + SVM and MMOD CNN, MTCNN, BlazeFace). Viola and Jones's cascade
(2001) is the detector cameras shipped for a decade: boosted stages of
local binary pattern features here (Liao et al. 2007), the frontal-face
model that OpenCV trained (`lbpcascade_frontalface.xml`), as scikit-image
ships and runs it. It looks at dark-eyes-over-bright-cheeks contrast that
a smooth blob lacks, so a painted face passes it only with that structure.
No training code imports it. Settings are scikit-image's defaults and
OpenCV's usual scale step, not tuned on anyone's output.
"""
from __future__ import annotations

import numpy as np

from .recognizer import RecognizerError

SCALE_STEP = 1.1  # OpenCV's detectMultiScale default
MIN_FACE = 30  # pixels: smaller windows than this are noise at LFW's 250x250
MIN_NEIGHBOURS = 4  # scikit-image's default: overlapping windows needed for a detection


class LbpCascade:
    """Face boxes (xyxy pixels) from OpenCV's LBP frontal-face cascade, run by scikit-image."""

    def __init__(self):
        try:
            from skimage.data import lbp_frontal_face_cascade_filename
            from skimage.feature import Cascade
        except ImportError:
            raise RecognizerError("the cascade judge needs scikit-image: pip install scikit-image.") from None
        self._cascade = Cascade(lbp_frontal_face_cascade_filename())

    def boxes(self, rgb: np.ndarray) -> np.ndarray:
        import cv2

        grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)  # 8-bit grey, as OpenCV runs its cascades: flat areas tie as there
        h, w = grey.shape
        found = self._cascade.detect_multi_scale(img=grey, scale_factor=SCALE_STEP, step_ratio=1, min_size=(MIN_FACE, MIN_FACE),
                                                 max_size=(h, w), min_neighbor_number=MIN_NEIGHBOURS)
        return np.array([[d["c"], d["r"], d["c"] + d["width"], d["r"] + d["height"]] for d in found], np.float32).reshape(-1, 4)
