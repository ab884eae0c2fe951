"""The stranger references of privacy_check: a real stranger's detail over the face's own low-pass copy, or the stranger's whole crop."""
from __future__ import annotations

import numpy as np
import pytest

from ros_anonymizer_training.lookalike import Lookalike, low_pass


def _strangers() -> np.ndarray:
    """Two 64x64 'faces': one lit from the top, one from the left, each with its own fine texture."""
    ramp = np.linspace(40, 200, 64, dtype=np.float32)
    rng = np.random.default_rng(0)
    top = np.repeat(ramp[::-1, None], 64, 1)[..., None] + rng.normal(0, 20, (64, 64, 3))
    left = np.repeat(ramp[None, ::-1], 64, 0)[..., None] + rng.normal(0, 20, (64, 64, 3))
    return np.clip(np.stack([top, left]), 0, 255).astype(np.uint8)


def test_the_lookalike_keeps_the_faces_own_low_pass_copy_and_paints_the_nearest_strangers_detail():
    strangers = _strangers()
    lookalike = Lookalike(strangers, box_enlarge=1.0, input_size=4)
    frame = np.full((100, 100, 3), 90, np.uint8)
    # A face lit from the left, in another skin tone: its layout, not its colour, picks the stranger.
    face = np.clip(np.repeat(np.linspace(230, 70, 64)[None], 64, 0)[..., None] * [1.0, 0.8, 0.6], 0, 255).astype(np.uint8)
    frame[20:84, 20:84] = face
    before = frame.copy()
    assert lookalike.nearest(face[None]).tolist() == [1]
    regions = lookalike(frame, np.array([[20, 20, 84, 84]]))
    assert regions.tolist() == [[20, 20, 84, 84]]
    expected = np.clip(low_pass(face[None], 4)[0] + strangers[1].astype(np.float32) - low_pass(strangers[1:], 4)[0], 0, 255)
    centre = (slice(20, 44), slice(20, 44))  # inside the ellipse, where the paste weighs 1
    assert np.abs(frame[20:84, 20:84][centre].astype(np.float32) - expected[centre]).max() <= 1
    assert np.array_equal(frame[:20], before[:20]) and np.array_equal(frame[20:22, 20:22], before[20:22, 20:22])  # outside the ellipse: untouched


def test_the_stranger_reference_pastes_the_whole_crop_and_a_frame_without_faces_is_untouched():
    strangers = _strangers()
    frame = np.full((100, 100, 3), 90, np.uint8)
    frame[20:84, 20:84] = strangers[0]
    whole = Lookalike(strangers, box_enlarge=1.0, input_size=4, whole=True)
    whole(frame, np.array([[20, 20, 84, 84]]))
    assert np.array_equal(frame[40:64, 40:64], strangers[0][20:44, 20:44])  # its own nearest stranger is itself
    empty = frame.copy()
    assert whole(empty, np.zeros((0, 4))).shape == (0, 4) and np.array_equal(empty, frame)


def test_no_detail_leaves_the_faces_own_low_pass_copy():
    strangers = _strangers()
    face = strangers[1][::-1].copy()
    bare = Lookalike(strangers, box_enlarge=1.0, input_size=4, detail_scale=0.0).faces(face[None])[0]
    assert np.abs(bare.astype(np.float32) - low_pass(face[None], 4)[0]).max() <= 1


def test_a_detail_strength_out_of_range_is_a_plain_error():
    from ros_anonymizer_training.privacy_check import main

    with pytest.raises(SystemExit, match="--lookalike-detail takes strengths between 0 and 2"):
        main(["--lookalike", "4", "--lookalike-detail", "-1"])
