"""The independent naturalness judges (dlib HOG/CNN, MTCNN, BlazeFace, the LBP cascade, 68-point landmarks) and the video figures (flicker, track re-id)."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import require_data
from ros_anonymizer.media import read_image
from ros_anonymizer_evaluation.mediapipe_judges import BlazeFace, anchors, pose_expression
from ros_anonymizer_evaluation.judges import MIRROR_68, NaturalnessJudges, normalised_displacement, pose_expression_kept
from ros_anonymizer_evaluation.recognizer import FaceRecognizer, found_at
from ros_anonymizer_evaluation.temporal import TemporalMeter


@pytest.fixture(scope="module")
def judges():
    return NaturalnessJudges()


@pytest.fixture(scope="module")
def face():
    """A real LFW face and dlib's box around it."""
    rgb = read_image(require_data("lfw", "images", "Aaron_Peirsol", "Aaron_Peirsol_0001.jpg"))
    return rgb, FaceRecognizer().describe(rgb).box


def test_a_real_face_is_a_face_and_a_grey_square_is_none(judges, face):
    rgb, box = face
    points = judges.points(rgb, box)
    same = judges.judge(rgb, box, points)
    assert same.hog_found and same.cnn_found and same.mtcnn_found and same.blazeface_found and same.cascade_found and same.mesh_found
    assert same.displacement == same.mesh_displacement == 0.0
    grey = rgb.copy()
    x1, y1, x2, y2 = box.astype(int)
    grey[max(y1 - 10, 0):y2 + 10, max(x1 - 10, 0):x2 + 10] = 128
    verdict = judges.judge(grey, box, points)
    assert not (verdict.hog_found or verdict.cnn_found or verdict.mtcnn_found or verdict.blazeface_found or verdict.cascade_found
                or verdict.mesh_found)
    noise = points.landmark_noise
    assert 0.0 < noise < 0.05 < verdict.displacement  # the predictor's own noise is small; a face that is gone moves the points
    assert 0.0 < points.mesh_noise < 0.05 < verdict.mesh_displacement  # the mesh's too


def test_the_mesh_follows_a_mouth_that_moves(judges, face):
    """Expression, not only pose: the face below the mouth pulled down 10 px opens the mesh's mouth and leaves its eyes."""
    rgb, box = face
    x1, y1, x2, y2 = box.astype(int)
    mouth_line = y1 + int(0.7 * (y2 - y1))
    moved = rgb.copy()
    moved[mouth_line + 10:y2 + 20, x1:x2] = rgb[mouth_line:y2 + 10, x1:x2]
    before, after = judges.mesh(rgb, box)[0], judges.mesh(moved, box)[0]
    upper_lip, lower_lip, eyes = 13, 14, [33, 263, 133, 362]  # inner lip centres, eye corners (the 468-point scheme)
    opening = lambda points: points[lower_lip, 1] - points[upper_lip, 1]
    assert opening(after) - opening(before) > 2.0
    assert np.abs(after[eyes] - before[eyes]).max() < 1.0
    roll, yaw, pitch, mouth_open, mouth_width, eyes_open = pose_expression(after) - pose_expression(before)
    assert mouth_open > 0.05 and max(abs(roll), abs(yaw), abs(eyes_open)) < 0.02  # read as a mouth opening, nothing else


@pytest.mark.parametrize("model", ["short", "full"])
def test_blazeface_boxes_the_face_where_it_is_in_a_wide_frame(model, face):
    """Letterboxing undone: the face moved right in a frame twice as wide is boxed where it now is, about dlib's size."""
    rgb, box = face
    wide = np.zeros((rgb.shape[0], 2 * rgb.shape[1], 3), np.uint8)
    wide[:, rgb.shape[1]:] = rgb
    found = BlazeFace(model).boxes(wide)
    moved = box + np.array([rgb.shape[1], 0, rgb.shape[1], 0], np.float32)
    centres = (found[:, :2] + found[:, 2:]) / 2
    nearest = found[np.argmin(np.linalg.norm(centres - (moved[:2] + moved[2:]) / 2, axis=1))]
    assert np.abs((nearest[:2] + nearest[2:]) / 2 - (moved[:2] + moved[2:]) / 2).max() < 0.15 * (box[2] - box[0])
    assert 0.7 < (nearest[2] - nearest[0]) / (box[2] - box[0]) < 1.6


def test_the_cascade_finds_an_upright_face_where_it_is_and_not_one_upside_down(judges, face):
    """A frontal-face cascade: the face moved right in a wide frame is boxed where it now is; turned upside down it is no face."""
    rgb, box = face
    cascade = judges.cascade
    wide = np.zeros((rgb.shape[0], 2 * rgb.shape[1], 3), np.uint8)
    wide[:, rgb.shape[1]:] = rgb
    moved = box + np.array([rgb.shape[1], 0, rgb.shape[1], 0], np.float32)
    assert found_at(cascade.boxes(wide), moved)
    upside_down = rgb[::-1, ::-1]
    turned = np.array([rgb.shape[1] - 1 - box[2], rgb.shape[0] - 1 - box[3], rgb.shape[1] - 1 - box[0], rgb.shape[0] - 1 - box[1]], np.float32)
    assert not found_at(cascade.boxes(upside_down), turned)


def test_blazeface_anchor_grids_are_mediapipes():
    """896 anchors for the short-range model (16x16 x2 at stride 8, 8x8 x6 at 16), 2,304 for full range (48x48)."""
    short, full = anchors(128, (8, 16, 16, 16), 2), anchors(192, (4,), 1)
    assert short.shape == (896, 2) and full.shape == (2304, 2)
    assert np.allclose(short[:2], 0.5 / 16) and np.allclose(short[512:518], 0.5 / 8) and np.allclose(full[-1], 1 - 0.5 / 48)


def test_mirror_table_is_a_pairing_and_displacement_is_scale_free():
    assert sorted(MIRROR_68.tolist()) == list(range(68))
    assert np.array_equal(MIRROR_68[MIRROR_68], np.arange(68))
    points = np.random.default_rng(0).uniform(0, 100, (68, 2)).astype(np.float32)
    moved = points + np.array([3.0, 4.0], np.float32)
    assert normalised_displacement(points * 2, moved * 2) == pytest.approx(normalised_displacement(points, moved))


def _track(face, frames: int = 4):
    """The LFW face drifting 2 px a frame: raw frames, and its dlib box per frame."""
    rgb, box = face
    return [np.roll(rgb, 2 * i, axis=1) for i in range(frames)], [box + np.array([2 * i, 0, 2 * i, 0], np.float32) for i in range(frames)]


def test_flicker_is_one_for_the_raw_video_and_above_one_for_a_new_face_every_frame(face):
    frames, boxes = _track(face)
    steady, flickering = TemporalMeter(), TemporalMeter()
    rng = np.random.default_rng(0)
    for frame, box in zip(frames, boxes):
        steady.add(frame, frame, box[None])
        noisy = frame.copy()
        x1, y1, x2, y2 = box.astype(int)
        noisy[y1:y2, x1:x2] = rng.integers(0, 255, noisy[y1:y2, x1:x2].shape, np.uint8)
        flickering.add(frame, noisy, box[None])
    assert steady.summary()["flicker_ratio"] == pytest.approx(1.0) and steady.summary()["face_pairs"] == 3
    assert flickering.summary()["flicker_ratio"] > 3


def test_a_track_of_raw_faces_is_reidentified_and_a_masked_one_is_not(face):
    frames, boxes = _track(face, 3)
    recognizer = FaceRecognizer()
    raw, masked = TemporalMeter(recognizer), TemporalMeter(recognizer)
    for frame, box in zip(frames, boxes):
        raw.add(frame, frame, box[None])
        out = frame.copy()
        x1, y1, x2, y2 = box.astype(int)
        out[y1:y2, x1:x2] = 0
        masked.add(frame, out, box[None])
    assert raw.summary()["tracks"] == 1 and raw.summary()["track_faces"] == 3
    assert raw.summary()["track_reidentification"] == 1.0 and raw.summary()["frame_reidentification"] == 1.0
    assert masked.summary()["track_reidentification"] == 0.0 and masked.summary()["tracks_with_a_reidentified_frame"] == 0.0


def test_track_rank1_tells_whose_face_a_track_shows_and_the_impostor_rate_is_dlibs_floor(face):
    """Two people's tracks: published as recorded, each is nearest its own; with the faces swapped, each is nearest the other."""
    other_rgb = read_image(require_data("lfw", "images", "Aaron_Eckhart", "Aaron_Eckhart_0001.jpg"))
    other = (other_rgb, FaceRecognizer().describe(other_rgb).box)
    people = [_track(face, 3), _track(other, 3)]
    recognizer = FaceRecognizer()
    as_recorded, swapped = TemporalMeter(recognizer), TemporalMeter(recognizer)
    for person, (frames, boxes) in enumerate(people):
        as_recorded.start_clip()
        swapped.start_clip()
        for i, (frame, box) in enumerate(zip(frames, boxes)):
            as_recorded.add(frame, frame, box[None])
            swapped.add(frame, people[1 - person][0][i], box[None])
    recorded, swap = as_recorded.summary(), swapped.summary()
    assert recorded["tracks"] == 2 and recorded["track_rank1_chance"] == 0.5
    assert recorded["track_rank1"] == 1.0 and swap["track_rank1"] == 0.0
    assert recorded["impostor_track_match"] == 0.0  # two real people: dlib keeps them apart
    assert recorded["track_matches_others"] == 0.0 and swap["track_matches_others"] == 1.0  # swapped: each shows the other


def test_a_generic_face_matches_its_person_no_more_than_anyone_else():
    """One embedding painted over everyone: near all of them, so its matches say nothing of who anyone is."""
    from ros_anonymizer_evaluation.temporal import pooled_attack

    raw = np.array([[0.0, 0.0], [0.5, 0.0], [0.0, 0.5], [3.0, 3.0]])
    generic = pooled_attack(raw, np.full_like(raw, 0.2))
    assert generic["reidentified"] == generic["published_matches_others"] == 0.75  # 9 of the 12 (face, someone else) pairs
    own = pooled_attack(raw, raw + 0.05)
    assert own["reidentified"] == 1.0 and own["published_matches_others"] == pytest.approx(4 / 12) and own["rank1"] == 1.0


def test_kept_is_one_for_the_same_faces_and_about_zero_for_one_generic_face():
    rng = np.random.default_rng(0)
    originals = [rng.normal(size=6).astype(np.float32) for _ in range(40)]
    assert all(r == pytest.approx(1.0) for r in pose_expression_kept(originals, originals).values())
    generic = [np.full(6, 0.5, np.float32) + rng.normal(0, 0.01, 6).astype(np.float32) for _ in range(40)]
    assert all(abs(r) < 0.5 for r in pose_expression_kept(originals, generic).values())
    assert all(np.isnan(r) for r in pose_expression_kept(originals[:2], originals[:2]).values())  # too few faces to say
