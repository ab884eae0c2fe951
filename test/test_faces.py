"""Face localization with the real CenterFace model, and persistence across frames."""
from __future__ import annotations

import numpy as np
import pytest

from ros_anonymizer.backends import load_backend
from ros_anonymizer.faces import CenterFaceDetector, Faces, FaceTracker, box_iou, centerface_onnx, nms

ASTRONAUT_FACE = np.array([180, 55, 272, 180])  # read off the photo by hand


@pytest.fixture(scope="module")
def backend():
    return load_backend(centerface_onnx())


def test_centerface_has_symbolic_dims(backend):
    assert backend.input("input.1").shape == ("N", 3, "H", "W")
    assert [o.name for o in backend.outputs] == ["537", "538", "539", "540"]


def test_finds_the_astronaut_face_with_landmarks(backend, astronaut):
    faces = CenterFaceDetector(backend, 0.4)(astronaut)
    assert len(faces) == 1
    assert box_iou(faces.boxes, ASTRONAUT_FACE[None].astype(np.float32))[0, 0] > 0.6
    x1, y1, x2, y2 = faces.boxes[0]
    eyes_and_nose = faces.landmarks[0].reshape(5, 2)[:3]
    assert np.all((eyes_and_nose[:, 0] > x1) & (eyes_and_nose[:, 0] < x2) & (eyes_and_nose[:, 1] > y1) & (eyes_and_nose[:, 1] < y2))
    left_eye, right_eye = eyes_and_nose[0], eyes_and_nose[1]
    assert left_eye[0] < right_eye[0]


@pytest.mark.parametrize("scale", [0.5, 0.33])
def test_reduced_detection_scale_maps_boxes_back_to_the_frame(backend, astronaut, scale):
    full = CenterFaceDetector(backend, 0.4, 1.0)(astronaut)
    small = CenterFaceDetector(backend, 0.4, scale)(astronaut)
    assert len(small) == 1
    assert box_iou(small.boxes, full.boxes)[0, 0] > 0.7


def test_lfw_recall(backend, lfw_faces):
    detector = CenterFaceDetector(backend, 0.4)
    found = sum(len(detector(face)) > 0 for _, face in lfw_faces)
    recall = found / len(lfw_faces)
    print(f"LFW recall at threshold 0.4: {recall:.1%} of {len(lfw_faces)}")
    assert recall >= 0.95


def test_faces_in_a_street_scene_are_found(backend, street_frame_with_faces):
    frame, rects = street_frame_with_faces
    faces = CenterFaceDetector(backend, 0.4)(frame)
    iou = box_iou(rects.astype(np.float32), faces.boxes)
    assert (iou.max(axis=1) > 0.3).all(), f"pasted faces not all found: best IoUs {iou.max(axis=1)}"


def test_video_frames_have_faces(backend, jhmdb_frames, ucf_frames):
    """320x240 clips with faces of 6-12 pixels, under CenterFace's limit: found in most frames by the upscaled pass."""
    detector = CenterFaceDetector(backend, 0.2, small_frame_height=480)
    for frames in (jhmdb_frames, ucf_frames):
        assert sum(len(detector(f)) > 0 for f in frames) >= len(frames) // 2


def test_small_faces_of_a_low_resolution_stream_are_found_by_default(ucf_frames):
    """The UCF101 basketball clip (320x240): the player's face is about 6 px. The previous defaults (padding, one
    pass at 0.3) found it in 4 of these 60 frames; the second, upscaled pass finds it in most."""
    from ros_anonymizer.config import AnonymizerConfig
    from ros_anonymizer.faces import load_face_detector

    detector = load_face_detector(AnonymizerConfig())
    assert detector.scales(240) == [1.0, 2.0]
    assert sum(len(detector(f)) > 0 for f in ucf_frames) >= len(ucf_frames) // 2


def test_large_frames_are_searched_once(backend):
    assert CenterFaceDetector(backend, 0.2, 1.0, small_frame_height=480).scales(480) == [1.0]
    assert CenterFaceDetector(backend, 0.2, 0.5, small_frame_height=480).scales(1080) == [0.5]
    assert CenterFaceDetector(backend, 0.2, 2.0, small_frame_height=480).scales(240) == [2.0]


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    keep = nms(boxes, np.array([0.5, 0.9, 0.7], np.float32), 0.3)
    assert keep.tolist() == [1, 2]


def _detection(box, score=0.9) -> Faces:
    return Faces(np.array([box], np.float32), np.array([score], np.float32), np.zeros((1, 10), np.float32), np.zeros(1, np.int64))


def test_persistence_covers_a_face_through_missed_detections():
    tracker = FaceTracker(persist_frames=2, coast_enlarge=1.2)
    shape = (480, 640, 3)
    for step in range(3):  # a face moving right by 10 px per frame
        out = tracker.update(_detection([100 + 10 * step, 100, 160 + 10 * step, 170]), shape)
    track_id = out.track_ids[0]
    missed = tracker.update(Faces(), shape)  # detection removed for one frame
    assert len(missed) == 1 and missed.track_ids[0] == track_id
    true_box = np.array([130, 100, 190, 170], np.float32)  # where the face really is now
    covered = missed.boxes[0]
    assert covered[0] <= true_box[0] and covered[1] <= true_box[1] and covered[2] >= true_box[2] and covered[3] >= true_box[3]
    width = covered[2] - covered[0]
    assert width == pytest.approx(60 * 1.2, rel=0.05)  # enlarged while not confirmed
    assert len(tracker.update(Faces(), shape)) == 1
    assert len(tracker.update(Faces(), shape)) == 0  # forgotten after persist_frames misses
    again = tracker.update(_detection([140, 100, 200, 170]), shape)
    assert again.track_ids[0] != track_id


def test_persistence_with_the_real_detector(backend, astronaut):
    """Detection runs on three frames of a moving face, then is removed: the face stays covered."""
    detector, tracker = CenterFaceDetector(backend, 0.4), FaceTracker(persist_frames=3)
    frames = [np.roll(astronaut, 8 * step, axis=1) for step in range(4)]
    for frame in frames[:3]:
        tracker.update(detector(frame), frame.shape)
    truth = detector(frames[3]).boxes
    covered = tracker.update(Faces(), frames[3].shape).boxes
    assert len(covered) == 1 and box_iou(covered, truth)[0, 0] > 0.7
    assert covered[0, 0] <= truth[0, 0] + 2 and covered[0, 2] >= truth[0, 2] - 2
