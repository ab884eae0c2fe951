"""One anonymizer from two: M's weights interpolated between two exports of the same network, exported again.

    python -m ros_anonymizer_training.interpolate --config edge natural.onnx private.onnx --toward 0.72 --out anonymizer_edge.onnx

Fine-tuning a natural M against a trained identity D moves it along a line
from "natural, some identity left" to "private, less natural"; the models on
that line between the two ends (weight interpolation of one network
fine-tuned from another, Wortsman et al. 2022, "model soups") trade the one
for the other smoothly. `--toward` is the share of the second model (0: the
first, 1: the second); measure each point with `privacy_check`, which uses
judges no training saw.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .config import TrainConfig, TrainConfigError
from .export import ExportError, anonymizer_weights, export_anonymizer, verify_against_torch
from .models.anonymizer import build_anonymizer


def interpolate(cfg: TrainConfig, first: Path, second: Path, toward: float, out: Path) -> dict:
    """Export (1 - toward) * first + toward * second as an anonymizer with the contract's metadata; returns the export's figures."""
    import onnx

    if not 0.0 <= toward <= 1.0:
        raise ExportError(f"--toward is the second model's share, from 0 to 1, not {toward}.")
    model = build_anonymizer(cfg).eval()
    a, b = anonymizer_weights(first, model.state_dict()), anonymizer_weights(second, model.state_dict())
    for path, weights in ((first, a), (second, b)):  # the weights fit, but is it this network (m_input_size is no weight)?
        model.load_state_dict(weights)
        try:
            verify_against_torch(model, path.read_bytes(), cfg.crop_size, batches=(2,))
        except ExportError:
            raise ExportError(f"{path} is not the network --config {cfg.preset} describes (its input size differs?); "
                              "give the config it was trained with.") from None
    model.load_state_dict({k: (1 - toward) * a[k] + toward * b[k] if a[k].is_floating_point() else b[k] for k in a})
    meta = {p.key: p.value for p in onnx.load(str(second)).metadata_props}
    first_meta = {p.key: p.value for p in onnx.load(str(first)).metadata_props}
    trained_on = (f"weight interpolation {1 - toward:.2f} x {first.name} + {toward:.2f} x {second.name}; "
                  f"{first.name}: {first_meta.get('trained_on', '?')}; {second.name}: {meta.get('trained_on', '?')}")
    people = sorted(set(json.loads(first_meta.get("trained_identities", "[]"))) | set(json.loads(meta.get("trained_identities", "[]"))))
    return export_anonymizer(model, out, crop_size=cfg.crop_size, box_enlarge=cfg.box_enlarge, preset=cfg.preset,
                             trained_on=trained_on, trained_identities=people)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ros_anonymizer_training.interpolate", description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path, help="anonymizer ONNX this trainer exported (share 1 - toward)")
    parser.add_argument("second", type=Path, help="anonymizer ONNX of the same network (share toward)")
    parser.add_argument("--toward", type=float, required=True, help="the second model's share, 0 to 1")
    parser.add_argument("--out", type=Path, required=True, help="where to write the interpolated anonymizer")
    parser.add_argument("--config", default="edge", help="the preset or YAML both models were trained with")
    args = parser.parse_args(argv)
    try:
        result = interpolate(TrainConfig.load(args.config), args.first, args.second, args.toward, args.out)
    except (TrainConfigError, ExportError) as e:
        print(f"interpolate: {e}", file=sys.stderr)
        return 2
    print(f"wrote {result['path']} ({result['bytes'] / 1e6:.1f} MB), ONNX Runtime vs torch max |diff| {result['max_abs_diff']:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
