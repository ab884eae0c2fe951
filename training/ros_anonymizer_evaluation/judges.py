"""Is the output still a face? Judges that no training term has ever seen.

The anonymizer's training uses CenterFace (landmarks, detectability), so
CenterFace's figures on its output say little: it was optimised against.
These judges come from another lineage and another author (dlib, from the
face-recognition-models wheel) and are never imported by the trainer:
- dlib's HOG + linear SVM frontal face detector;
- dlib's CNN face detector (max-margin object detection, MMOD);
- MTCNN, a third detector from another lineage (ros_anonymizer_evaluation.facenet);
- BlazeFace, MediaPipe's on-device detector, a fourth (ros_anonymizer_evaluation.mediapipe_judges);
- OpenCV's LBP frontal-face cascade, a Viola-Jones boosted cascade, the fifth (ros_anonymizer_evaluation.cascade);
- dlib's 68-point shape predictor, for how far the output's landmarks
  (eyes, brows, nose, mouth, jaw) moved from the original's: pose and
  expression kept or not. The displacement is the mean point distance over
  the inter-ocular distance (outer eye corners), as face-alignment papers
  report it; the predictor's own noise is measured on the original and its
  mirror image, so "small" has a yardstick;
- MediaPipe's 468-point face mesh, the same way in the same region (a second
  landmark judge, lips and eyelids included), and its own face score there;
  its yardstick is how far its points move on the original when the region
  moves by 2% of its side (no mirror table exists for the mesh here).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from .cascade import LbpCascade
from .facenet import Mtcnn
from .mediapipe_judges import MESH_EYE_CORNERS, MIN_SCORE, POSE_EXPRESSION, BlazeFace, FaceMesh, pose_expression
from .recognizer import found_at, import_dlib, model_file

# The 68-point scheme's mirror image: point i of a flipped face is point MIRROR_68[i] of the face.
MIRROR_68 = np.array(list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
                     + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
                     + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65])
OUTER_EYE_CORNERS = (36, 45)
MESH_NOISE_SHIFT = 0.02  # of the mesh region's side: the yardstick move for the mesh's own noise


@dataclass(frozen=True)
class OriginalPoints:
    """What the landmark judges read on the original face, once per face, with each judge's own noise there."""
    landmarks: np.ndarray  # (68, 2) dlib's points in the face box
    mesh: np.ndarray  # (468, 2) MediaPipe's points in the region around the face box
    landmark_noise: float  # dlib's predictor against itself: the mirror image's points mirrored back
    mesh_noise: float  # the mesh against itself: its points with the region moved by 2% of its side

    @property
    def pose_expression(self) -> np.ndarray:
        return pose_expression(self.mesh)


@dataclass(frozen=True)
class Verdict:
    hog_found: bool  # dlib's HOG detector finds a face overlapping the original face
    cnn_found: bool  # dlib's CNN (MMOD) detector does
    mtcnn_found: bool  # MTCNN does
    blazeface_found: bool  # BlazeFace (MediaPipe's short-range model) does
    cascade_found: bool  # OpenCV's LBP frontal-face cascade does
    mesh_found: bool  # MediaPipe's face mesh, in the region around the original face box, scores a face there (>= 0.5)
    displacement: float  # mean 68-point landmark distance from the original's, over the inter-ocular distance
    mesh_displacement: float  # the same for the 468-point mesh
    pose_expression: np.ndarray  # the output's head turn and expression read off the mesh (mediapipe_judges.POSE_EXPRESSION)

    @classmethod
    def no_output(cls) -> "Verdict":
        """For a frame the method dropped: no judge finds a face, and there are no points or pose to read."""
        return cls(**dict.fromkeys(FACE_FOUND, False), displacement=float("nan"), mesh_displacement=float("nan"),
                   pose_expression=np.full(len(POSE_EXPRESSION), np.nan, np.float32))


FACE_FOUND = tuple(f.name for f in fields(Verdict) if f.name.endswith("_found"))  # each judge's "is there a face", in Verdict's order


class NaturalnessJudges:
    """dlib's HOG and CNN detectors, MTCNN, BlazeFace, the LBP cascade, dlib's 68 points and MediaPipe's mesh, at fixed settings (upsample 0: LFW-sized faces)."""

    def __init__(self, upsample: int = 0, mtcnn: Mtcnn | None = None):
        dlib = import_dlib("the naturalness judges need")
        self._dlib = dlib
        self.upsample = upsample
        self._hog = dlib.get_frontal_face_detector()
        self._cnn = dlib.cnn_face_detection_model_v1(str(model_file("mmod_human_face_detector.dat")))
        self._shape = dlib.shape_predictor(str(model_file("shape_predictor_68_face_landmarks.dat")))
        self.mtcnn = mtcnn or Mtcnn()
        self.blazeface = BlazeFace()
        self.cascade = LbpCascade()
        self.mesh = FaceMesh()

    def hog(self, rgb: np.ndarray) -> np.ndarray:
        return _boxes(self._hog(np.ascontiguousarray(rgb), self.upsample))

    def cnn(self, rgb: np.ndarray) -> np.ndarray:
        return _boxes([d.rect for d in self._cnn(np.ascontiguousarray(rgb), self.upsample)])

    def landmarks(self, rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
        """(68, 2) points that dlib's predictor places inside `box` (xyxy), wherever or whatever the face is."""
        rect = self._dlib.rectangle(*(int(round(v)) for v in box))
        shape = self._shape(np.ascontiguousarray(rgb), rect)
        return np.array([[p.x, p.y] for p in shape.parts()], np.float32)

    def points(self, rgb: np.ndarray, box: np.ndarray) -> OriginalPoints:
        """Both landmark judges on the original, each read once, and their own noise beside them."""
        landmarks, mesh = self.landmarks(rgb, box), self.mesh(rgb, box)[0]
        width = rgb.shape[1]
        flipped_box = np.array([width - 1 - box[2], box[1], width - 1 - box[0], box[3]], np.float32)
        mirrored = self.landmarks(rgb[:, ::-1], flipped_box)[MIRROR_68]
        mirrored[:, 0] = width - 1 - mirrored[:, 0]
        return OriginalPoints(landmarks, mesh, normalised_displacement(landmarks, mirrored),
                              normalised_displacement(mesh, self.mesh(rgb, box, MESH_NOISE_SHIFT)[0], MESH_EYE_CORNERS))

    def judge(self, output: np.ndarray, box: np.ndarray, original: OriginalPoints) -> Verdict:
        """What the judges say of `output`, where the original face was at `box` and read as `original`."""
        mesh, mesh_score = self.mesh(output, box)
        return Verdict(found_at(self.hog(output), box), found_at(self.cnn(output), box), found_at(self.mtcnn.boxes(output), box),
                       found_at(self.blazeface.boxes(output), box), found_at(self.cascade.boxes(output), box), mesh_score >= MIN_SCORE,
                       normalised_displacement(original.landmarks, self.landmarks(output, box)),
                       normalised_displacement(original.mesh, mesh, MESH_EYE_CORNERS), pose_expression(mesh))


def normalised_displacement(reference: np.ndarray, points: np.ndarray, eye_corners: tuple[int, int] = OUTER_EYE_CORNERS) -> float:
    """Mean point-to-point distance over the reference's inter-ocular (outer eye corner) distance."""
    left, right = eye_corners
    interocular = max(float(np.linalg.norm(reference[left] - reference[right])), 1.0)
    return float(np.linalg.norm(points - reference, axis=1).mean() / interocular)


def _boxes(rects) -> np.ndarray:
    return np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in rects], np.float32).reshape(-1, 4)


def pose_expression_kept(originals: list[np.ndarray], outputs: list[np.ndarray]) -> dict[str, float]:
    """How well each output keeps the original's head turn and expression: Pearson's r over the faces, per quantity.

    Displacement cannot reach 0 for a good anonymizer (a new face has new
    proportions); these can reach 1, and a generic face scores about 0.
    """
    if len(originals) < 3:
        return {name: float("nan") for name in POSE_EXPRESSION}
    a, b = np.array(originals, np.float64), np.array(outputs, np.float64)
    finite = np.isfinite(a).all(1) & np.isfinite(b).all(1)
    return {name: float(np.corrcoef(a[finite, i], b[finite, i])[0, 1]) if b[finite, i].std() > 0 else 0.0
            for i, name in enumerate(POSE_EXPRESSION)}
