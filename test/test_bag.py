"""`ros-anonymizer bag anonymize`: real rosbag2 bags (sqlite3 and mcap) built from real clips and faces.

The bags are written here with rosbags' own serializer, and the output is
read back with rosbags and with rclpy's generated vision_msgs, so the tool's
serialization is checked against two independent ones.
"""
from __future__ import annotations

import hashlib
import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper
from rclpy.serialization import deserialize_message
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.rosbag2.enums import CompressionFormat, CompressionMode
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from onnx_models import anonymizer_model
from ros_anonymizer.cli import main

STORE = get_typestore(Stores.ROS2_KILTED)  # independent of the tool's own typestore
T = STORE.types
START_NS = 1_700_000_000_000_000_000
PERIOD_NS = 33_333_333
RAW, COMPRESSED, DISPARITY = "/camera/image_raw", "/camera/image_raw/compressed", "/camera/disparity"
FACE_SIZE = (56, 66)  # w, h of the pasted face
ROW_PADDING = 32  # bytes at the end of each raw image row: step must be honoured


def _qos(reliability: QosReliability, durability: QosDurability, depth: int) -> Qos:
    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, depth, reliability, durability, zero, zero, QosLiveliness.AUTOMATIC, zero, False)


QOS = {
    RAW: [_qos(QosReliability.BEST_EFFORT, QosDurability.VOLATILE, 1)],
    COMPRESSED: [_qos(QosReliability.RELIABLE, QosDurability.VOLATILE, 5)],
    "/chatter": [_qos(QosReliability.RELIABLE, QosDurability.VOLATILE, 10)],
    "/imu": [_qos(QosReliability.BEST_EFFORT, QosDurability.VOLATILE, 100)],
    "/tf_static": [_qos(QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL, 1)],
    DISPARITY: [],
}


@pytest.fixture(scope="module")
def face_frames(sample_clip, sample_faces) -> list[tuple[np.ndarray, tuple[int, int, int, int]]]:
    """The sample clip's 40 frames (320x240) with a sample face pasted into each, drifting across the frame, and its rectangle."""
    frames = []
    for i, frame in enumerate(sample_clip):
        frame = frame.copy()
        x, y = 190 + (i % 20), 12 + (i % 3)
        face = sample_faces[i % 4][1][60:190, 70:180]
        frame[y:y + FACE_SIZE[1], x:x + FACE_SIZE[0]] = cv2.resize(face, FACE_SIZE, interpolation=cv2.INTER_AREA)
        frames.append((frame, (x, y, x + FACE_SIZE[0], y + FACE_SIZE[1])))
    return frames


@pytest.fixture(scope="module")
def action_model(tmp_path_factory) -> Path:
    """A real ONNX action detector following A's contract that always finds one person 'catch'ing at a fixed box."""
    consts = [
        helper.make_node("Constant", [], ["boxes"], value=helper.make_tensor("b", TensorProto.FLOAT, [1, 4], [40, 30, 200, 230])),
        helper.make_node("Constant", [], ["scores"], value=helper.make_tensor("s", TensorProto.FLOAT, [1], [0.9])),
        helper.make_node("Constant", [], ["labels"], value=helper.make_tensor("l", TensorProto.INT64, [1], [1])),
    ]
    graph = helper.make_graph(consts, "action_detector",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 240, 320])],
                              [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 4]),
                               helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1]),
                               helper.make_tensor_value_info("labels", TensorProto.INT64, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in {"model_kind": "action_detector", "input_size": "[240, 320]", "trained_on": "nothing: a test model",
                       "normalization": '{"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}',
                       "classes": '["background", "catch"]'}.items():
        model.metadata_props.add(key=key, value=value)
    path = tmp_path_factory.mktemp("models") / "actions.onnx"
    onnx.save(model, str(path))
    return path


# Writing and reading bags ----------------------------------------------------------

def _header(ns: int, frame_id: str = "camera_optical"):
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9), frame_id=frame_id)


def raw_image(rgb: np.ndarray, ns: int):
    """bgr8 with padded rows, as some camera drivers send."""
    height, width = rgb.shape[:2]
    rows = np.zeros((height, width * 3 + ROW_PADDING), np.uint8)
    rows[:, :width * 3] = rgb[:, :, ::-1].reshape(height, -1)
    return T["sensor_msgs/msg/Image"](header=_header(ns), height=height, width=width, encoding="bgr8", is_bigendian=0,
                                      step=width * 3 + ROW_PADDING, data=rows.reshape(-1))


def compressed_image(rgb: np.ndarray, ns: int):
    ok, jpeg = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return T["sensor_msgs/msg/CompressedImage"](header=_header(ns), format="bgr8; jpeg compressed bgr8", data=jpeg.reshape(-1))


def _others(i: int, ns: int) -> list[tuple[str, str, int, object]]:
    """Non-image messages around frame i: (topic, type, timestamp, message)."""
    v3 = T["geometry_msgs/msg/Vector3"]
    imu = [(("/imu", "sensor_msgs/msg/Imu", ns + k * 5_000_000, T["sensor_msgs/msg/Imu"](
        header=_header(ns + k * 5_000_000, "imu"), orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.1 * i, w=1.0),
        orientation_covariance=np.full(9, 0.01), angular_velocity=v3(x=0.01 * i, y=0.0, z=-0.02),
        angular_velocity_covariance=np.zeros(9), linear_acceleration=v3(x=0.0, y=0.0, z=9.81),
        linear_acceleration_covariance=np.zeros(9)))) for k in range(2)]
    chatter = [("/chatter", "std_msgs/msg/String", ns + 7, T["std_msgs/msg/String"](data=f"frame {i} seen"))]
    if i:
        return imu + chatter
    transform = T["geometry_msgs/msg/TransformStamped"](
        header=_header(ns, "base_link"), child_frame_id="camera_optical",
        transform=T["geometry_msgs/msg/Transform"](translation=v3(x=0.1, y=0.0, z=1.2),
                                                   rotation=T["geometry_msgs/msg/Quaternion"](x=0.5, y=-0.5, z=0.5, w=-0.5)))
    return imu + chatter + [("/tf_static", "tf2_msgs/msg/TFMessage", ns, T["tf2_msgs/msg/TFMessage"](transforms=[transform]))]


def disparity(rgb: np.ndarray, ns: int):
    """stereo_msgs/DisparityImage: a picture inside another message type, which the tool cannot anonymize."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    image = T["sensor_msgs/msg/Image"](header=_header(ns), height=grey.shape[0], width=grey.shape[1], encoding="32FC1",
                                       is_bigendian=0, step=grey.shape[1] * 4, data=grey.view(np.uint8).reshape(-1))
    region = T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return T["stereo_msgs/msg/DisparityImage"](header=_header(ns), image=image, f=500.0, t=0.1, valid_window=region,
                                               min_disparity=0.0, max_disparity=64.0, delta_d=0.125)


def write_bag(path: Path, storage: str, frames, *, compressed: bool = True, others: bool = True,
              extra: list[tuple[str, str, int, object]] = (), store=STORE) -> None:
    """A rosbag2 bag: raw and compressed camera images, IMU, chatter, tf_static, a disparity image, and `extra`."""
    messages = []
    for i, (rgb, _) in enumerate(frames):
        ns = START_NS + i * PERIOD_NS
        messages.append((RAW, "sensor_msgs/msg/Image", ns, raw_image(rgb, ns)))
        if compressed:
            messages.append((COMPRESSED, "sensor_msgs/msg/CompressedImage", ns + 1_000, compressed_image(rgb, ns)))
        if others:
            messages += _others(i, ns)
            if i % 5 == 0:
                messages.append((DISPARITY, "stereo_msgs/msg/DisparityImage", ns + 2_000, disparity(rgb, ns)))
    messages += list(extra)
    with Writer(path, version=9, storage_plugin=StoragePlugin[storage.upper()]) as writer:
        connections = {}
        for topic, msgtype, ns, msg in sorted(messages, key=lambda m: m[2]):
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=store, offered_qos_profiles=QOS.get(topic, []))
            data = msg if isinstance(msg, bytes) else bytes(STORE.serialize_cdr(msg, msgtype))
            writer.write(connections[topic], ns, data)


def read_bag(path: Path) -> tuple[dict[str, list[tuple[int, bytes]]], dict[str, object]]:
    """(topic -> [(timestamp, raw bytes)], topic -> connection)."""
    messages: dict[str, list[tuple[int, bytes]]] = {}
    with Reader(path) as reader:
        connections = {c.topic: c for c in reader.connections}
        for conn, ns, raw in reader.messages():
            messages.setdefault(conn.topic, []).append((ns, bytes(raw)))
    return messages, connections


def storage_of(path: Path) -> str:
    with Reader(path) as reader:
        return "mcap" if type(reader.storage.storages[0]).__name__ == "McapReader" else "sqlite3"


def tree_hash(path: Path) -> str:
    digest = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f.relative_to(path).as_posix().encode() + f.read_bytes())
    return digest.hexdigest()


def decode_rgb(msgtype: str, raw: bytes) -> np.ndarray:
    msg = STORE.deserialize_cdr(raw, msgtype)
    if msgtype.endswith("CompressedImage"):
        return cv2.imdecode(np.asarray(msg.data), cv2.IMREAD_COLOR)[:, :, ::-1]
    assert msg.encoding == "bgr8", "the output keeps the input's encoding family"
    rows = np.asarray(msg.data).reshape(msg.height, msg.step)[:, :msg.width * 3]
    return rows.reshape(msg.height, msg.width, 3)[:, :, ::-1]


def bag_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ros_anonymizer.cli", "bag", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


# Tests -------------------------------------------------------------------------------

@pytest.mark.parametrize("storage, out_storage", [("sqlite3", None), ("mcap", "sqlite3")])
def test_every_image_is_anonymized_and_everything_else_is_copied(tmp_path, face_frames, action_model, storage, out_storage):
    from vision_msgs.msg import Detection2DArray

    frames = face_frames[:16]
    src, dst = tmp_path / "in", tmp_path / "out"
    write_bag(src, storage, frames)
    before = tree_hash(src)
    args = ["bag", "anonymize", str(src), str(dst), "--no-progress", "--set", f"action_model={action_model}"]
    assert main(args + (["--storage", out_storage] if out_storage else [])) == 0

    assert tree_hash(src) == before, "the input bag must never be modified"
    assert storage_of(dst) == (out_storage or storage)
    assert not list(tmp_path.glob(".out.partial*"))
    inputs, in_conns = read_bag(src)
    outputs, out_conns = read_bag(dst)
    assert set(out_conns) == set(in_conns) - {DISPARITY} | {RAW + "/detections", COMPRESSED + "/detections"}

    for topic in set(in_conns) - {RAW, COMPRESSED, DISPARITY}:  # copied byte for byte, same time, type, QoS
        assert outputs[topic] == inputs[topic], topic
        for field in ("msgtype", "digest"):
            assert getattr(out_conns[topic], field) == getattr(in_conns[topic], field)
        assert out_conns[topic].ext == in_conns[topic].ext, f"{topic}: serialization format and QoS must be kept"

    for topic, msgtype in ((RAW, "sensor_msgs/msg/Image"), (COMPRESSED, "sensor_msgs/msg/CompressedImage")):
        assert out_conns[topic].ext == in_conns[topic].ext
        assert [ns for ns, _ in outputs[topic]] == [ns for ns, _ in inputs[topic]], "one output per frame, same times"
        detections = outputs[topic + "/detections"]
        assert [ns for ns, _ in detections] == [ns for ns, _ in inputs[topic]]
        for (_, raw_in), (_, raw_out), (_, raw_det), (rgb, (x1, y1, x2, y2)) in zip(inputs[topic], outputs[topic], detections, frames):
            assert raw_out != raw_in
            header = STORE.deserialize_cdr(raw_in, msgtype).header
            assert STORE.deserialize_cdr(raw_out, msgtype).header == header
            out = decode_rgb(msgtype, raw_out).astype(np.int16)
            face_change = np.abs(out[y1:y2, x1:x2] - rgb[y1:y2, x1:x2]).mean()
            assert face_change > 8, f"{topic} at {header.stamp}: the face region is almost unchanged ({face_change:.1f})"
            far_change = np.abs(out[150:, :120] - rgb[150:, :120]).mean()
            assert far_change < 4, "only faces are anonymized; the rest of the frame is kept"
            found = deserialize_message(raw_det, Detection2DArray)  # rclpy's generated type reads what rosbags wrote
            assert (found.header.stamp.sec, found.header.stamp.nanosec, found.header.frame_id) == (
                header.stamp.sec, header.stamp.nanosec, header.frame_id)
            (person,) = found.detections
            assert person.header == found.header and person.id == "1"
            assert person.results[0].hypothesis.class_id == "catch"
            assert person.results[0].hypothesis.score == pytest.approx(0.9)
            bbox = person.bbox
            assert (bbox.center.position.x, bbox.center.position.y, bbox.size_x, bbox.size_y) == pytest.approx((120, 130, 160, 200))


def test_vision_msgs_registered_from_the_msg_files_match_the_built_package():
    import vision_msgs

    from ros_anonymizer.bag.types import DETECTIONS_TYPE, typestore

    prefix = Path(vision_msgs.__file__).parents[4]  # <prefix>/lib/pythonX.Y/site-packages/vision_msgs
    description = prefix / "share" / "vision_msgs" / "msg" / "Detection2DArray.json"
    assert f'"hash_string": "{typestore().hash_rihs01(DETECTIONS_TYPE)}"' in description.read_text()


def test_undecodable_frames_are_dropped_never_copied(tmp_path, face_frames, capsys):
    frames = face_frames[:4]
    good = [raw_image(rgb, START_NS + i * PERIOD_NS) for i, (rgb, _) in enumerate(frames)]
    ns = START_NS + 10 * PERIOD_NS
    bad_raw = []
    for k, change in enumerate([dict(data=good[0].data[:-100]), dict(encoding="yuv9000"), dict(height=0, width=0, step=0),
                                dict(step=good[0].width * 2)]):
        fields = {f: getattr(good[0], f) for f in ("height", "width", "encoding", "is_bigendian", "step", "data")}
        fields.update(change)
        bad_raw.append((RAW, "sensor_msgs/msg/Image", ns + k, T["sensor_msgs/msg/Image"](header=_header(ns + k), **fields)))
    jpeg = compressed_image(frames[0][0], ns)
    broken = np.concatenate([jpeg.data[:600], np.full(len(jpeg.data) - 600, 0x55, np.uint8)])
    not_an_image = np.frombuffer(b"not an image", np.uint8)
    bad_compressed = [(COMPRESSED, "sensor_msgs/msg/CompressedImage", ns + 10 + k, T["sensor_msgs/msg/CompressedImage"](
        header=_header(ns + 10 + k), format="jpeg", data=data)) for k, data in enumerate([broken, not_an_image])]
    src, dst = tmp_path / "in", tmp_path / "out"
    write_bag(src, "sqlite3", frames, others=False, extra=bad_raw + bad_compressed)

    assert main(["bag", "anonymize", str(src), str(dst), "--no-progress", "--set", "on_failure=black"]) == 1
    inputs, _ = read_bag(src)
    outputs, _ = read_bag(dst)
    for topic in (RAW, COMPRESSED):
        good_times = [START_NS + i * PERIOD_NS + (1_000 if topic == COMPRESSED else 0) for i in range(len(frames))]
        assert [t for t, _ in outputs[topic]] == good_times, "exactly the good frames come out"
        assert not {raw for _, raw in outputs[topic]} & {raw for _, raw in inputs[topic]}
    report = capsys.readouterr()
    assert f"{RAW}: 8 frames, 4 anonymized" in report.out and "4 undecodable" in report.out
    assert f"{COMPRESSED}: 6 frames, 4 anonymized" in report.out and "2 undecodable" in report.out
    assert "6 messages could not be anonymized" in report.err


@pytest.mark.parametrize("on_failure", ["drop", "black"])
def test_a_failing_model_drops_frames_or_blackens_them(tmp_path, face_frames, on_failure):
    # The anonymizer pins its batch to 7 faces: every frame here has fewer, so ONNX Runtime fails each one.
    model = anonymizer_model(tmp_path / "m.onnx", fixed_batch=7)
    frames = face_frames[:5]
    src, dst = tmp_path / "in", tmp_path / "out"
    write_bag(src, "mcap", frames, compressed=False, extra=[])
    args = ["bag", "anonymize", str(src), str(dst), "--no-progress", "--set", "filter=learned",
            "--set", f"anonymizer_model={model}", "--set", f"on_failure={on_failure}"]
    assert main(args) == 1
    inputs, _ = read_bag(src)
    outputs, _ = read_bag(dst)
    assert outputs["/chatter"] == inputs["/chatter"]
    assert RAW + "/detections" not in outputs
    if on_failure == "drop":
        assert RAW not in outputs
    else:
        assert [t for t, _ in outputs[RAW]] == [t for t, _ in inputs[RAW]]
        for _, raw in outputs[RAW]:
            assert not decode_rgb("sensor_msgs/msg/Image", raw).any(), "a frame that failed is published black"


def bag_run_in_progress(src: Path, dst: Path) -> subprocess.Popen:
    """`bag anonymize SRC DST` in a child process, returned once some frames are written to its hidden partial bag."""
    process = subprocess.Popen([sys.executable, "-m", "ros_anonymizer.cli", "bag", "anonymize", str(src), str(dst), "--no-progress"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(dst.parent.glob(f".{dst.name}.partial-*/bag/*")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    time.sleep(0.3)  # some frames written to the temporary bag
    assert process.poll() is None, "the run must still be going when stopped: " + process.stderr.read()
    return process


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_leaves_no_output_and_the_input_untouched(tmp_path, face_frames, signum):
    src, dst = tmp_path / "in", tmp_path / "out"
    write_bag(src, "sqlite3", face_frames * 3, compressed=False, others=False)  # 120 frames: several seconds of work
    before = tree_hash(src)
    process = bag_run_in_progress(src, dst)
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    # 130 from the CLI; CPython reports -SIGINT instead when the interrupt passed through exec'd code
    # (rosbags compiles its deserializers with exec), after the same cleanup.
    assert process.returncode in (130, -signal.SIGINT), err
    assert "interrupted" in err and "Traceback" not in err
    assert not dst.exists() and not list(tmp_path.glob(".out*")), "no partial bag may remain"
    assert tree_hash(src) == before


def test_a_killed_run_shows_no_output_and_the_next_run_removes_what_it_left(tmp_path, face_frames):
    src, dst = tmp_path / "in", tmp_path / "out"
    write_bag(src, "sqlite3", face_frames * 2, compressed=False, others=False)
    before = tree_hash(src)
    process = bag_run_in_progress(src, dst)
    process.kill()  # SIGKILL: no clean-up code runs
    process.communicate(timeout=30)
    assert not dst.exists(), "OUT appears only complete"
    assert len(list(tmp_path.glob(".out.partial-*"))) == 1, "a killed process cannot remove its hidden partial folder"
    assert main(["bag", "anonymize", str(src), str(dst), "--no-progress"]) == 0
    assert not list(tmp_path.glob(".out.partial-*")), "the next run for the same output removes the orphan"
    assert len(read_bag(dst)[0][RAW]) == 2 * len(face_frames) and tree_hash(src) == before


def test_never_writes_over_the_input_or_an_existing_bag(tmp_path, face_frames, capsys):
    src = tmp_path / "in"
    write_bag(src, "sqlite3", face_frames[:3])
    before = tree_hash(src)
    for dst, extra in ((src, ["--overwrite"]), (src / "inside", ["--overwrite"]), (tmp_path, ["--overwrite"])):
        assert main(["bag", "anonymize", str(src), str(dst), *extra]) == 2
        assert "would overwrite the input" in capsys.readouterr().err
    assert tree_hash(src) == before

    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    assert main(["bag", "anonymize", str(src), str(existing), "--topics", "/chatter"]) == 2
    assert "already exists" in capsys.readouterr().err and (existing / "keep.txt").read_text() == "mine"

    assert main(["bag", "anonymize", str(src), str(existing), "--no-progress", "--overwrite", "--topics", COMPRESSED, "/chatter"]) == 0
    outputs, _ = read_bag(existing)
    inputs, _ = read_bag(src)
    assert set(outputs) == {COMPRESSED, COMPRESSED + "/detections", "/chatter"}
    assert not {raw for _, raw in outputs[COMPRESSED]} & {raw for _, raw in inputs[COMPRESSED]}
    assert tree_hash(src) == before and not list(tmp_path.glob(".existing*"))


def test_a_bag_without_type_hashes_gets_them_from_its_definitions(tmp_path, face_frames):
    src, dst = tmp_path / "in", tmp_path / "out"
    write_bag(src, "sqlite3", face_frames[:2], compressed=False)
    _, recorded = read_bag(src)
    meta = yaml.safe_load((src / "metadata.yaml").read_text())
    for topic in meta["rosbag2_bagfile_information"]["topics_with_message_count"]:
        del topic["topic_metadata"]["type_description_hash"]  # as in bags from before ROS 2 Iron
    (src / "metadata.yaml").write_text(yaml.safe_dump(meta))
    assert not any(c.digest for c in read_bag(src)[1].values())
    assert main(["bag", "anonymize", str(src), str(dst), "--topics", "/imu", "/tf_static", "--no-progress"]) == 0
    inputs, _ = read_bag(src)
    outputs, written = read_bag(dst)
    for topic in ("/imu", "/tf_static"):
        assert written[topic].digest == recorded[topic].digest and outputs[topic] == inputs[topic]


def _not_a_bag(tmp_path: Path) -> Path:
    (tmp_path / "folder").mkdir()
    return tmp_path / "folder"


def _text_file(tmp_path: Path) -> Path:
    (tmp_path / "notes.txt").write_text("not a bag")
    return tmp_path / "notes.txt"


def _damaged_metadata(tmp_path: Path, face_frames) -> Path:
    write_bag(tmp_path / "bag", "sqlite3", face_frames[:1], compressed=False, others=False)
    (tmp_path / "bag" / "metadata.yaml").write_text("rosbag2_bagfile_information: [unclosed")
    return tmp_path / "bag"


def _unknown_storage(tmp_path: Path, face_frames) -> Path:
    write_bag(tmp_path / "bag", "sqlite3", face_frames[:1], compressed=False, others=False)
    meta = tmp_path / "bag" / "metadata.yaml"
    meta.write_text(meta.read_text().replace("storage_identifier: sqlite3", "storage_identifier: tape"))
    return tmp_path / "bag"


def _small_bag(tmp_path: Path, face_frames) -> Path:
    write_bag(tmp_path / "bag", "mcap", face_frames[:1], compressed=False)
    return tmp_path / "bag"


def _garbage_database(tmp_path: Path, face_frames) -> Path:
    write_bag(tmp_path / "bag", "sqlite3", face_frames[:1], compressed=False, others=False)
    (tmp_path / "bag" / "bag.db3").write_bytes(b"this is no database" * 100)
    return tmp_path / "bag"


@pytest.mark.parametrize("make_input, extra, message", [
    (lambda tmp, frames: tmp / "missing", [], "does not exist"),
    (lambda tmp, frames: _not_a_bag(tmp), [], "has no metadata.yaml"),
    (lambda tmp, frames: _text_file(tmp), [], "cannot be read as a rosbag2 bag"),
    (_damaged_metadata, [], "cannot be read as a rosbag2 bag"),
    (_unknown_storage, [], "cannot be read as a rosbag2 bag"),
    (_garbage_database, [], "cannot be read as a rosbag2 bag"),
    (_small_bag, ["--topics", "/nope"], "has no topic /nope"),
    (_small_bag, ["--set", "filter=pixelate"], "filter must be one of"),
])
def test_bad_input_stops_with_one_plain_sentence(tmp_path, face_frames, make_input, extra, message):
    src = make_input(tmp_path, face_frames)
    done = bag_cli("anonymize", src, tmp_path / "out", "--no-progress", *extra)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


# rosbag2 metadata versions -------------------------------------------------------------
# The layouts as rosbag2 reads them (rosbag2_storage metadata_io.cpp / yaml.hpp, humble and jazzy
# branches): version 5 is what Humble writes and reads; 6 adds custom_data, 7 the type hash, 8
# ros_distro, 9 the QoS profiles as a YAML list with names (Humble parses a string with numbers).
V5_KEYS = {"version", "storage_identifier", "duration", "starting_time", "message_count", "topics_with_message_count",
           "compression_format", "compression_mode", "relative_file_paths", "files"}
BAG_KEYS = {5: V5_KEYS, 6: V5_KEYS | {"custom_data"}, 7: V5_KEYS | {"custom_data"},
            8: V5_KEYS | {"custom_data", "ros_distro"}, 9: V5_KEYS | {"custom_data", "ros_distro"}}
TOPIC_KEYS = {v: {"name", "type", "serialization_format", "offered_qos_profiles"} | ({"type_description_hash"} if v >= 7 else set())
              for v in BAG_KEYS}
# rmw enum numbers (rmw/types.h): KEEP_LAST 1, RELIABLE 1, BEST_EFFORT 2, TRANSIENT_LOCAL 1, VOLATILE 2, AUTOMATIC 1
QOS_NUMBERS = {RAW: (1, 1, 2, 2), COMPRESSED: (1, 5, 1, 2), "/tf_static": (1, 1, 1, 1)}
QOS_NAMES = {RAW: ("keep_last", 1, "best_effort", "volatile"), COMPRESSED: ("keep_last", 5, "reliable", "volatile"),
             "/tf_static": ("keep_last", 1, "reliable", "transient_local")}


def _check_layout(info: dict, version: int) -> None:
    assert info["version"] == version
    assert set(info) == BAG_KEYS[version], f"version {version} holds exactly its documented keys"
    assert info["compression_mode"] == "" and info["compression_format"] == ""
    assert [f["path"] for f in info["files"]] == info["relative_file_paths"]
    for entry in info["topics_with_message_count"]:
        meta = entry["topic_metadata"]
        assert set(meta) == TOPIC_KEYS[version], meta["name"]
        if meta["name"] not in QOS_NUMBERS:
            continue
        profiles = meta["offered_qos_profiles"]
        if version < 9:
            assert isinstance(profiles, str), "before version 9 the profiles are a YAML string (Humble parses a string)"
            (qos,) = yaml.safe_load(profiles)
            assert (qos["history"], qos["depth"], qos["reliability"], qos["durability"]) == QOS_NUMBERS[meta["name"]]
            assert qos["liveliness"] == 1 and qos["deadline"] == {"sec": 0, "nsec": 0}
        else:
            (qos,) = profiles
            assert (qos["history"], qos["depth"], qos["reliability"], qos["durability"]) == QOS_NAMES[meta["name"]]
            assert qos["liveliness"] == "automatic"


@pytest.mark.parametrize("target, version, storage", [
    ("humble", 5, "sqlite3"), ("humble", 5, "mcap"), ("6", 6, "sqlite3"), ("iron", 7, "sqlite3"), ("8", 8, "mcap"),
    ("jazzy", 9, "sqlite3"), ("kilted", 9, "mcap")])
def test_metadata_is_written_in_the_target_distributions_layout(tmp_path, face_frames, target, version, storage):
    src, dst = tmp_path / "in", tmp_path / "out"
    write_bag(src, storage, face_frames[:2])
    assert main(["bag", "anonymize", str(src), str(dst), "--no-progress", "--metadata-version", target]) == 0
    info = yaml.safe_load((dst / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    _check_layout(info, version)
    if version >= 6:
        assert info["custom_data"]["ros_anonymizer"].endswith("filter=blur")
    if storage == "sqlite3":  # the copy inside the database (read by `ros2 bag reindex`) says the same
        with sqlite3.connect(next(dst.glob("*.db3"))) as db:
            embedded_version, text = db.execute("SELECT metadata_version, metadata FROM metadata").fetchone()
        assert embedded_version == version
        _check_layout(yaml.safe_load(text), version)
    else:  # the copy in the mcap file's rosbag2 metadata record
        _check_layout(_mcap_embedded_metadata(next(dst.glob("*.mcap"))), version)
    inputs, in_conns = read_bag(src)
    outputs, out_conns = read_bag(dst)  # rosbags reads every version back, QoS included
    assert outputs["/chatter"] == inputs["/chatter"]
    for topic in QOS_NUMBERS:
        assert out_conns[topic].ext == in_conns[topic].ext


@pytest.mark.parametrize("recorded", [5, 8, 9])
def test_the_input_version_is_kept_by_default(tmp_path, face_frames, recorded):
    src, dst = tmp_path / "in", tmp_path / "out"
    with Writer(src, version=max(recorded, 8)) as writer:
        conn = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=STORE, offered_qos_profiles=QOS["/chatter"])
        writer.write(conn, START_NS, bytes(STORE.serialize_cdr(T["std_msgs/msg/String"](data="hi"), "std_msgs/msg/String")))
    if recorded == 5:  # as Humble writes it
        meta = yaml.safe_load((src / "metadata.yaml").read_text())
        info = meta["rosbag2_bagfile_information"]
        info["version"] = 5
        for key in ("custom_data", "ros_distro"):
            info.pop(key)
        info["topics_with_message_count"][0]["topic_metadata"].pop("type_description_hash")
        (src / "metadata.yaml").write_text(yaml.safe_dump(meta))
    assert main(["bag", "anonymize", str(src), str(dst), "--no-progress"]) == 0
    assert yaml.safe_load((dst / "metadata.yaml").read_text())["rosbag2_bagfile_information"]["version"] == recorded


def _mcap_records(path: Path) -> list[tuple[int, bytes]]:
    """(opcode, body) of every record of an mcap file, in order (the MCAP format: opcode, uint64 length, body)."""
    data, records, i = path.read_bytes(), [], 8
    while i + 9 <= len(data) - 8:
        opcode, length = data[i], int.from_bytes(data[i + 1:i + 9], "little")
        records.append((opcode, data[i + 9:i + 9 + length]))
        i += 9 + length
    return records


def _mcap_string(body: bytes, at: int) -> tuple[str, int]:
    n = int.from_bytes(body[at:at + 4], "little")
    return body[at + 4:at + 4 + n].decode(), at + 4 + n


def _mcap_chunk_compressions(path: Path) -> set[str]:
    """The compression named by every Chunk record (opcode 0x06): after start, end, uncompressed size and crc."""
    return {_mcap_string(body, 28)[0] for opcode, body in _mcap_records(path) if opcode == 0x06}


def _mcap_embedded_metadata(path: Path) -> dict:
    """The `rosbag2` Metadata record (opcode 0x0C): name, then a map whose serialized_metadata is the YAML."""
    for opcode, body in _mcap_records(path):
        if opcode == 0x0C and _mcap_string(body, 0)[0] == "rosbag2":
            at = _mcap_string(body, 0)[1] + 4
            key, at = _mcap_string(body, at)
            value, _ = _mcap_string(body, at)
            assert key == "serialized_metadata"
            return yaml.safe_load(value)
    raise AssertionError("no rosbag2 metadata record")


@pytest.mark.parametrize("out_storage, mode", [("mcap", ""), ("sqlite3", "message")])
def test_mcap_output_never_uses_rosbag2_compression(tmp_path, face_frames, out_storage, mode):
    src, dst = tmp_path / "in", tmp_path / "out"
    writer = Writer(src, version=9)  # rosbag2 message compression in the input
    writer.set_compression(CompressionMode.MESSAGE, CompressionFormat.ZSTD)
    with writer:
        conn = writer.add_connection(RAW, "sensor_msgs/msg/Image", typestore=STORE)
        for i, (rgb, _) in enumerate(face_frames[:2]):
            writer.write(conn, START_NS + i, bytes(STORE.serialize_cdr(raw_image(rgb, START_NS + i), "sensor_msgs/msg/Image")))
    assert main(["bag", "anonymize", str(src), str(dst), "--no-progress", "--storage", out_storage]) == 0
    info = yaml.safe_load((dst / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["compression_mode"] == mode and info["compression_format"] == ("zstd" if mode else "")
    if out_storage == "mcap":
        assert _mcap_chunk_compressions(next(dst.glob("*.mcap"))) == {"zstd"}, "MCAP's own chunk compression"
    assert len(read_bag(dst)[0][RAW]) == 2


# What happens to each topic (the policy) ------------------------------------------------

POINTS = "/camera/points"
XYZRGB_FIELDS = [("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("rgb", 16, 7)]  # PCL's PointXYZRGB: 32-byte points, padding


def coloured_cloud(rgb: np.ndarray, ns: int, fields=XYZRGB_FIELDS, point_step: int = 32):
    """An organized PointCloud2 whose colours are the pixels of `rgb` (a depth camera's registered cloud)."""
    height, width = rgb.shape[:2]
    points = np.zeros((height * width, point_step), np.uint8)
    ys, xs = np.mgrid[0:height, 0:width]
    xyz = np.stack([xs.ravel() * 0.01, ys.ravel() * 0.01, np.full(xs.size, 1.5)], 1).astype(np.float32)
    points[:, 0:12] = xyz.view(np.uint8).reshape(-1, 12)
    packed = (rgb[..., 0].astype(np.uint32) << 16 | rgb[..., 1].astype(np.uint32) << 8 | rgb[..., 2]).ravel()
    for name, offset, _ in fields:
        if name in ("rgb", "rgba"):
            points[:, offset:offset + 4] = packed.view(np.uint8).reshape(-1, 4)
    cloud_fields = [T["sensor_msgs/msg/PointField"](name=n, offset=o, datatype=d, count=1) for n, o, d in fields]
    return T["sensor_msgs/msg/PointCloud2"](header=_header(ns), height=height, width=width, fields=cloud_fields,
                                           is_bigendian=False, point_step=point_step, row_step=point_step * width,
                                           data=points.reshape(-1), is_dense=True)


BLOB_DEF = "std_msgs/Header header\nuint8[] payload\nstring encoding"
POSE_DEF = "float64 x\nfloat64 y\nint32[] ids"


def _custom_store():
    store = get_typestore(Stores.ROS2_KILTED)
    store.register({**get_types_from_msg(BLOB_DEF, "fleet_msgs/msg/Blob"), **get_types_from_msg(POSE_DEF, "fleet_msgs/msg/Pose")})
    return store


def test_each_topic_gets_its_policys_action_and_the_report_says_so(tmp_path, face_frames):
    store = _custom_store()
    frame, (x1, y1, x2, y2) = face_frames[0]
    small = frame[y1 - 10:y2 + 10, x1 - 10:x2 + 10]  # the face and around it, as a depth camera sees it
    ns = START_NS + 100
    jpeg = cv2.imencode(".jpg", small[:, :, ::-1])[1].reshape(-1)
    depth = T["sensor_msgs/msg/Image"](header=_header(ns), height=4, width=4, encoding="16UC1", is_bigendian=0, step=8,
                                       data=np.arange(32, dtype=np.uint8))
    plain = coloured_cloud(small[:4, :4], ns, fields=[("x", 0, 7), ("y", 4, 7), ("z", 8, 7)], point_step=16)
    broken = coloured_cloud(small[:4, :4], ns)
    broken.data = broken.data[:-7]
    extra = [(POINTS, "sensor_msgs/msg/PointCloud2", ns + k, cloud) for k, cloud in enumerate([coloured_cloud(small, ns), plain, broken])]
    extra += [("/blob", "fleet_msgs/msg/Blob", ns, store.types["fleet_msgs/msg/Blob"](header=_header(ns), payload=jpeg, encoding="jpeg")),
              ("/pose", "fleet_msgs/msg/Pose", ns, store.types["fleet_msgs/msg/Pose"](x=1.0, y=2.0, ids=np.array([1, 2], np.int32))),
              ("/camera/depth", "sensor_msgs/msg/Image", ns, depth)]
    src, dst = tmp_path / "in", tmp_path / "out"
    write_bag(src, "mcap", face_frames[:2], compressed=False, store=store,
              extra=[(t, m, n, bytes(store.serialize_cdr(msg, m))) for t, m, n, msg in extra])
    assert main(["bag", "anonymize", str(src), str(dst), "--no-progress"]) == 1, "a malformed cloud is a dropped message"
    inputs, _ = read_bag(src)
    outputs, out_conns = read_bag(dst)
    assert "/blob" not in outputs, "an unknown type with a byte array may carry pixels: dropped by default"
    assert outputs["/pose"] == inputs["/pose"], "a type without pixels is copied"
    assert "/camera/depth" not in outputs and DISPARITY not in outputs

    (_, first), (_, second) = outputs[POINTS]
    assert second == inputs[POINTS][1][1], "a cloud without colour is written unchanged"
    cloud = STORE.deserialize_cdr(first, "sensor_msgs/msg/PointCloud2")
    assert [f.name for f in cloud.fields] == ["x", "y", "z"] and cloud.point_step == 12
    assert (cloud.height, cloud.width, cloud.row_step) == (small.shape[0], small.shape[1], 12 * small.shape[1])
    source = STORE.deserialize_cdr(inputs[POINTS][0][1], "sensor_msgs/msg/PointCloud2")
    xyz_in = np.asarray(source.data).reshape(-1, 32)[:, :12]
    assert np.array_equal(np.asarray(cloud.data).reshape(-1, 12), xyz_in), "the geometry is kept exactly"
    assert cloud.header == source.header

    report = json.loads((dst / "ros_anonymizer_report.json").read_text())
    topics = report["topics"]
    assert topics[POINTS]["action"] == "strip_colour" and topics[POINTS]["counts"] == {"stripped": 1, "unchanged": 1, "malformed": 1}
    assert topics["/blob"]["action"] == "drop" and "payload" in topics["/blob"]["reason"]
    assert topics["/pose"]["action"] == "copy" and topics["/pose"]["written"] == 1
    assert topics[DISPARITY]["action"] == "drop" and topics[DISPARITY]["read"] == 1
    assert topics["/camera/depth"]["counts"] == {"frames": 1, "depth_dropped": 1}
    assert topics[RAW]["counts"]["anonymized"] == 2 and topics[RAW]["written"] == 2
    assert set(topics) == set(inputs)
    text = (dst / "ros_anonymizer_report.txt").read_text()
    assert f"{POINTS}: 3 point clouds, 1 without colour, 1 had none, 1 malformed dropped" in text

    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"topics": {POINTS: "drop"}, "types": {"fleet_msgs/msg/Blob": "copy"}}))
    assert main(["bag", "anonymize", str(src), str(tmp_path / "out2"), "--no-progress", "--policy", str(policy),
                 "--set", "depth_images=passthrough"]) == 0
    outputs2, _ = read_bag(tmp_path / "out2")
    assert outputs2["/blob"] == inputs["/blob"] and POINTS not in outputs2
    assert outputs2["/camera/depth"] == inputs["/camera/depth"], "depth_images=passthrough copies depth images unchanged"


@pytest.mark.parametrize("rules, message", [
    ({"topics": {RAW: "copy"}}, "would write raw pixels"),
    ({"types": {"sensor_msgs/msg/PointCloud2": "copy"}}, "would write raw pixels"),
    ({"types": {"stereo_msgs/msg/DisparityImage": "copy"}}, "would write raw pixels"),
    ({"topics": {"/chatter": "anonymize"}}, "only Image and CompressedImage can be anonymized"),
    ({"topics": {"/chatter": "strip_colour"}}, "strip_colour applies to"),
    ({"topics": {"/chatter": "blur"}}, "maps names to one of"),
])
def test_a_policy_that_would_leak_pixels_is_refused(tmp_path, face_frames, rules, message):
    src = tmp_path / "in"
    write_bag(src, "sqlite3", face_frames[:1], extra=[(POINTS, "sensor_msgs/msg/PointCloud2", START_NS, coloured_cloud(face_frames[0][0][:8, :8], START_NS))])
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(rules))
    done = bag_cli("anonymize", src, tmp_path / "out", "--no-progress", "--policy", policy)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()


def test_no_standard_type_that_can_hold_pixels_is_copied_by_default():
    """Every message type of ROS 2 Kilted (plus vision_msgs): the default copies none that can hold a picture."""
    from rosbags.interfaces import Connection, ConnectionExtRosbag2, MessageDefinition, MessageDefinitionFormat

    from ros_anonymizer.bag.policy import Policy
    from ros_anonymizer.bag.types import typestore

    store = typestore()
    decisions = {}
    for msgtype in sorted(store.types):
        text, _ = store.generate_msgdef(msgtype, ros_version=2)
        conn = Connection(1, "/t", msgtype, MessageDefinition(MessageDefinitionFormat.MSG, text), "", 0,
                          ConnectionExtRosbag2("cdr", []), None)
        decisions[msgtype] = Policy().decide(conn).action
    assert decisions["sensor_msgs/msg/Image"] == decisions["sensor_msgs/msg/CompressedImage"] == "anonymize"
    assert decisions["sensor_msgs/msg/PointCloud2"] == "strip_colour"
    dropped = {t for t, a in decisions.items() if a == "drop"}
    assert {"stereo_msgs/msg/DisparityImage", "std_msgs/msg/UInt8MultiArray", "std_msgs/msg/ByteMultiArray",
            "visualization_msgs/msg/MeshFile", "visualization_msgs/msg/Marker", "visualization_msgs/msg/MarkerArray",
            "rcl_interfaces/msg/ParameterEvent"} <= dropped
    copied = {t for t, a in decisions.items() if a == "copy"}
    assert {"sensor_msgs/msg/Imu", "sensor_msgs/msg/CameraInfo", "tf2_msgs/msg/TFMessage", "nav_msgs/msg/OccupancyGrid",
            "std_msgs/msg/String", "vision_msgs/msg/Detection2DArray", "unique_identifier_msgs/msg/UUID"} <= copied
    for msgtype in copied:  # nothing copied carries an image, a cloud or a byte sequence, at any depth
        fields = str(store.fielddefs[msgtype])
        assert "Image" not in fields and "PointCloud2" not in fields, msgtype
