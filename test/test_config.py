"""The one typed config: validation, YAML (flat or ROS parameter file), overrides."""
from __future__ import annotations

import pytest

from ros_anonymizer.config import AnonymizerConfig, ConfigError


def test_defaults_are_valid():
    config = AnonymizerConfig()
    assert config.filter == "blur" and config.on_failure == "drop"


@pytest.mark.parametrize("changes, message", [
    ({"filter": "pixelate"}, "filter must be one of"),
    ({"score_threshold": 1.5}, "between"),
    ({"persist_frames": "5"}, "must be a int"),
    ({"mask_color": [0, 0]}, "mask_color"),
    ({"no_such_parameter": 1}, "unknown parameter"),
])
def test_invalid_values_are_refused_with_a_plain_message(changes, message):
    with pytest.raises(ConfigError, match=message):
        AnonymizerConfig.from_mapping(changes)


def test_ros_parameter_file_layout(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("/**:\n  ros__parameters:\n    filter: mosaic\n    detection_scale: 1\n")
    config = AnonymizerConfig.from_yaml(path, persist_frames=9)
    assert (config.filter, config.detection_scale, config.persist_frames) == ("mosaic", 1.0, 9)


def test_flat_file_and_bad_files(tmp_path):
    flat = tmp_path / "flat.yaml"
    flat.write_text("filter: mask\n")
    assert AnonymizerConfig.from_yaml(flat).filter == "mask"
    with pytest.raises(ConfigError, match="cannot read"):
        AnonymizerConfig.from_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("filter: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        AnonymizerConfig.from_yaml(bad)


def test_dynamic_parameters_are_declared():
    dynamic = AnonymizerConfig.dynamic_parameters()
    assert {"filter", "score_threshold", "persist_frames"} <= dynamic
    assert "backend" not in dynamic and "face_model" not in dynamic


def test_weakenings_follow_the_field_metadata():
    config = AnonymizerConfig(filter="mask")
    weaker = config.replace(score_threshold=0.9, blur_strength=0.1, mosaic_cells=12, filter="noise", detection_scale=2.0,
                            depth_images="passthrough")
    found = config.weakenings(weaker)
    assert [w.split()[0] for w in found] == ["filter", "blur_strength", "mosaic_cells", "detection_scale", "score_threshold",
                                            "depth_images"]
    stronger = config.replace(score_threshold=0.1, blur_strength=0.5, mosaic_cells=4, filter="mask", persist_frames=20,
                              jpeg_quality=50, on_failure="black")
    assert config.weakenings(stronger) == []
    assert AnonymizerConfig(filter="blur").weakenings(AnonymizerConfig(filter="noise")) == [], "noise is noise over the blur"
    assert stronger.weakenings(stronger.replace(filter="learned")) == ["filter mask -> learned is a weaker choice"]
    assert "allow_weakening" not in AnonymizerConfig.dynamic_parameters()
