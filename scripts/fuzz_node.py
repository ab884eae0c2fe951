"""Malformed and adversarial images against the live node: how many raw frames does it publish? (must be 0)

The node runs in its own process (isolated DDS, as in the tests). Hypothesis
draws Image and CompressedImage messages from real frames (the JHMDB clip with
an LFW face pasted in) and mutates their fields: wrong sizes and steps,
truncated or extended data, unknown or mismatched encodings, huge claimed
dimensions, zero sizes, truncated and corrupted JPEGs, JPEG headers claiming
65500x65500, random bytes, odd formats; about one in five is left valid. Each
message gets a unique header stamp. Every frame the node publishes (raw and
compressed outputs) is matched to its input by stamp and checked:
- from a message this project's decoder refuses: a violation (nothing may come out of it);
- where the face's rectangle fits in the decoded input: if the published face region differs
  from the input's decoded face pixels by a mean absolute difference of 8 or less (the
  tests' threshold), an independent judge (dlib's HOG detector, on the region with
  half a face of context, upscaled 2x) looks at the published region: a face found
  there is a raw face leak; otherwise the region is counted as unchanged without a
  face (the mutation left no face there, e.g. stripes or a grey smear) or as changed
  little (a low-contrast face that was blurred).
Pacing: a valid frame waits for its output (or a timeout) before the next
message, malformed ones are sent 10 ms apart (--gap), so the node examines nearly all of
them; the node's own counters (diagnostics) say how many it examined.

    .venv/bin/python scripts/fuzz_node.py [--messages 10000] [--seed 0] [--json out.json]
        [--transport raw|compressed] [--input image] [--compressed-input image/compressed]
        [--output anonymized/image_raw] [--compressed-output anonymized/image_raw/compressed] [--param name=value ...]

The node takes one input transport (`input_transport`): run once per transport to cover both.
"""
from __future__ import annotations

import argparse
import array
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "test"))
from ros_env import NodeProcess, RosPeer, isolated_environment  # noqa: E402

from ros_anonymizer.image_io import ImageDecodeError, decode, image_to_rgb  # noqa: E402
from ros_anonymizer.media import read_image, read_video  # noqa: E402

DATA = Path(os.environ.get("ROS_ANONYMIZER_DATA", REPO.parent / "shared" / "data"))
FACE = (56, 66)
ENCODINGS = ("rgb8", "bgr8", "mono8", "rgba8", "bgra8")
RAW_MUTATIONS = ("valid", "valid", "valid", "truncate", "extend", "height", "width", "step_short", "step_long", "encoding",
                 "mismatched_encoding", "swap_dims", "huge", "zero", "empty", "random")
JPEG_MUTATIONS = ("valid", "valid", "png", "truncate", "corrupt", "sof_huge", "random", "empty", "format", "grey")


def base_frames(count: int = 8) -> list[tuple[np.ndarray, tuple[int, int, int, int]]]:
    clip = read_video(next((DATA / "jhmdb" / "catch").glob("*.avi")), limit=count)
    people = sorted(p for p in (DATA / "lfw" / "images").iterdir() if p.is_dir())[:count]
    frames = []
    for i, frame in enumerate(clip):
        face = read_image(sorted(people[i].glob("*.jpg"))[0])[60:190, 70:180]
        x, y = 190 + 3 * i, 12 + i
        frame = frame.copy()
        frame[y:y + FACE[1], x:x + FACE[0]] = cv2.resize(face, FACE, interpolation=cv2.INTER_AREA)
        frames.append((frame, (x, y, x + FACE[0], y + FACE[1])))
    return frames


def _encode(rgb: np.ndarray, encoding: str) -> np.ndarray:
    code = {"rgb8": None, "bgr8": cv2.COLOR_RGB2BGR, "mono8": cv2.COLOR_RGB2GRAY, "rgba8": cv2.COLOR_RGB2RGBA,
            "bgra8": cv2.COLOR_RGB2BGRA}[encoding]
    return rgb.copy() if code is None else cv2.cvtColor(rgb, code)


@st.composite
def raw_images(draw, bases):
    from sensor_msgs.msg import Image

    rgb, rect = bases[draw(st.integers(0, len(bases) - 1))]
    encoding = draw(st.sampled_from(ENCODINGS))
    pixels = _encode(rgb, encoding)
    height, width = pixels.shape[:2]
    row = pixels.reshape(height, -1).shape[1]
    pad = draw(st.sampled_from([0, 0, 1, 3, 32]))
    rows = np.zeros((height, row + pad), np.uint8)
    rows[:, :row] = pixels.reshape(height, -1)
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=0, step=row + pad)
    data = rows.tobytes()
    kind = draw(st.sampled_from(RAW_MUTATIONS))
    if kind == "truncate":
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif kind == "extend":
        data += bytes(draw(st.integers(1, 4096)))
    elif kind == "height":
        msg.height = draw(st.integers(0, 2 * height).filter(lambda h: h != height))
    elif kind == "width":
        msg.width = draw(st.integers(0, 2 * width).filter(lambda w: w != width))
    elif kind == "step_short":
        msg.step = draw(st.integers(0, row - 1))
    elif kind == "step_long":
        msg.step = draw(st.integers(row + pad + 1, 4 * row))
    elif kind == "encoding":
        msg.encoding = draw(st.sampled_from(["", "yuv9000", "16UC1", "32FC1", "bayer_rggb8", "jpeg", "RGB8", "bgr8 "]) | st.text(max_size=12))
    elif kind == "mismatched_encoding":  # a valid-looking header that reinterprets the bytes
        msg.encoding = draw(st.sampled_from([e for e in ENCODINGS if e != encoding]))
    elif kind == "swap_dims":
        msg.height, msg.width = width, height
    elif kind == "huge":
        msg.height, msg.width = draw(st.sampled_from([(2**31 - 1, 2**31 - 1), (65535, 65535), (1, 2**32 - 1), (100000, 100000)]))
        msg.step = min(msg.width * 3, 2**32 - 1)
    elif kind == "zero":
        msg.height = msg.width = msg.step = 0
    elif kind == "empty":
        data = b""
    elif kind == "random":
        data = draw(st.binary(min_size=0, max_size=4096))
    msg.data = array.array("B", data)
    return msg, kind, rgb, rect


@st.composite
def compressed_images(draw, bases):
    from sensor_msgs.msg import CompressedImage

    rgb, rect = bases[draw(st.integers(0, len(bases) - 1))]
    kind = draw(st.sampled_from(JPEG_MUTATIONS))
    quality = draw(st.integers(40, 100))
    data = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()
    fmt = "bgr8; jpeg compressed bgr8"
    if kind == "png":
        data, fmt = cv2.imencode(".png", rgb[:, :, ::-1])[1].tobytes(), "bgr8; png compressed bgr8"
    elif kind == "grey":
        data, fmt = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))[1].tobytes(), "mono8; jpeg compressed mono8"
    elif kind == "truncate":
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif kind == "corrupt":
        start = draw(st.integers(2, len(data) - 1))
        data = data[:start] + draw(st.binary(min_size=1, max_size=2048)) + data[start + 1:]
    elif kind == "sof_huge":
        i = data.find(b"\xff\xc0")
        dims = draw(st.sampled_from([(65500, 65500), (65535, 1), (0, 0), (1, 65535)]))
        data = data[:i + 5] + dims[0].to_bytes(2, "big") + dims[1].to_bytes(2, "big") + data[i + 9:]
    elif kind == "random":
        data = draw(st.binary(min_size=0, max_size=4096))
    elif kind == "empty":
        data = b""
    elif kind == "format":
        fmt = draw(st.text(max_size=40))
    msg = CompressedImage(format=fmt)
    msg.data = array.array("B", data)
    return msg, kind, rgb, rect


def judge(region: np.ndarray) -> bool:
    """An independent judge (dlib's HOG face detector, never trained against): a face in this region, upscaled 2x?"""
    if region is None or region.size == 0:
        return False
    big = cv2.resize(np.ascontiguousarray(region), None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)
    return len(_dlib_detector()(big, 1)) > 0


_DETECTOR = []


def _dlib_detector():
    if not _DETECTOR:
        import dlib
        _DETECTOR.append(dlib.get_frontal_face_detector())
    return _DETECTOR[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--input", default="image")
    parser.add_argument("--compressed-input", default="image/compressed")
    parser.add_argument("--transport", choices=("raw", "compressed"), default="raw",
                        help="the node's input_transport, and which kind of message is sent")
    parser.add_argument("--output", default="anonymized/image_raw")
    parser.add_argument("--compressed-output", default="anonymized/image_raw/compressed")
    parser.add_argument("--param", action="append", default=["publish_compressed=true"],
                        help="node parameter NAME=VALUE (repeatable)")
    parser.add_argument("--valid-timeout", type=float, default=2.0, help="seconds a valid frame waits for its output")
    parser.add_argument("--gap", type=float, default=0.01, help="seconds between malformed messages")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--leaks", type=Path, help="save each leaked face (input | output crop) here as PNG, to look at")
    args = parser.parse_args()

    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import CompressedImage, Image

    bases = base_frames()
    log_dir = Path(tempfile.mkdtemp(prefix="fuzz_node_"))
    os.environ.update(isolated_environment(log_dir))
    params = dict(item.split("=", 1) for item in args.param)
    input_topic = args.compressed_input if args.transport == "compressed" else args.input
    params.update({"input_transport": args.transport,
                   f"qos_overrides./{input_topic.lstrip('/')}.subscription.reliability": "reliable"})
    node = NodeProcess(log_dir / "node.log", params)
    peer = RosPeer("fuzzer")
    sent: dict[int, tuple] = {}
    outputs: list[tuple[str, object]] = []
    lock, arrived = threading.Lock(), threading.Event()

    def keep(topic):
        def on(msg):
            with lock:
                outputs.append((topic, msg))
            arrived.set()
        return on

    from rclpy.qos import QoSProfile, ReliabilityPolicy
    qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
    peer.node.create_subscription(Image, args.output, keep("raw"), qos)
    peer.node.create_subscription(CompressedImage, args.compressed_output, keep("compressed"), qos)
    diagnostics = peer.record(DiagnosticArray, "/diagnostics", depth=100)
    raw_pub = peer.publisher(Image, args.input, depth=100)
    jpeg_pub = peer.publisher(CompressedImage, args.compressed_input, depth=100)
    deadline = time.monotonic() + 120
    while (peer.node.count_subscribers(input_topic) == 0 or peer.node.count_publishers(args.output) == 0) and time.monotonic() < deadline:
        if node.process.poll() is not None:
            sys.exit("the node stopped:\n" + node.log())
        time.sleep(0.1)
    time.sleep(1.0)
    counter = {"n": 0}
    start = time.monotonic()

    @settings(max_examples=args.messages, deadline=None, database=None, phases=[Phase.generate], derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(compressed_images(bases) if args.transport == "compressed" else raw_images(bases))
    def send(item):
        msg, kind, rgb, rect = item
        counter["n"] += 1
        stamp = counter["n"]
        msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id = stamp, 0, "fuzz"
        x1, y1, x2, y2 = rect
        try:
            source, _ = decode(msg)  # what the node's decoder makes of it; the raw face pixels to compare with
            fits = source.shape[0] >= y2 and source.shape[1] >= x2  # e.g. a narrower width: the left part, face and all
            crop = source[y1:y2, x1:x2].copy() if fits else None
            context = source[max(0, y1 - FACE[1] // 2):y2 + FACE[1] // 2, max(0, x1 - FACE[0] // 2):x2 + FACE[0] // 2].copy() if fits else None
            sent[stamp] = (type(msg).__name__, kind, True, crop, rect, context)
        except (ImageDecodeError, ValueError, cv2.error):
            sent[stamp] = (type(msg).__name__, kind, False, None, rect, None)
        arrived.clear()
        (jpeg_pub if type(msg).__name__ == "CompressedImage" else raw_pub).publish(msg)
        if kind in ("valid", "png", "grey"):
            arrived.wait(args.valid_timeout)
        else:
            time.sleep(args.gap)
        if stamp % 500 == 0:
            print(f"{stamp} messages, {len(outputs)} outputs, {time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)

    import hypothesis
    hypothesis.seed(args.seed)(send)()
    time.sleep(3.0)
    seconds = time.monotonic() - start
    with lock:
        published = list(outputs)
    last = {}
    for m in peer.snapshot(diagnostics):
        for status in m.status:
            values = {kv.key: kv.value for kv in status.values}
            if "frames_received" in values:
                last = values
    peer.close()
    rc = node.stop()

    checked = leaks = from_undecodable = other_geometry = unchanged_no_face = low_change = 0
    by_kind: dict[str, dict[str, int]] = {}
    for topic, out in published:
        stamp = out.header.stamp.sec
        if stamp not in sent:
            continue
        msg_type, kind, decodable, crop, (x1, y1, x2, y2), context = sent[stamp]
        entry = by_kind.setdefault(f"{msg_type}:{kind}", {"sent": 0, "published": 0, "leaks": 0})
        entry["published"] += 1
        if not decodable:
            from_undecodable += 1
            print(f"VIOLATION: output on {topic} from an undecodable {msg_type} ({kind})", file=sys.stderr)
            continue
        if topic == "raw":
            image = image_to_rgb(out)
        else:
            buffer = cv2.imdecode(np.frombuffer(bytes(out.data), np.uint8), cv2.IMREAD_COLOR)
            image = buffer[:, :, ::-1] if buffer is not None else None
        if crop is None or image is None or image.shape[0] < y2 or image.shape[1] < x2:
            other_geometry += 1
            continue
        checked += 1
        change = np.abs(image[y1:y2, x1:x2].astype(np.int16) - crop).mean()
        if change > 8:
            continue
        top, left = max(0, y1 - FACE[1] // 2), max(0, x1 - FACE[0] // 2)
        window = image[top:top + context.shape[0], left:left + context.shape[1]]  # the context the judge saw in the input
        if judge(window):
            leaks += 1
            entry["leaks"] += 1
            print(f"LEAK: {topic} output of stamp {stamp} ({msg_type}:{kind}): face region changed by only {change:.1f} "
                  "and the judge finds a face in it", file=sys.stderr)
            verdict = "leak"
        elif not judge(context):
            unchanged_no_face += 1
            verdict = "noface"
        else:
            low_change += 1
            verdict = "lowchange"
        if args.leaks:
            args.leaks.mkdir(parents=True, exist_ok=True)
            pair = np.concatenate([crop, image[y1:y2, x1:x2]], axis=1)
            cv2.imwrite(str(args.leaks / f"{verdict}_{stamp}_{msg_type}_{kind}_{topic}.png"),
                        cv2.resize(pair[:, :, ::-1], None, fx=3, fy=3, interpolation=cv2.INTER_NEAREST))
    for stamp, (msg_type, kind, *_rest) in sent.items():
        by_kind.setdefault(f"{msg_type}:{kind}", {"sent": 0, "published": 0, "leaks": 0})["sent"] += 1
    figures = {"messages_sent": len(sent), "seconds": round(seconds, 1), "outputs_received": len(published),
               "outputs_face_checked": checked, "raw_face_leaks": leaks, "outputs_from_undecodable_messages": from_undecodable,
               "outputs_other_geometry": other_geometry, "unchanged_region_without_a_face": unchanged_no_face,
               "changed_little_no_face_left": low_change, "node_exit_code": rc, "node_counters": last, "by_kind": by_kind,
               "load_average": os.getloadavg(), "seed": args.seed, "params": params}
    print(json.dumps({k: v for k, v in figures.items() if k != "by_kind"}, indent=1))
    print("| message kind | sent | outputs | raw face leaks |\n|---|---|---|---|")
    for kind, entry in sorted(by_kind.items()):
        print(f"| {kind} | {entry['sent']} | {entry['published']} | {entry['leaks']} |")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0 if leaks == 0 and from_undecodable == 0 and rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
