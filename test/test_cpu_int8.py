"""The INT8 CenterFace for CPUs: calibrated on real frames, finds the same faces as the float model."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ros_anonymizer.backends import ModelError, load_backend
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
    assert calibration["frames"] == 16 and calibration["input_size"] == [256, 320]  # the 320x240 clip, resized as at run time
    assert backend.input("input.1").shape[2:] == ("H", "W")


def test_int8_finds_the_faces_the_float_model_finds(int8_model, street_frame_with_faces, astronaut):
    """Every face the float model finds at 0.3, the model calibrated on the user's frames finds at 0.25."""
    from ros_anonymizer.int8_detector import SCORE_TOLERANCE, VERIFY_SCORE

    float_detector = Pipeline(AnonymizerConfig(face_precision="fp32")).detector
    int8_detector = Pipeline(AnonymizerConfig(face_model=str(int8_model))).detector
    for frame in (street_frame_with_faces[0], astronaut):
        reference = float_detector.detect([frame], VERIFY_SCORE)[0].boxes
        quantized = int8_detector.detect([frame], VERIFY_SCORE - SCORE_TOLERANCE)[0].boxes
        assert len(reference) and (box_iou(reference, quantized).max(axis=1) > 0.7).all()


def test_bad_calibration_data_is_one_sentence(tmp_path):
    done = subprocess.run([sys.executable, "-m", "ros_anonymizer.cli", "engines", "quantize", str(tmp_path / "none"),
                           str(tmp_path / "out.onnx")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "does not exist" in done.stderr and "Traceback" not in done.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    done = subprocess.run([sys.executable, "-m", "ros_anonymizer.cli", "engines", "quantize", str(empty),
                           str(tmp_path / "out.onnx")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "no readable images" in done.stderr and not (tmp_path / "out.onnx").exists()


@pytest.fixture(scope="module")
def accepted_int8(tmp_path_factory):
    """An INT8 CenterFace made by the runtime in a fresh cache, with the verification waived (to test what follows it)."""
    import ros_anonymizer.int8_detector as int8_detector

    cache = tmp_path_factory.mktemp("int8_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(int8_detector, "MIN_AGREEMENT", 0.0)
        pipeline = Pipeline(AnonymizerConfig(filter="mask", engine_cache_dir=str(cache)))
    return cache, pipeline


def test_an_int8_model_that_passes_verification_is_made_once_and_used(accepted_int8):
    from ros_anonymizer.int8_detector import cache_path

    cache, pipeline = accepted_int8
    meta = pipeline.detector.backend.metadata
    assert meta["precision"] == "int8" and "agreement" in json.loads(meta["verification"])
    cached = cache_path(cache)
    made = cached.stat().st_mtime_ns
    assert Pipeline(AnonymizerConfig(filter="mask", engine_cache_dir=str(cache))).detector.backend.metadata["precision"] == "int8"
    assert cached.stat().st_mtime_ns == made, "a second start uses the cached model"
    assert [p.name for p in cache.iterdir()] == [cached.name], "no half-written files are left"


def test_the_default_detector_is_int8_only_when_it_kept_the_float_models_borderline_faces():
    """The shipped verification: generated faces that are blurred, faint or partly covered, where INT8 loses recall."""
    from ros_anonymizer.int8_detector import MIN_AGREEMENT, cache_path

    config = AnonymizerConfig()
    detector = Pipeline(config).detector
    refused = cache_path(config.engine_cache_dir).with_suffix(".refused")
    if refused.is_file():
        assert json.loads(refused.read_text())["agreement"] < MIN_AGREEMENT
        assert "precision" not in detector.backend.metadata
        with pytest.raises(ModelError, match="fewer faces than the float one"):
            Pipeline(config.replace(face_precision="int8"))
    else:
        assert json.loads(detector.backend.metadata["verification"])["agreement"] >= MIN_AGREEMENT


def test_face_precision_fp32_forces_the_float_detector():
    assert "precision" not in Pipeline(AnonymizerConfig(face_precision="fp32")).detector.backend.metadata


def test_runtime_int8_finds_the_faces_the_float_model_finds_on_clear_faces(accepted_int8, street_frame_with_faces, jhmdb_frames):
    """On real frames: every face the float model finds at 0.3, the INT8 one finds at 0.25 (scores move a little)."""
    from ros_anonymizer.int8_detector import SCORE_TOLERANCE, VERIFY_SCORE

    int8 = accepted_int8[1].detector
    fp32 = Pipeline(AnonymizerConfig(filter="mask", persist_frames=0, face_precision="fp32")).detector
    missed = total = 0
    for frame in [street_frame_with_faces[0]] + jhmdb_frames:
        reference, quantized = fp32.detect([frame], VERIFY_SCORE)[0].boxes, int8.detect([frame], VERIFY_SCORE - SCORE_TOLERANCE)[0].boxes
        total += len(reference)
        missed += sum(not len(quantized) or box_iou(reference[i:i + 1], quantized).max() < 0.4 for i in range(len(reference)))
    assert total >= 20 and missed <= 0.1 * total, f"INT8 missed {missed} of the float model's {total} faces"


def test_an_int8_model_that_falls_short_is_refused(tmp_path, monkeypatch, caplog):
    """Verification that cannot be met: the float model runs, with a warning; forcing int8 stops start-up."""
    import ros_anonymizer.int8_detector as int8_detector

    monkeypatch.setattr(int8_detector, "MIN_AGREEMENT", 1.01)
    config = AnonymizerConfig(engine_cache_dir=str(tmp_path))
    with caplog.at_level("WARNING"):
        pipeline = Pipeline(config)
    assert "precision" not in pipeline.detector.backend.metadata
    assert "the float detector runs" in caplog.text
    assert list(tmp_path.glob("*.refused")) and not list(tmp_path.glob("*.onnx"))


def test_an_unwritable_cache_means_the_float_detector(tmp_path, caplog):
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder would be")
    with caplog.at_level("WARNING"):
        pipeline = Pipeline(AnonymizerConfig(engine_cache_dir=str(blocked / "engines")))
    assert "precision" not in pipeline.detector.backend.metadata and "could not be made" in caplog.text


def test_on_a_gpu_the_default_detector_is_float(monkeypatch):
    """ONNX Runtime's CUDA provider or TensorRT: INT8 for the CPU is not made; the float model (or its engine) runs."""
    import onnxruntime

    from ros_anonymizer.faces import centerface_onnx
    from ros_anonymizer.int8_detector import default_face_model

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert default_face_model(AnonymizerConfig()) == centerface_onnx()
    assert default_face_model(AnonymizerConfig(backend="tensorrt")) == centerface_onnx()


def test_every_backend_checks_its_outputs_the_same_way():
    """The NaN/Inf check lives in Backend.run; backends implement _run, so none can skip it."""
    from ros_anonymizer.backends.base import Backend
    from ros_anonymizer.backends.onnxruntime_backend import OnnxRuntimeBackend
    from ros_anonymizer.backends.tensorrt_backend import TensorRTBackend

    assert OnnxRuntimeBackend.run is Backend.run and TensorRTBackend.run is Backend.run
