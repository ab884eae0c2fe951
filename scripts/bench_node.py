"""End-to-end latency and sustained rate of anonymizer_node at 30 Hz 640x480, per filter and input QoS.

Starts the node in its own process (as on a robot), publishes real frames
(the JHMDB clip in ../shared/data, resized to 640x480) at a fixed rate with
the publish time as header stamp, and times each anonymized frame from that
stamp to its arrival here. Not a test: run it on a quiet machine.

    .venv/bin/python scripts/bench_node.py                       # every filter, best effort, SHM profile
    .venv/bin/python scripts/bench_node.py --qos                 # best effort vs reliable, with and without SHM profile
"""
from __future__ import annotations

import argparse
import array
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from ros_anonymizer.media import read_video

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ROS_ANONYMIZER_DATA", REPO.parent / "shared" / "data"))
PROFILE = REPO / "config" / "fastdds_shm.xml"


def frames(width: int, height: int) -> list[np.ndarray]:
    clips = sorted((DATA / "jhmdb" / "catch").glob("*.avi"))
    if clips:
        out = [cv2.resize(rgb, (width, height)) for rgb in read_video(clips[0])]
        if out:
            return out
    from skimage.data import astronaut

    print(f"note: {DATA}/jhmdb is missing; using skimage's astronaut", file=sys.stderr)
    return [cv2.resize(astronaut(), (width, height))]


def run_case(filter_name: str, reliability: str, shm: bool, seconds: float, rate: float, images: list[np.ndarray],
             params: list[str]) -> dict:
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    node = subprocess.Popen([sys.executable, "-m", "ros_anonymizer.node", "--ros-args", "--params-file",
                             str(REPO / "config" / "anonymizer.yaml"), "-p", f"filter:={filter_name}",
                             "-p", f"input_reliability:={reliability}", "-p", "frame_deadline_ms:=0.0",
                             *[arg for p in params for arg in ("-p", p)]],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    context = Context()
    rclpy.init(args=[], context=context)
    peer = rclpy.create_node("bench", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(peer)
    received: dict[int, float] = {}

    def arrived(msg):
        received[msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec] = time.time_ns()

    peer.create_subscription(Image, "image_anonymized", arrived, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    node_counts: dict[str, int] = {}

    def diagnosed(msg):
        for status in msg.status:
            node_counts.update({kv.key: int(kv.value) for kv in status.values if kv.key in ("frames_received", "dropped_frames")})

    peer.create_subscription(DiagnosticArray, "/diagnostics", diagnosed, 10)
    pub = peer.create_publisher(Image, "image", QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    messages = []
    for rgb in images:
        msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", step=rgb.shape[1] * 3)
        msg.data = array.array("B", rgb.tobytes())
        messages.append(msg)

    def publish(i: int) -> int:
        msg = messages[i % len(messages)]
        now = time.time_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now, 1_000_000_000)
        pub.publish(msg)
        return now

    try:
        deadline = time.monotonic() + 60
        while not received and time.monotonic() < deadline and node.poll() is None:  # discovery, model loading
            publish(0)
            time.sleep(0.5)
        if not received:
            reason = node.stderr.read1().decode(errors="replace").strip() if node.poll() is not None else "none within 60 s"
            raise RuntimeError(f"no anonymized frame: {reason}")
        time.sleep(1.5)
        received.clear()
        before = dict(node_counts)
        sent, start, period, i = [], time.monotonic(), 1.0 / rate, 0
        while time.monotonic() - start < seconds:
            sent.append(publish(i))
            i += 1
            time.sleep(max(0.0, start + i * period - time.monotonic()))
        time.sleep(1.5)
        arrived_at_node = node_counts["frames_received"] - before["frames_received"]
        latencies = np.array([(received[s] - s) / 1e6 for s in sent if s in received])
        return {"filter": filter_name, "reliability": reliability, "shm": shm, "sent": len(sent), "at_node": arrived_at_node,
                "dropped": node_counts["dropped_frames"] - before["dropped_frames"],
                "received": len(latencies), "out_hz": len(latencies) / seconds,
                "p50_ms": float(np.percentile(latencies, 50)) if len(latencies) else float("nan"),
                "p95_ms": float(np.percentile(latencies, 95)) if len(latencies) else float("nan")}
    finally:
        executor.shutdown(timeout_sec=2.0)
        spinner.join(timeout=5.0)
        peer.destroy_node()
        rclpy.try_shutdown(context=context)
        node.send_signal(signal.SIGINT)
        node.wait(timeout=15)


def case_environment(shm: bool) -> dict[str, str]:
    """Isolated ROS settings for one case. Fast DDS reads its profile once per process, so each case
    runs in a fresh process with the profile set (or not) from the start, on both sides."""
    env = dict(os.environ, ROS_DOMAIN_ID=str(random.randint(1, 100)), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               ROS_LOG_DIR=tempfile.mkdtemp(prefix="bench_node_"))
    env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    if shm:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(PROFILE)
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--filters", default="blur,mosaic,mask,noise,learned")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--qos", action="store_true", help="compare input QoS and the SHM profile (blur only)")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                        help="another node parameter, e.g. -p detection_scale:=0.5")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # FILTER,RELIABILITY,SHM: one case, in this process
    args = parser.parse_args()
    if args.case:
        filter_name, reliability, shm = args.case.split(",")
        try:
            result = run_case(filter_name, reliability, shm == "yes", args.seconds, args.rate, frames(640, 480), args.param)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            result = {"error": str(e)}
        print(json.dumps(result))
        return 0
    if args.qos:
        cases = [("blur", rel, shm) for shm in (False, True) for rel in ("best_effort", "reliable")]
    else:
        cases = [(f, "best_effort", True) for f in args.filters.split(",")]
    load = os.getloadavg()[0]
    print(f"640x480 rgb8 at {args.rate:.0f} Hz for {args.seconds:.0f} s per case; {os.cpu_count()} CPUs, load {load:.1f}; "
          f"parameters: {' '.join(args.param) or 'config/anonymizer.yaml'}")
    print("sent: frames published; at node: frames the node's subscription delivered; dropped: overwritten while busy;\n"
          "out: anonymized frames received back; latency: header stamp (publish) -> received back")
    print(f"{'filter':8} {'input QoS':12} {'SHM':4} {'sent':>5} {'at node':>7} {'dropped':>7} {'out':>5} {'out Hz':>7} "
          f"{'p50 ms':>7} {'p95 ms':>7}")
    for filter_name, reliability, shm in cases:
        command = [sys.executable, __file__, "--case", f"{filter_name},{reliability},{'yes' if shm else 'no'}",
                   "--seconds", str(args.seconds), "--rate", str(args.rate), *[a for p in args.param for a in ("-p", p)]]
        child = subprocess.run(command, env=case_environment(shm), capture_output=True, text=True)
        lines = child.stdout.strip().splitlines()
        r = json.loads(lines[-1]) if lines else {"error": child.stderr.strip()[-500:]}
        if "error" in r:
            print(f"{filter_name:8} {reliability:12} {'yes' if shm else 'no':4} failed: {r['error']}")
            continue
        print(f"{r['filter']:8} {r['reliability']:12} {'yes' if r['shm'] else 'no':4} {r['sent']:5d} {r['at_node']:7d} "
              f"{r['dropped']:7d} {r['received']:5d} "
              f"{r['out_hz']:7.1f} {r['p50_ms']:7.1f} {r['p95_ms']:7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
