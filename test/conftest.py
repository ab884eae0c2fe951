"""Shared fixtures: the real data in ../shared/data, and sample frames built from it."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from ros_anonymizer.media import read_image, read_video

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ROS_ANONYMIZER_DATA", REPO.parent / "shared" / "data"))


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
    frame = cv2.resize(read_image(next(iter(sorted(require_data("mot17_mini", "MOT17-02-FRCNN", "img1").glob("*.jpg"))))),
                       (640, 480), interpolation=cv2.INTER_AREA)
    rects = []
    for i, (_, face) in enumerate(lfw_faces[:4]):
        size = 110
        x, y = 40 + i * 150, 120 + (i % 2) * 120
        frame[y:y + size, x:x + size] = cv2.resize(face[40:210, 40:210], (size, size), interpolation=cv2.INTER_AREA)
        rects.append([x, y, x + size, y + size])
    return frame, np.array(rects)
