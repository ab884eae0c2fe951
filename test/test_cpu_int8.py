"""The INT8 CenterFace for CPUs: calibrated on real frames, finds the same faces as the float model."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ros_anonymizer.backends import load_backend
from ros_anonymizer.config import AnonymizerConfig
from ros_anonymizer.faces import box_iou
from ros_anonymizer.pipeline import Pipeline


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory, shared_data):
    clip = next((shared_data / "jhmdb" / "catch").glob("*.avi"))
    out = tmp_path_factory.mktemp("int8") / "centerface_int8.onnx"
    done = subprocess.run([sys.executable, "-m", "ros_anonymizer.cli", "engines", "quantize", str(clip), str(out),
                           "--frames", "16"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return out


def test_quantized_model_describes_itself(int8_model):
    backend = load_backend(int8_model)
    assert backend.metadata["precision"] == "int8"
    calibration = json.loads(backend.metadata["calibrated_on"])
    assert calibration["frames"] == 16 and calibration["input_size"] == [256, 320]  # the 320x240 clip, padded as at run time
    assert backend.input("input.1").shape[2:] == ("H", "W")


def test_int8_finds_the_faces_the_float_model_finds(int8_model, street_frame_with_faces, astronaut):
    float_pipeline = Pipeline(AnonymizerConfig(filter="mask", persist_frames=0))
    int8_pipeline = Pipeline(AnonymizerConfig(filter="mask", persist_frames=0, face_model=str(int8_model)))
    for frame in (street_frame_with_faces[0], astronaut):
        reference, quantized = float_pipeline.process(frame), int8_pipeline.process(frame)
        assert quantized.ok and len(quantized.faces) >= len(reference.faces)
        assert (box_iou(reference.faces.boxes, quantized.faces.boxes).max(axis=1) > 0.7).all()


def test_bad_calibration_data_is_one_sentence(tmp_path):
    done = subprocess.run([sys.executable, "-m", "ros_anonymizer.cli", "engines", "quantize", str(tmp_path / "none"),
                           str(tmp_path / "out.onnx")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "does not exist" in done.stderr and "Traceback" not in done.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    done = subprocess.run([sys.executable, "-m", "ros_anonymizer.cli", "engines", "quantize", str(empty),
                           str(tmp_path / "out.onnx")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "no readable images" in done.stderr and not (tmp_path / "out.onnx").exists()
