"""Soak the live node at a camera's rate: memory (RSS) and latency over time. Memory must stay flat.

The node runs in its own process (isolated DDS, as in the tests); this process
publishes real frames (the JHMDB clip scaled to --size with an LFW face pasted
in, cycling) at --rate Hz for --minutes, receives the anonymized frames, and
every --sample seconds records the node's resident memory (VmRSS), the frames
sent and received in that window, and the latency (publish to receipt, matched
by header stamp) p50/p95. The target run is 30 minutes at 30 Hz; say in the
figures how long it ran and what else ran on the machine.

    .venv/bin/python scripts/soak_node.py [--minutes 30] [--rate 30] [--size 640x480] [--sample 10] [--json out.json]
        [--input image] [--output anonymized/image_raw] [--param name=value ...]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "test"))
sys.path.insert(0, str(REPO / "scripts"))
from fuzz_node import base_frames  # noqa: E402
from ros_env import NodeProcess, RosPeer, isolated_environment  # noqa: E402

from ros_anonymizer.image_io import rgb_to_image  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds per row")
    parser.add_argument("--input", default="image")
    parser.add_argument("--output", default="anonymized/image_raw")
    parser.add_argument("--param", action="append", default=[], help="node parameter NAME=VALUE (repeatable)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    width, height = (int(v) for v in args.size.split("x"))
    frames = [rgb_to_image(cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR), "bgr8") for rgb, _ in base_frames()]
    log_dir = Path(tempfile.mkdtemp(prefix="soak_node_"))
    os.environ.update(isolated_environment(log_dir))
    node = NodeProcess(log_dir / "node.log", dict(item.split("=", 1) for item in args.param))
    peer = RosPeer("soaker")
    lock = threading.Lock()
    sent_at: dict[int, float] = {}
    latencies: list[float] = []
    received = {"n": 0}

    def on_output(msg):
        now = time.monotonic()
        stamp = msg.header.stamp.sec * 1_000_000 + msg.header.stamp.nanosec // 1000
        with lock:
            start = sent_at.pop(stamp, None)
            if start is not None:
                latencies.append((now - start) * 1000.0)
                received["n"] += 1

    peer.node.create_subscription(Image, args.output, on_output, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    publisher = peer.publisher(Image, args.input, depth=1)
    deadline = time.monotonic() + 120
    while (peer.node.count_subscribers(args.input) == 0 or peer.node.count_publishers(args.output) == 0) and time.monotonic() < deadline:
        if node.process.poll() is not None:
            sys.exit("the node stopped:\n" + node.log())
        time.sleep(0.1)
    time.sleep(1.0)
    rows, total_sent = [], 0
    period, start = 1.0 / args.rate, time.monotonic()
    end, next_sample, i = start + args.minutes * 60.0, start + args.sample, 0
    window_sent = 0
    print("| t (s) | node RSS (MB) | sent | received | latency p50 ms | p95 ms | load |\n|---|---|---|---|---|---|---|", flush=True)
    while time.monotonic() < end and node.process.poll() is None:
        due = start + i * period
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        msg = frames[i % len(frames)]
        t = time.time()
        msg.header.stamp.sec, msg.header.stamp.nanosec = int(t), int((t % 1) * 1e6) * 1000
        with lock:
            sent_at[msg.header.stamp.sec * 1_000_000 + msg.header.stamp.nanosec // 1000] = time.monotonic()
        publisher.publish(msg)
        i, window_sent, total_sent = i + 1, window_sent + 1, total_sent + 1
        if time.monotonic() >= next_sample:
            with lock:
                window, got = latencies[:], received["n"]
                latencies.clear()
                received["n"] = 0
                stale = [k for k, v in sent_at.items() if time.monotonic() - v > 5.0]
                for k in stale:
                    del sent_at[k]
            p50, p95 = (np.percentile(window, [50, 95]) if window else (float("nan"), float("nan")))
            row = {"t": round(time.monotonic() - start, 1), "rss_mb": round(rss_mb(node.process.pid), 1), "sent": window_sent,
                   "received": got, "p50_ms": round(float(p50), 1), "p95_ms": round(float(p95), 1), "load": round(os.getloadavg()[0], 1)}
            rows.append(row)
            print(f"| {row['t']} | {row['rss_mb']} | {row['sent']} | {row['received']} | {row['p50_ms']} | {row['p95_ms']} | {row['load']} |",
                  flush=True)
            window_sent, next_sample = 0, next_sample + args.sample
    peer.close()
    rc = node.stop()
    warm = [r["rss_mb"] for r in rows[max(1, len(rows) // 10):]] or [r["rss_mb"] for r in rows]
    minutes = (rows[-1]["t"] - rows[0]["t"]) / 60.0 if len(rows) > 1 else 0.0
    slope = np.polyfit([r["t"] / 60.0 for r in rows[max(1, len(rows) // 10):]], warm, 1)[0] if len(warm) > 2 else float("nan")
    summary = {"minutes": round((rows[-1]["t"] if rows else 0) / 60.0, 2), "rate_hz": args.rate, "size": args.size,
               "frames_sent": total_sent, "frames_received": sum(r["received"] for r in rows),
               "rss_mb_first": rows[0]["rss_mb"] if rows else None, "rss_mb_last": rows[-1]["rss_mb"] if rows else None,
               "rss_mb_max_after_warmup": max(warm) if warm else None, "rss_slope_mb_per_min_after_warmup": round(float(slope), 3),
               "node_exit_code": rc, "span_minutes": round(minutes, 2)}
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
