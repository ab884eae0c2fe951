"""End-to-end latency and sustained rate of anonymizer_node at 30 Hz 640x480: per filter, input QoS, camera layout.

Starts the node in its own process (as on a robot), publishes real frames
(the JHMDB clip in ../shared/data, resized to 640x480) at a fixed rate with
the publish time as header stamp, and times each anonymized frame from that
stamp to its arrival here. Not a test: run it on a quiet machine.

    .venv/bin/python scripts/bench_node.py                       # every filter, best effort, SHM profile
    .venv/bin/python scripts/bench_node.py --qos                 # best effort vs reliable; Fast DDS defaults, SHM profile, LARGE_DATA
    .venv/bin/python scripts/bench_node.py --cameras 2,4         # one process per camera vs one process for all

Throughput per core is anonymized frames per CPU-second the node processes used
(user + system time from /proc), so layouts compare whatever else the machine runs.
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_nodes(layout: str, cameras: list[str], params: list[str]) -> list[subprocess.Popen]:
    """The node(s) under test: one per camera (namespace /<camera>), or one serving every camera (`cameras`)."""
    command = [sys.executable, "-m", "ros_anonymizer.node", "--ros-args", "--params-file", str(REPO / "config" / "anonymizer.yaml"),
               "-p", "frame_deadline_ms:=0.0", *[arg for p in params for arg in ("-p", p)]]
    if layout == "one_process" and cameras != [""]:
        runs = [command + ["-p", f"cameras:={','.join(cameras)}"]]
    else:
        runs = [command + (["-r", f"__ns:=/{camera}"] if camera else []) for camera in cameras]
    return [subprocess.Popen(run, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for run in runs]


def run_case(filter_name: str, reliability: str, dds: str, seconds: float, rate: float, images: list[np.ndarray],
             params: list[str], cameras: int = 1, layout: str = "per_camera") -> dict:
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    names = [f"cam{i}" for i in range(cameras)] if cameras > 1 else [""]
    topics = {name: f"/{name}/image" if name else "/image" for name in names}
    overrides = [f"qos_overrides.{topic}.subscription.reliability:={reliability}" for topic in topics.values()]
    nodes = start_nodes(layout, names, [f"filter:={filter_name}", *overrides, *params])
    context = Context()
    rclpy.init(args=[], context=context)
    peer = rclpy.create_node("bench", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(peer)
    received: dict[str, dict[int, float]] = {name: {} for name in names}

    def arrived(name):
        def keep(msg):
            received[name][msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec] = time.time_ns()
        return keep

    for name in names:
        output = f"/{name}/anonymized/image_raw" if name else "/anonymized/image_raw"
        peer.create_subscription(Image, output, arrived(name), QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    node_counts: dict[str, dict[str, int]] = {}

    def diagnosed(msg):
        for status in msg.status:
            node_counts[status.name] = {kv.key: int(kv.value) for kv in status.values if kv.key in ("frames_received", "dropped_frames")}

    peer.create_subscription(DiagnosticArray, "/diagnostics", diagnosed, 10)
    pubs = {name: peer.create_publisher(Image, topic, QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
            for name, topic in topics.items()}
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    messages = []
    for rgb in images:
        msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", step=rgb.shape[1] * 3)
        msg.data = array.array("B", rgb.tobytes())
        messages.append(msg)

    def publish(i: int) -> dict[str, int]:
        stamps = {}
        for k, name in enumerate(names):  # each camera at its own point of the clip
            msg = messages[(i + 7 * k) % len(messages)]
            stamps[name] = now = time.time_ns()
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now, 1_000_000_000)
            pubs[name].publish(msg)
        return stamps

    def totals(key: str) -> int:
        return sum(counts.get(key, 0) for counts in list(node_counts.values()))

    try:
        deadline = time.monotonic() + 90
        while not all(received.values()) and time.monotonic() < deadline and all(n.poll() is None for n in nodes):
            publish(0)  # discovery, model loading
            time.sleep(0.5)
        if not all(received.values()):
            dead = [n for n in nodes if n.poll() is not None]
            reason = dead[0].stderr.read1().decode(errors="replace").strip() if dead else "none within 90 s"
            raise RuntimeError(f"no anonymized frame: {reason}")
        time.sleep(1.5)
        for inbox in received.values():
            inbox.clear()
        before = {key: totals(key) for key in ("frames_received", "dropped_frames")}
        cpu_before = sum(cpu_seconds(n.pid) for n in nodes)
        sent, start, period, i = [], time.monotonic(), 1.0 / rate, 0
        while time.monotonic() - start < seconds:
            sent.append(publish(i))
            i += 1
            time.sleep(max(0.0, start + i * period - time.monotonic()))
        cpu = sum(cpu_seconds(n.pid) for n in nodes) - cpu_before
        time.sleep(1.5)
        latencies = np.array([(received[name][s[name]] - s[name]) / 1e6 for s in sent for name in names if s[name] in received[name]])
        last_third = sent[-len(sent) // 3:]  # a growing queue shows as later frames waiting longer
        late = np.array([(received[name][s[name]] - s[name]) / 1e6 for s in last_third for name in names if s[name] in received[name]])
        return {"filter": filter_name, "reliability": reliability, "dds": dds, "cameras": cameras, "layout": layout,
                "sent": len(sent) * len(names), "at_node": totals("frames_received") - before["frames_received"],
                "dropped": totals("dropped_frames") - before["dropped_frames"],
                "received": len(latencies), "out_hz": len(latencies) / seconds, "cpu_s": cpu,
                "frames_per_cpu_s": len(latencies) / cpu if cpu else float("nan"),
                "rss_mb": sum(rss_mb(n.pid) for n in nodes),
                "p50_ms": float(np.percentile(latencies, 50)) if len(latencies) else float("nan"),
                "p95_ms": float(np.percentile(latencies, 95)) if len(latencies) else float("nan"),
                "p95_last_third_ms": float(np.percentile(late, 95)) if len(late) else float("nan")}
    finally:
        executor.shutdown(timeout_sec=2.0)
        spinner.join(timeout=5.0)
        peer.destroy_node()
        rclpy.try_shutdown(context=context)
        for node in nodes:
            node.send_signal(signal.SIGINT)
        for node in nodes:
            node.wait(timeout=15)


# Fast DDS transport setups: its defaults, the shipped 16 MB shared-memory profile, the built-in LARGE_DATA (2.14+).
DDS_SETUPS = ("default", "shm_profile", "large_data")


def case_environment(dds: str) -> dict[str, str]:
    """Isolated ROS settings for one case. Fast DDS reads its transports once per process, so each case
    runs in fresh processes with the setup given from the start, on both sides."""
    env = dict(os.environ, ROS_DOMAIN_ID=str(random.randint(1, 100)), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               ROS_LOG_DIR=tempfile.mkdtemp(prefix="bench_node_"))
    env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    env.pop("FASTDDS_BUILTIN_TRANSPORTS", None)
    if dds == "shm_profile":
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(PROFILE)
    elif dds == "large_data":
        env["FASTDDS_BUILTIN_TRANSPORTS"] = "LARGE_DATA"
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--filters", default="blur,mosaic,mask,noise,learned")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--qos", action="store_true", help="compare input QoS and DDS transport setups (blur only)")
    parser.add_argument("--cameras", help="comma-separated camera counts, e.g. 2,4: one process per camera vs one for all (blur)")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                        help="another node parameter, e.g. -p detection_scale:=0.5")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # FILTER,RELIABILITY,DDS,CAMERAS,LAYOUT: one case, in this process
    args = parser.parse_args()
    if args.case:
        filter_name, reliability, dds, cameras, layout = args.case.split(",")
        try:
            result = run_case(filter_name, reliability, dds, args.seconds, args.rate, frames(640, 480), args.param,
                              int(cameras), layout)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            result = {"error": str(e)}
        print(json.dumps(result))
        return 0
    if args.qos:
        cases = [("blur", rel, dds, 1, "per_camera") for dds in DDS_SETUPS for rel in ("best_effort", "reliable")]
    elif args.cameras:
        cases = [("blur", "best_effort", "shm_profile", int(n), layout) for n in args.cameras.split(",")
                 for layout in ("per_camera", "one_process")]
    else:
        cases = [(f, "best_effort", "shm_profile", 1, "per_camera") for f in args.filters.split(",")]
    load = os.getloadavg()[0]
    print(f"640x480 rgb8 at {args.rate:.0f} Hz per camera for {args.seconds:.0f} s per case; {os.cpu_count()} CPUs, load {load:.1f}; "
          f"parameters: {' '.join(args.param) or 'config/anonymizer.yaml'}")
    print("sent: frames published (all cameras); at node: frames the node's subscriptions delivered; dropped: overwritten "
          "while busy;\nout: anonymized frames received back; latency: header stamp (publish) -> received back; "
          "p95 end: p95 of the last third of the run (no growing queue: close to p95);\n"
          "fr/cpu-s: out frames per CPU-second of the node process(es); RSS: their resident memory")
    print(f"{'filter':8} {'input QoS':12} {'DDS':11} {'cams':>4} {'layout':12} {'sent':>5} {'at node':>7} {'dropped':>7} {'out':>5} "
          f"{'out Hz':>7} {'p50 ms':>7} {'p95 ms':>7} {'p95 end':>7} {'fr/cpu-s':>8} {'RSS MB':>7}")
    for filter_name, reliability, dds, cameras, layout in cases:
        command = [sys.executable, __file__, "--case", f"{filter_name},{reliability},{dds},{cameras},{layout}",
                   "--seconds", str(args.seconds), "--rate", str(args.rate), *[a for p in args.param for a in ("-p", p)]]
        child = subprocess.run(command, env=case_environment(dds), capture_output=True, text=True)
        lines = child.stdout.strip().splitlines()
        r = json.loads(lines[-1]) if lines else {"error": child.stderr.strip()[-500:]}
        head = f"{filter_name:8} {reliability:12} {dds:11} {cameras:4d} {layout:12}"
        if "error" in r:
            print(f"{head} failed: {r['error']}")
            continue
        print(f"{head} {r['sent']:5d} {r['at_node']:7d} {r['dropped']:7d} {r['received']:5d} {r['out_hz']:7.1f} "
              f"{r['p50_ms']:7.1f} {r['p95_ms']:7.1f} {r['p95_last_third_ms']:7.1f} {r['frames_per_cpu_s']:8.1f} {r['rss_mb']:7.0f}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
