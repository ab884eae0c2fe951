"""Shared fixtures: frames every clone has (skimage's public-domain astronaut), and the real data in ../shared/data.

The fail-closed, node and bag proofs run on the astronaut fixtures (`sample_faces`,
`sample_clip`, `frame_with_faces`); only checks about a dataset itself use
../shared/data, and a missing dataset skips them (fails them under CI=true).
The run ends with how many tests were skipped, and why.
"""
from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from ros_anonymizer.media import read_image, read_video

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ROS_ANONYMIZER_DATA", REPO.parent / "shared" / "data"))


# A suite started in the background by a shell without job control (`nohup make test &`) inherits SIGINT
# ignored, and so would the commands the tests stop with SIGINT, as Ctrl-C or ros2 launch does: an ignored
# interrupt let `bag anonymize` finish and `bag play --loop` run on. The children get the default back.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def require_data(*parts: str) -> Path:
    """A path under ../shared/data; a missing one fails under CI=true and skips elsewhere."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        message = f"real data {path} is missing (see ../shared/data/README.md)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return require_data()


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="session")
def sample_faces(astronaut) -> list[tuple[str, np.ndarray]]:
    """Four 250x250 portraits framed like LFW's, made from the astronaut: as is, mirrored, darker, closer.

    Not four identities: what they prove needs faces, not who they are.
    """
    portrait = astronaut[0:250, 101:351]
    closer = cv2.resize(portrait[20:230, 20:230], (250, 250), interpolation=cv2.INTER_LINEAR)
    return [("astronaut", portrait.copy()), ("mirrored", portrait[:, ::-1].copy()),
            ("darker", (portrait * 0.7).astype(np.uint8)), ("closer", closer)]


@pytest.fixture(scope="session")
def sample_clip(astronaut) -> list[np.ndarray]:
    """40 frames of 320x240 (like the JHMDB clip) panning over the astronaut photo's lower half: her suit, no face."""
    below = astronaut[260:512]
    return [cv2.resize(below[:, 4 * i:4 * i + 336], (320, 240), interpolation=cv2.INTER_AREA) for i in range(40)]


@pytest.fixture(scope="session")
def frame_with_faces(sample_clip, sample_faces) -> tuple[np.ndarray, np.ndarray]:
    """A 640x480 frame with the four sample faces pasted in, and the pasted rectangles (xyxy)."""
    return paste_faces(cv2.resize(sample_clip[0], (640, 480), interpolation=cv2.INTER_LINEAR), sample_faces)


def paste_faces(background: np.ndarray, faces: list[tuple[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Up to four 110x110 faces (the central part of 250x250 portraits) in two staggered rows on a copy of a 640x480 frame."""
    frame, rects = background.copy(), []
    for i, (_, face) in enumerate(faces[:4]):
        size = 110
        x, y = 40 + i * 150, 120 + (i % 2) * 120
        frame[y:y + size, x:x + size] = cv2.resize(face[40:210, 40:210], (size, size), interpolation=cv2.INTER_AREA)
        rects.append([x, y, x + size, y + size])
    return frame, np.array(rects)


@pytest.fixture(scope="session")
def lfw_faces() -> list[tuple[str, np.ndarray]]:
    """One image of each of the first 40 LFW DevTrain people (alphabetical), as (name, RGB 250x250)."""
    root = require_data("lfw", "images")
    people = sorted(p for p in root.iterdir() if p.is_dir())[:40]
    return [(p.name, read_image(sorted(p.glob("*.jpg"))[0])) for p in people]


@pytest.fixture(scope="session")
def jhmdb_frames() -> list[np.ndarray]:
    return read_video(next(require_data("jhmdb", "catch").glob("*.avi")))


@pytest.fixture(scope="session")
def ucf_frames() -> list[np.ndarray]:
    return read_video(require_data("ucf101_24", "videos", "Basketball", "v_Basketball_g01_c01.avi"), limit=60)


@pytest.fixture(scope="session")
def street_frame_with_faces(lfw_faces) -> tuple[np.ndarray, np.ndarray]:
    """A 640x480 MOT17 street frame with four LFW faces pasted in, and the pasted rectangles (xyxy)."""
    street = read_image(next(iter(sorted(require_data("mot17_mini", "MOT17-02-FRCNN", "img1").glob("*.jpg")))))
    return paste_faces(cv2.resize(street, (640, 480), interpolation=cv2.INTER_AREA), lfw_faces)


def pytest_terminal_summary(terminalreporter) -> None:
    """The run's last words: how many tests were skipped, grouped by reason."""
    skipped = terminalreporter.stats.get("skipped", [])
    reasons = Counter()
    for report in skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reasons[reason.removeprefix("Skipped: ")] += 1
    terminalreporter.section(f"{len(skipped)} test(s) skipped", sep="-")
    for reason, count in reasons.most_common():
        terminalreporter.write_line(f"{count:4d}  {reason}")


@pytest.fixture(scope="session", autouse=True)
def int8_face_detector_made_once():
    """The runtime makes its INT8 CenterFace at the first start on a machine (about 20 s): do it once, up front,
    so no test that starts a node or a CLI with a short timeout pays for it."""
    from ros_anonymizer.config import AnonymizerConfig
    from ros_anonymizer.int8_detector import int8_centerface

    int8_centerface(AnonymizerConfig().engine_cache_dir)
