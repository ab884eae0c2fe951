"""The pipeline fails closed: on any failure there is no output frame, and a clear error."""
from __future__ import annotations

import numpy as np
import pytest
from onnx_models import anonymizer_model, centerface_corrupted, centerface_nan_when_dark, nan_anonymizer_model

from ros_anonymizer.backends import ModelError
from ros_anonymizer.config import AnonymizerConfig, ConfigError
from ros_anonymizer.pipeline import Pipeline, failure_frame


@pytest.fixture(scope="module")
def pipeline():
    return Pipeline(AnonymizerConfig(filter="mask", frame_deadline_ms=0.0))


def test_missing_model_file_stops_start_up():
    with pytest.raises(ModelError, match="does not exist"):
        Pipeline(AnonymizerConfig(face_model="/nonexistent/centerface.onnx"))


def test_broken_model_file_stops_start_up(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"this is not a protobuf" * 10)
    with pytest.raises(ModelError, match="cannot load"):
        Pipeline(AnonymizerConfig(filter="learned", anonymizer_model=str(broken)))


def test_learned_filter_with_a_model_that_is_not_an_anonymizer_stops_start_up(tmp_path):
    model = anonymizer_model(tmp_path / "m.onnx", metadata={"model_kind": "action_detector"})
    with pytest.raises(ModelError, match="not an anonymizer"):
        Pipeline(AnonymizerConfig(filter="learned", anonymizer_model=str(model)))


@pytest.mark.parametrize("frame, message", [
    (np.zeros((0, 0, 3), np.uint8), "empty"),
    (np.zeros((480, 640), np.uint8), "HxWx3"),
    (np.zeros((480, 640, 4), np.uint8), "HxWx3"),
    (np.zeros((480, 640, 3), np.float32), "HxWx3"),
    ("not a frame", "numpy array"),
])
def test_bad_frames_give_no_output_and_a_clear_error(pipeline, frame, message):
    result = pipeline.process(frame)
    assert result.image is None and not result.ok
    assert message in result.error


def test_model_error_at_run_time_gives_no_frame(tmp_path, frame_with_faces):
    """A real ONNX model that runs for one face and fails inside ONNX Runtime for more."""
    frame, _ = frame_with_faces
    model = anonymizer_model(tmp_path / "m.onnx", fixed_batch=1)
    pipeline = Pipeline(AnonymizerConfig(filter="learned", anonymizer_model=str(model), frame_deadline_ms=0.0))
    result = pipeline.process(frame)
    assert result.image is None
    assert "Reshape" in result.error or "shape" in result.error.lower()
    one_face = frame.copy()
    one_face[:, 180:] = 0
    pipeline.reset()
    assert pipeline.process(one_face).ok, "the same model works on one face: the failure above was the model's"


def test_deadline_miss_gives_no_frame(astronaut):
    result = Pipeline(AnonymizerConfig(filter="blur", frame_deadline_ms=0.01)).process(astronaut)
    assert result.image is None and "deadline" in result.error


def test_result_never_is_the_input(pipeline, astronaut):
    result = pipeline.process(astronaut)
    assert result.ok and result.image is not astronaut and not np.shares_memory(result.image, astronaut)


def test_frame_without_faces_is_published_unchanged_but_copied(pipeline):
    sky = np.full((240, 320, 3), 180, np.uint8)
    pipeline.reset()
    result = pipeline.process(sky)
    assert result.ok and len(result.faces) == 0 and np.array_equal(result.image, sky)


def test_failure_frame_follows_on_failure():
    assert failure_frame((4, 5, 3), AnonymizerConfig(on_failure="drop")) is None
    black = failure_frame((4, 5, 3), AnonymizerConfig(on_failure="black"))
    assert black.shape == (4, 5, 3) and not black.any()


def test_reconfigure_changes_the_filter_at_run_time(astronaut):
    pipeline = Pipeline(AnonymizerConfig(filter="mask", frame_deadline_ms=0.0))
    before = pipeline.process(astronaut)
    pipeline.reconfigure(pipeline.config.replace(filter="mosaic", persist_frames=0))
    after = pipeline.process(astronaut)
    x1, y1, x2, y2 = before.regions[0]
    assert (before.image[y1:y2, x1:x2] == 0).all() and after.image[y1:y2, x1:x2].std() > 10


def test_reconfigure_refuses_start_up_only_parameters(pipeline):
    with pytest.raises(ConfigError, match="cannot change while running"):
        pipeline.reconfigure(pipeline.config.replace(backend="tensorrt"))


def test_timings_are_reported(pipeline, astronaut):
    timings = pipeline.process(astronaut).timings_ms
    assert {"faces", "filter", "actions", "total"} <= set(timings) and timings["total"] > 0


def test_a_detector_that_does_not_find_the_known_face_stops_start_up(tmp_path):
    """A real CenterFace with scrambled weights loads and runs, finds nothing, and must not be used."""
    model = centerface_corrupted(tmp_path / "corrupted.onnx")
    with pytest.raises(ModelError, match="did not find the known test face"):
        Pipeline(AnonymizerConfig(face_model=str(model)))


@pytest.mark.parametrize("scale", [0.25, 1.0, 3.0])
def test_the_real_detector_passes_the_self_test_at_any_scale(scale):
    assert Pipeline(AnonymizerConfig(detection_scale=scale)).detector.detection_scale == scale


def test_nan_in_the_detector_output_is_a_failed_frame_never_no_faces(tmp_path, astronaut):
    """Passes the self-test (a bright frame), then outputs NaN on a dark frame: that frame is not published."""
    model = centerface_nan_when_dark(tmp_path / "nan.onnx")
    pipeline = Pipeline(AnonymizerConfig(face_model=str(model), on_failure="drop", frame_deadline_ms=0.0))
    assert pipeline.process(astronaut).ok
    dark = (astronaut // 8).astype(np.uint8)
    result = pipeline.process(dark)
    assert result.image is None and "NaN" in result.error
    black = Pipeline(pipeline.config.replace(on_failure="black"))
    assert black.process(dark).image is None  # `black` is the node's and file tools' business; the pipeline gives nothing


def test_a_detector_whose_output_is_nan_from_the_start_stops_start_up(tmp_path):
    model = centerface_nan_when_dark(tmp_path / "nan.onnx", darkness=1000.0)
    with pytest.raises(ModelError, match="self-test.*NaN"):
        Pipeline(AnonymizerConfig(face_model=str(model)))


def test_nan_in_the_anonymizer_output_is_a_failed_frame(tmp_path, astronaut):
    model = nan_anonymizer_model(tmp_path / "m.onnx")
    pipeline = Pipeline(AnonymizerConfig(filter="learned", anonymizer_model=str(model), frame_deadline_ms=0.0))
    result = pipeline.process(astronaut)
    assert result.image is None and "NaN" in result.error


def test_batched_cameras_find_the_same_faces_as_one_at_a_time(street_frame_with_faces, astronaut):
    """process_batch: one CenterFace run for several cameras' frames gives each camera what process() gives it."""
    import cv2

    from ros_anonymizer.pipeline import process_batch

    street, _ = street_frame_with_faces
    other = cv2.resize(astronaut, (640, 480))
    small = cv2.resize(astronaut, (320, 240))  # a third camera of another size: detected on its own
    config = AnonymizerConfig(filter="mask", frame_deadline_ms=0.0)  # a busy machine must not fail a frame here
    first = Pipeline(config)
    cameras = [first, first.for_another_camera(), first.for_another_camera()]
    assert cameras[1].detector is first.detector and cameras[1].tracker is not first.tracker
    batched = process_batch(cameras, [street, other, small])
    alone = [Pipeline(config).process(frame) for frame in (street, other, small)]
    for b, a in zip(batched, alone):
        assert b.ok and a.ok
        np.testing.assert_allclose(b.faces.boxes, a.faces.boxes, atol=0.5)
        assert np.array_equal(b.image, a.image)
    assert len(batched[0].faces) >= 4


def test_a_detector_failure_fails_the_whole_batch_closed(street_frame_with_faces):
    from ros_anonymizer.pipeline import process_batch

    street, _ = street_frame_with_faces
    first = Pipeline(AnonymizerConfig(filter="mask"))
    second = first.for_another_camera()
    first.detector.detection_scale = float("nan")  # what a broken reconfiguration could leave behind
    results = process_batch([first, second], [street, street.copy()])
    assert [r.image for r in results] == [None, None] and all(r.error for r in results)


def _interrupted_in_c_code(frame):
    """What CPython raises when Ctrl-C's handler fires inside a C extension that then returns a value."""
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        raise SystemError("<built-in method run> returned a result with an exception set")  # chained by context


def _broken_model(frame):
    raise RuntimeError("a broken model")


def test_an_interrupt_wrapped_by_c_code_stops_the_pipeline_instead_of_failing_one_frame(astronaut):
    pipeline = Pipeline(AnonymizerConfig(filter="mask", frame_deadline_ms=0.0))
    pipeline.detector = _interrupted_in_c_code
    with pytest.raises(KeyboardInterrupt):
        pipeline.process(astronaut)
    pipeline.detector = _broken_model
    result = pipeline.process(astronaut)
    assert result.image is None and "a broken model" in result.error  # any other failure still fails closed
