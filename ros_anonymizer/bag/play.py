"""`bag play`: publish a bag's messages with rclpy on their recorded timing.

Messages are published as the recorded CDR bytes (rclpy publishes `bytes` as
a serialized message), so what the node receives is exactly what was
recorded. `wait_for_subscribers` holds playback until every topic is
matched, which makes a replay into a freshly started node deterministic.
"""
from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

from rosbags.interfaces import Connection, QosDurability, QosReliability

from ..errors import UserError
from .reading import open_bag, read_messages

ACK_TIMEOUT_S = 5.0  # at the end, how long reliable subscribers get to receive the last messages
# Once the publisher sees a subscriber, the subscriber may not yet have matched the publisher: a
# reliable, volatile message sent in between is lost (here: the first frame of about one replay in
# four). Discovery finishes on both sides well within this.
MATCH_SETTLE_S = 0.5


def parse_remaps(items: list[str]) -> dict[str, str]:
    remaps = {}
    for item in items:
        old, sep, new = item.partition(":=")
        if not sep or not old or not new:
            raise UserError(f"--remap takes FROM:=TO, not {item!r}.")
        remaps[old] = new
    return remaps


def play_bag(src: Path, *, rate: float = 1.0, topics: list[str] | None = None, loop: bool = False,
             wait_for_subscribers: float = 0.0, remaps: dict[str, str] | None = None) -> dict[str, int]:
    """Publish the bag's messages; returns the number published per (output) topic."""
    if not rate > 0:
        raise UserError(f"--rate must be a positive factor, not {rate}.")
    remaps = remaps or {}
    import rclpy
    from rclpy.duration import Duration

    with open_bag(Path(src)) as reader:
        present = {c.topic for c in reader.connections}
        missing = sorted(set(topics or ()) - present)
        if missing:
            raise UserError(f"the bag has no topic {', '.join(missing)}; it has {', '.join(sorted(present))}.")
        if not reader.message_count:
            raise UserError(f"the bag {src} holds no messages.")
        context = rclpy.Context()
        rclpy.init(context=context, args=[])
        try:
            node = rclpy.create_node("ros_anonymizer_bag_play", context=context, start_parameter_services=False)
            publishers = _publishers(node, [c for c in reader.connections if not topics or c.topic in topics], remaps)
            if not publishers:
                raise UserError("none of the bag's topics can be published: their message packages are not installed.")
            _wait_for_subscribers(publishers, wait_for_subscribers)
            selected = [c for c in reader.connections if c.id in publishers]
            published: dict[str, int] = {}
            while True:
                _play_once(reader, selected, publishers, rate, published, src)
                if not loop:
                    break
            for publisher in {id(p): p for p in publishers.values()}.values():
                publisher.wait_for_all_acked(Duration(seconds=ACK_TIMEOUT_S))
            return published
        finally:
            context.try_shutdown()


def _play_once(reader, selected: list[Connection], publishers: dict, rate: float, published: dict, src: Path) -> None:
    start_wall, start_bag = time.monotonic(), None
    for conn, timestamp, raw in read_messages(reader.messages(selected), src):
        start_bag = timestamp if start_bag is None else start_bag
        delay = start_wall + (timestamp - start_bag) / 1e9 / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        publisher = publishers[conn.id]
        publisher.publish(bytes(raw))
        published[publisher.topic_name] = published.get(publisher.topic_name, 0) + 1


def _publishers(node, connections: list[Connection], remaps: dict[str, str]) -> dict[int, object]:
    """One publisher per topic, with the recorded QoS; topics whose message type is not installed are skipped."""
    by_topic: dict[str, object] = {}
    publishers = {}
    for conn in connections:
        if conn.topic not in by_topic:
            msg_class = _message_class(conn.msgtype)
            if msg_class is None:
                print(f"bag play: skipping {conn.topic}: its type {conn.msgtype} is not installed for rclpy.", file=sys.stderr)
                continue
            by_topic[conn.topic] = node.create_publisher(msg_class, remaps.get(conn.topic, conn.topic), _qos(conn))
        publishers[conn.id] = by_topic[conn.topic]
    return publishers


def _message_class(msgtype: str):
    package, _, name = msgtype.rpartition("/msg/")
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError):
        return None


def _qos(conn: Connection):
    """The first recorded offered QoS (reliability, durability, depth); reliable, volatile, depth 10 if none."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    recorded = conn.ext.offered_qos_profiles[0] if conn.ext.offered_qos_profiles else None
    if recorded is None:
        return QoSProfile(depth=10)
    best_effort = recorded.reliability == QosReliability.BEST_EFFORT
    latched = recorded.durability == QosDurability.TRANSIENT_LOCAL
    return QoSProfile(depth=max(recorded.depth, 10),
                      reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


def _wait_for_subscribers(publishers: dict, timeout: float) -> None:
    """Until every topic has a matched subscriber or `timeout` seconds pass; then names the unmatched ones."""
    unique = list({id(p): p for p in publishers.values()}.values())
    deadline = time.monotonic() + timeout
    while timeout > 0 and time.monotonic() < deadline:
        if all(p.get_subscription_count() > 0 for p in unique):
            time.sleep(MATCH_SETTLE_S)
            return
        time.sleep(0.05)
    if timeout > 0:
        lonely = sorted(p.topic_name for p in unique if p.get_subscription_count() == 0)
        if lonely:
            print(f"bag play: no subscriber after {timeout:g} s on {', '.join(lonely)}; playing anyway.", file=sys.stderr)
