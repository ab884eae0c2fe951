"""`ros-anonymizer demo`: anonymize a built-in photo with every filter and write a side-by-side preview."""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from .cli_args import add_config_arguments, config_from_args
from .config import FILTERS
from .filters import BUNDLED_ANONYMIZER, bundled_model
from .media import read_image
from .pipeline import Pipeline


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="folder for the results (default: out/demo)")
    parser.add_argument("--image", type=Path, help="use this photo instead of the built-in one (skimage's astronaut)")
    add_config_arguments(parser)


def sample_image(path: Path | None) -> np.ndarray:
    if path is not None:
        return read_image(path)
    from skimage import data

    return data.astronaut()


def run(args: argparse.Namespace) -> int:
    base = config_from_args(args)
    rgb = sample_image(args.image)
    args.out.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out / "input.png"), rgb[:, :, ::-1])
    filters = [f for f in FILTERS if f != "learned" or base.anonymizer_model or bundled_model(BUNDLED_ANONYMIZER)]
    panels = [("original", rgb)]
    pipeline = Pipeline(base)
    for name in filters:
        pipeline.reconfigure(base.replace(filter=name))
        pipeline.reset()
        result = pipeline.process(rgb)
        if result.image is None:
            print(f"{name}: frame dropped ({result.error})")
            continue
        cv2.imwrite(str(args.out / f"{name}.png"), result.image[:, :, ::-1])
        panels.append((f"{name} ({len(result.faces)} face{'s' * (len(result.faces) != 1)})", result.image))
        print(f"{name:>7}: {len(result.faces)} faces, {result.timings_ms['total']:.0f} ms -> {args.out / (name + '.png')}")
    preview = side_by_side(panels)
    cv2.imwrite(str(args.out / "preview.png"), preview[:, :, ::-1])
    print(f"preview: {args.out / 'preview.png'}")
    return 0


def side_by_side(panels: list[tuple[str, np.ndarray]], height: int = 320) -> np.ndarray:
    """Panels scaled to one height, labelled, in a row of at most four per line."""
    tiles = []
    for label, image in panels:
        scaled = cv2.resize(image, (round(image.shape[1] * height / image.shape[0]), height), interpolation=cv2.INTER_AREA)
        tile = np.full((height + 28, scaled.shape[1], 3), 255, np.uint8)
        tile[28:] = scaled
        cv2.putText(tile, label, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (20, 20, 20), 1, cv2.LINE_AA)
        tiles.append(tile)
    width = max(t.shape[1] for t in tiles)
    tiles = [np.pad(t, ((0, 0), (0, width - t.shape[1]), (0, 0)), constant_values=255) for t in tiles]
    rows = [np.hstack(tiles[i:i + 4] + [np.full_like(tiles[0], 255)] * (4 - len(tiles[i:i + 4]))) for i in range(0, len(tiles), 4)]
    return np.vstack(rows)
