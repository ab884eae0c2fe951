"""privacy_check's attacks on hold-out LFW people, including the track attack (averaged embeddings over a track)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import require_data
from ros_anonymizer_training.privacy_check import _rank1, main, track_frame


def test_a_track_frame_moves_the_photo_a_little_and_is_reproducible():
    rgb = np.random.default_rng(1).integers(0, 255, (64, 64, 3), np.uint8)
    a, b = track_frame(rgb, np.random.default_rng(0)), track_frame(rgb, np.random.default_rng(0))
    assert np.array_equal(a, b) and a.shape == rgb.shape and a.dtype == np.uint8
    assert not np.array_equal(a, rgb)


def test_raw_tracks_are_reidentified_and_masked_ones_are_not(tmp_path, capsys):
    require_data("lfw", "images")
    out = tmp_path / "figures.json"
    assert main(["--config", "edge", "--people", "3", "--baselines", "mask", "--track-frames", "3", "--json", str(out),
                 "--chart", str(tmp_path / "chart.png")]) == 0
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
    assert original["mtcnn_found"] == 1.0 and mask["mtcnn_found"] == 0.0
    assert "tracks of 3 frames" in capsys.readouterr().out


def test_rank1_counts_probes_nearest_their_own_gallery_face():
    gallery = {0: np.array([0.0, 0.0]), 1: np.array([1.0, 0.0]), 2: np.array([0.0, 1.0])}
    assert _rank1({p: e + 0.1 for p, e in gallery.items()}, gallery) == 1.0
    assert _rank1({0: gallery[1], 1: gallery[2], 2: gallery[1]}, gallery) == 0.0
    assert _rank1({0: gallery[0], 5: gallery[1]}, gallery) == 0.5  # a probe with no gallery photo cannot be found
    assert np.isnan(_rank1({}, gallery))


def test_a_track_of_no_frames_is_a_plain_error():
    with pytest.raises(SystemExit, match="--track-frames must be 1"):
        main(["--track-frames", "0"])
