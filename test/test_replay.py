"""`ros-anonymizer bag play`: a real bag replayed over real DDS, into this process and into the live node.

Three processes: this test (a peer node that records), `bag play`, and
anonymizer_node. Isolated DDS: see ros_env.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import Reader, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from ros_env import NodeProcess, RosPeer, ros_environment, wait_until  # noqa: F401 (fixture)
from test_bag import STORE, T, face_frames, raw_image  # noqa: F401 (fixture)

from ros_anonymizer.image_io import image_to_rgb

START_NS = 1_750_000_000_000_000_000
FRAME_PERIOD_NS = 100_000_000  # a 10 Hz camera
TIMEOUT = 60.0


def write_camera_bag(path: Path, frames, chatter: int = 0) -> None:
    """Raw camera frames at 10 Hz on /camera/image, and `chatter` strings at 20 Hz on /chatter."""
    with Writer(path, version=9) as writer:
        image = writer.add_connection("/camera/image", "sensor_msgs/msg/Image", typestore=STORE)
        text = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=STORE) if chatter else None
        messages = [(START_NS + i * FRAME_PERIOD_NS, image, STORE.serialize_cdr(raw_image(rgb, START_NS + i * FRAME_PERIOD_NS),
                                                                                "sensor_msgs/msg/Image"))
                    for i, (rgb, _) in enumerate(frames)]
        messages += [(START_NS + i * FRAME_PERIOD_NS // 2 + 1, text, STORE.serialize_cdr(T["std_msgs/msg/String"](data=f"line {i}"),
                                                                                       "std_msgs/msg/String"))
                     for i in range(chatter)]
        for ns, connection, data in sorted(messages, key=lambda m: m[0]):
            writer.write(connection, ns, bytes(data))


def recorded(path: Path) -> dict[str, list[bytes]]:
    with Reader(path) as reader:
        out: dict[str, list[bytes]] = {}
        for conn, _, raw in reader.messages():
            out.setdefault(conn.topic, []).append(bytes(raw))
    return out


def play(bag: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ros_anonymizer.cli", "bag", "play", str(bag), "--wait-for-subscribers", "30", *args],
                          capture_output=True, text=True, timeout=120)


def test_play_publishes_the_recorded_bytes_on_the_recorded_timing(ros_environment, tmp_path, face_frames):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    bag = tmp_path / "bag"
    write_camera_bag(bag, face_frames[:11], chatter=20)  # 1 s of recording
    peer = RosPeer("replay_recorder")
    lock, arrivals = threading.Lock(), {"/camera/image": [], "/chatter": []}

    def keeper(topic):
        def keep(raw: bytes):
            with lock:
                arrivals[topic].append((time.monotonic(), raw))
        return keep

    try:
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        for msg_type, topic in ((Image, "/camera/image"), (String, "/chatter")):
            peer.node.create_subscription(msg_type, topic, keeper(topic), qos, raw=True)
        done = play(bag, "--rate", "2")
        assert done.returncode == 0, done.stderr
        assert "published 31 messages on 2 topics" in done.stdout
        wait_until(lambda: len(arrivals["/camera/image"]) == 11 and len(arrivals["/chatter"]) == 20, TIMEOUT, "every message")
    finally:
        peer.close()
    expected = recorded(bag)
    for topic, got in arrivals.items():
        assert len(got) == len(expected[topic])
        for (_, raw), original in zip(got, expected[topic]):  # DDS pads the payload to 4 bytes
            assert raw[:len(original)] == original and len(raw) - len(original) < 4 and not any(raw[len(original):]), \
                f"{topic}: the recorded CDR bytes, in order"
    times = sorted(t for got in arrivals.values() for t, _ in got)
    assert times[-1] - times[0] >= 0.8 * 1.0 / 2, "a 1 s recording at --rate 2 takes about 0.5 s"


def test_loop_plays_until_interrupted_and_skips_types_rclpy_lacks(ros_environment, tmp_path):
    from std_msgs.msg import String

    store = get_typestore(Stores.ROS2_KILTED)
    store.register(get_types_from_msg("int32 value", "my_robot_msgs/msg/Odd"))
    bag = tmp_path / "bag"
    with Writer(bag, version=9) as writer:
        text = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=store)
        odd = writer.add_connection("/odd", "my_robot_msgs/msg/Odd", typestore=store)
        for i in range(5):
            ns = START_NS + i * 50_000_000
            writer.write(text, ns, bytes(store.serialize_cdr(T["std_msgs/msg/String"](data=f"{i}"), "std_msgs/msg/String")))
            odd_msg = store.types["my_robot_msgs/msg/Odd"](value=i)
            writer.write(odd, ns + 1, bytes(store.serialize_cdr(odd_msg, "my_robot_msgs/msg/Odd")))
    peer = RosPeer("loop_recorder")
    try:
        received = peer.record(String, "/chatter", depth=100)
        process = subprocess.Popen([sys.executable, "-m", "ros_anonymizer.cli", "bag", "play", str(bag), "--loop", "--rate", "4",
                                    "--wait-for-subscribers", "30"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_until(lambda: len(peer.snapshot(received)) >= 12 or process.poll() is not None, TIMEOUT, "three loops")
        assert process.poll() is None, process.stderr.read()
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        peer.close()
    assert process.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    assert "skipping /odd: its type my_robot_msgs/msg/Odd is not installed" in err
    assert [m.data for m in peer.snapshot(received)[:12]] == [str(i % 5) for i in range(12)], "the bag again and again, in order"


def test_a_bag_replayed_into_the_node_comes_out_anonymized(ros_environment, tmp_path, face_frames):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Detection2DArray

    frames = face_frames[:20]
    bag = tmp_path / "bag"
    write_camera_bag(bag, frames)
    originals = {START_NS + i * FRAME_PERIOD_NS: (rgb, rect) for i, (rgb, rect) in enumerate(frames)}

    node = NodeProcess(tmp_path / "node.log", {"qos_overrides./camera/image.subscription.reliability": "reliable",
                                                  "frame_deadline_ms": 0.0, "diagnostics_period": 0.2},
                       ros_args=("-r", "__ns:=/camera"))
    peer = RosPeer("replay_checker")
    try:
        images = peer.record(Image, "/camera/anonymized/image_raw")
        detections = peer.record(Detection2DArray, "/camera/detections")
        diagnostics = peer.record(DiagnosticArray, "/diagnostics")
        wait_until(lambda: peer.node.count_publishers("/camera/anonymized/image_raw") > 0, TIMEOUT, f"the node to start:\n{node.log()}")
        done = play(bag, "--rate", "0.5")  # 5 frames/s
        assert done.returncode == 0, done.stderr + node.log()

        def settled():
            values = [{kv.key: kv.value for kv in s.values} for m in peer.snapshot(diagnostics) for s in m.status]
            values = [v for v in values if "frames_received" in v]
            if values and int(values[-1]["frames_received"]) == len(frames):
                counts = {k: int(values[-1][k]) for k in ("frames_published", "dropped_frames", "failed_frames", "malformed_messages")}
                return counts if sum(counts.values()) == len(frames) else None
            return None
        counts = wait_until(settled, TIMEOUT, f"the node to account for every frame:\n{node.log()}")
        wait_until(lambda: len(peer.snapshot(images)) >= counts["frames_published"], TIMEOUT, "every published frame")
    finally:
        peer.close()
        rc = node.stop()
    assert rc == 0 and "Traceback" not in node.log(), node.log()

    assert counts["failed_frames"] == counts["malformed_messages"] == 0
    assert counts["frames_published"] >= len(frames) // 2, f"most frames at 5 Hz are anonymized, not dropped: {counts}"
    received = peer.snapshot(images)
    assert len(received) == counts["frames_published"]
    for msg in received:
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        assert stamp in originals and msg.header.frame_id == "camera_optical", "headers are preserved"
        assert msg.encoding == "bgr8"
        rgb, (x1, y1, x2, y2) = originals[stamp]
        out = image_to_rgb(msg).astype(np.int16)
        assert not np.array_equal(out, rgb), "no raw frame"
        assert np.abs(out[y1:y2, x1:x2] - rgb[y1:y2, x1:x2]).mean() > 8, f"the face in frame {stamp} is changed"
    assert sorted(d.header.stamp.sec * 10**9 + d.header.stamp.nanosec for d in peer.snapshot(detections)) == sorted(
        m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in received)
