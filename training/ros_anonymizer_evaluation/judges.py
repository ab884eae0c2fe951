"""Is the output still a face? Judges that no training term has ever seen.

The anonymizer's training uses CenterFace (landmarks, detectability), so
CenterFace's figures on its output say little: it was optimised against.
These judges come from another lineage and another author (dlib, from the
face-recognition-models wheel) and are never imported by the trainer:
- dlib's HOG + linear SVM frontal face detector;
- dlib's CNN face detector (max-margin object detection, MMOD);
- MTCNN, a third detector from another lineage (ros_anonymizer_evaluation.facenet);
- dlib's 68-point shape predictor, for how far the output's landmarks
  (eyes, brows, nose, mouth, jaw) moved from the original's: pose and
  expression kept or not. The displacement is the mean point distance over
  the inter-ocular distance (outer eye corners), as face-alignment papers
  report it; the predictor's own noise is measured on the original and its
  mirror image, so "small" has a yardstick.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .facenet import Mtcnn
from .recognizer import found_at, import_dlib, model_file

# The 68-point scheme's mirror image: point i of a flipped face is point MIRROR_68[i] of the face.
MIRROR_68 = np.array(list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
                     + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
                     + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65])
OUTER_EYE_CORNERS = (36, 45)


@dataclass(frozen=True)
class Verdict:
    hog_found: bool  # dlib's HOG detector finds a face overlapping the original face
    cnn_found: bool  # dlib's CNN (MMOD) detector does
    mtcnn_found: bool  # MTCNN does
    displacement: float  # mean 68-point landmark distance from the original's, over the inter-ocular distance


class NaturalnessJudges:
    """dlib's HOG and CNN face detectors, MTCNN, and dlib's 68-point landmarks, at fixed settings (upsample 0: LFW-sized faces)."""

    def __init__(self, upsample: int = 0, mtcnn: Mtcnn | None = None):
        dlib = import_dlib("the naturalness judges need")
        self._dlib = dlib
        self.upsample = upsample
        self._hog = dlib.get_frontal_face_detector()
        self._cnn = dlib.cnn_face_detection_model_v1(str(model_file("mmod_human_face_detector.dat")))
        self._shape = dlib.shape_predictor(str(model_file("shape_predictor_68_face_landmarks.dat")))
        self.mtcnn = mtcnn or Mtcnn()

    def hog(self, rgb: np.ndarray) -> np.ndarray:
        return _boxes(self._hog(np.ascontiguousarray(rgb), self.upsample))

    def cnn(self, rgb: np.ndarray) -> np.ndarray:
        return _boxes([d.rect for d in self._cnn(np.ascontiguousarray(rgb), self.upsample)])

    def landmarks(self, rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
        """(68, 2) points that dlib's predictor places inside `box` (xyxy), wherever or whatever the face is."""
        rect = self._dlib.rectangle(*(int(round(v)) for v in box))
        shape = self._shape(np.ascontiguousarray(rgb), rect)
        return np.array([[p.x, p.y] for p in shape.parts()], np.float32)

    def landmark_noise(self, rgb: np.ndarray, box: np.ndarray) -> float:
        """The predictor's own disagreement with itself: landmarks of the mirrored image, mirrored back, against the image's."""
        width = rgb.shape[1]
        flipped_box = np.array([width - 1 - box[2], box[1], width - 1 - box[0], box[3]], np.float32)
        mirrored = self.landmarks(rgb[:, ::-1], flipped_box)[MIRROR_68]
        mirrored[:, 0] = width - 1 - mirrored[:, 0]
        return normalised_displacement(self.landmarks(rgb, box), mirrored)

    def judge(self, output: np.ndarray, box: np.ndarray, original_landmarks: np.ndarray) -> Verdict:
        """What the judges say of `output`, where the original face was at `box` with `original_landmarks`."""
        return Verdict(found_at(self.hog(output), box), found_at(self.cnn(output), box), found_at(self.mtcnn.boxes(output), box),
                       normalised_displacement(original_landmarks, self.landmarks(output, box)))


def normalised_displacement(reference: np.ndarray, points: np.ndarray) -> float:
    """Mean point-to-point distance over the reference's inter-ocular (outer eye corner) distance."""
    left, right = OUTER_EYE_CORNERS
    interocular = max(float(np.linalg.norm(reference[left] - reference[right])), 1.0)
    return float(np.linalg.norm(points - reference, axis=1).mean() / interocular)


def _boxes(rects) -> np.ndarray:
    return np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in rects], np.float32).reshape(-1, 4)
