"""privacy_check's attacks on hold-out LFW people, including the track attack (averaged embeddings over a track)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import require_data
from ros_anonymizer_training.privacy_check import _found, _search, grid_labels, main, track_frame
from ros_anonymizer_training.shipping import ship_verdict


def test_a_track_frame_moves_the_photo_a_little_and_is_reproducible():
    rgb = np.random.default_rng(1).integers(0, 255, (64, 64, 3), np.uint8)
    a, b = track_frame(rgb, np.random.default_rng(0)), track_frame(rgb, np.random.default_rng(0))
    assert np.array_equal(a, b) and a.shape == rgb.shape and a.dtype == np.uint8
    assert not np.array_equal(a, rgb)


def test_raw_tracks_are_reidentified_and_masked_ones_are_not(tmp_path, capsys):
    require_data("lfw", "images")
    out = tmp_path / "figures.json"
    assert main(["--config", "edge", "--people", "3", "--baselines", "mask", "--track-frames", "3", "--json", str(out),
                 "--chart", str(tmp_path / "chart.png"), "--further-photos"]) == 0
    assert (tmp_path / "chart.png").stat().st_size > 0 and (tmp_path / "chart_track.png").stat().st_size > 0
    figures = json.loads(out.read_text())
    original, mask = figures["original"], figures["mask"]
    assert original["faces"] == mask["faces"] == 3 and original["track_frames"] == 3
    assert original["matched"] == 1.0 and original["track_matched"] == 1.0 and original["track_rank1"] == 1.0
    assert mask["matched"] == 0.0 and mask["track_matched"] == 0.0
    assert original["track_impostor_match"] == 0.0  # three different real people: dlib keeps their tracks apart
    assert original["matched_others"] == 0.0 and original["track_matched_others"] == 0.0
    # The parrot gallery of the untouched photos is the gallery itself; FaceNet, the second attacker, agrees with dlib.
    assert original["parrot_rank1"] == original["rank1"] == 1.0
    assert original["facenet_matched"] == original["facenet_track_matched"] == original["facenet_rank1"] == 1.0
    assert mask["facenet_matched"] == mask["facenet_track_matched"] == 0.0
    assert original["mtcnn_found"] == original["blazeface_found"] == original["cascade_found"] == 1.0
    assert mask["mtcnn_found"] == mask["blazeface_found"] == mask["cascade_found"] == 0.0
    assert all(r == pytest.approx(1.0) for r in original["kept"].values())  # the untouched faces keep their own head turn and expression exactly
    # Person by person (what the shipping rule compares): everyone under the original, nobody under the mask.
    assert original["leaks"]["matched"] == original["leaks"]["track_rank1"] == [0, 1, 2]
    assert mask["leaks"]["matched"] == mask["leaks"]["track_matched"] == []
    # The people's further photos (11, 1 and 0 of them) are more probes: found untouched, never under the mask.
    assert original["further_photos"] == mask["further_photos"] == 12
    assert original["further_matched"] == original["further_rank1"] == 1.0 and mask["further_matched"] == 0.0
    assert sorted(original["leaks"]["further_matched"]) == sorted([f"0:{k}" for k in range(2, 13)] + ["1:2"])
    printed = capsys.readouterr().out
    assert "tracks of 3 frames" in printed and "further photos of the same people" in printed


def test_the_gallery_search_ranks_each_probes_own_face():
    gallery = {person: np.array([float(person), 0.0]) for person in range(20)}
    exact = _search(dict(gallery), gallery)
    assert exact["rank1"] == exact["shortlist"] == 1.0 and exact["median_rank"] == 0.0
    # Probe 0 sits nearest person 1 (own face 2nd of 20: in the nearest tenth); probe 10 nearest person 19 (own face 10th).
    moved = _search({0: np.array([1.0, 0.0]), 10: np.array([19.0, 0.0])}, gallery)
    assert moved["rank1"] == 0.0 and moved["shortlist"] == 0.5 and moved["shortlist_chance"] == 0.1
    assert moved["median_rank"] == (1 + 9) / 2 / 20
    assert _search({0: gallery[0], 99: gallery[1]}, gallery)["rank1"] == 1.0  # a probe with no gallery face is left out
    assert np.isnan(_search({}, gallery)["rank1"]) and np.isnan(_search({0: gallery[0]}, {})["shortlist"])
    # The same search person by person: who is found at rank 1, and who within the nearest two.
    probes = {0: np.array([1.0, 0.0]), 5: gallery[5], 10: np.array([19.0, 0.0])}
    assert _found(probes, gallery) == [5] and _found(probes, gallery, 2) == [0, 5] and _found({}, gallery) == []


def _figures(cnn=0.99, hog=0.98, pose=0.10, **leaks):
    found = {"matched": [1, 2], "rank1": [3], "parrot_rank1": [3], "shortlist": list(range(30)), "track_matched": [1, 4]}
    return {"faces": 177, "cnn_found": cnn, "hog_found": hog, "landmark_displacement": pose, "leaks": {**found, **leaks}}


def test_the_shipping_rule_puts_privacy_first_person_by_person():
    bundled = _figures()
    assert ship_verdict(_figures(pose=0.08), bundled)[0]  # as private, natural enough, keeps pose better
    assert not ship_verdict(_figures(), bundled)[0]  # the same figures: no gain, no reason to change
    # One more person found by one attack is within a rerun's spread; two are not, whatever the pose gain.
    assert ship_verdict(_figures(pose=0.08, matched=[1, 2, 5]), bundled)[0]
    ships, lines = ship_verdict(_figures(pose=0.08, matched=[1, 2, 5, 6]), bundled)
    assert not ships and any(line.startswith("FAIL one frame: 4 people against 2") for line in lines)
    assert ship_verdict(_figures(pose=0.08, matched=[5, 6]), bundled)[0]  # as many people, other ones: a rerun's reshuffle
    assert ship_verdict(_figures(pose=0.08, shortlist=list(range(34))), bundled)[0]  # the shortlist's margin is 2% of 177
    assert not ship_verdict(_figures(pose=0.08, cnn=0.85), bundled)[0] and not ship_verdict(_figures(pose=0.08, hog=0.75), bundled)[0]
    assert ship_verdict(_figures(track_matched=[]), bundled)[0]  # two people fewer over tracks is a gain
    with pytest.raises(ValueError, match="per-person leaks"):
        ship_verdict({"faces": 1, "cnn_found": 1.0, "hog_found": 1.0, "landmark_displacement": 0.1}, bundled)


def test_a_track_of_no_frames_is_a_plain_error():
    with pytest.raises(SystemExit, match="--track-frames must be 1"):
        main(["--track-frames", "0"])


def test_the_shipping_rule_needs_both_models_measured(tmp_path):
    require_data("lfw", "images")
    with pytest.raises(SystemExit, match="--ship needs ros_anonymizer/models/anonymizer_edge.onnx measured"):
        main(["--config", "edge", "--people", "2", "--baselines", "mask", "--ship", "ros_anonymizer/models/anonymizer_edge.onnx"])


def test_grid_columns_are_told_apart_when_runs_share_a_file_name():
    names = ["original", "learned:models/anonymizer_edge.onnx", "learned:turn_s0/anonymizer_edge.onnx", "learned:x/other.onnx", "blur"]
    assert grid_labels(names) == ["original", "models", "turn_s0", "other", "blur"]
