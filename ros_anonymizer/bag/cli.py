"""`ros-anonymizer bag anonymize|play`: the rosbag2 tools' command line."""
from __future__ import annotations

import argparse
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

from ..cli_args import add_config_arguments, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bag_command", metavar="ACTION", required=True)

    anonymize = sub.add_parser("anonymize", help="write a copy of a bag with every camera image anonymized",
                               description="Write a copy of a rosbag2 bag with every sensor_msgs Image and "
                                           "CompressedImage anonymized, a <topic>/detections topic per image topic, "
                                           "and all other topics copied unchanged.")
    anonymize.add_argument("input", type=Path, help="the bag folder (or its .mcap / .db3 file); only read")
    anonymize.add_argument("output", type=Path, help="the new bag folder; written under a temporary name, renamed when complete")
    add_config_arguments(anonymize)
    anonymize.add_argument("--storage", choices=("sqlite3", "mcap"), help="output storage (default: the input's)")
    anonymize.add_argument("--topics", nargs="+", metavar="TOPIC",
                           help="write only these topics (image topics among them are always anonymized)")
    anonymize.add_argument("--overwrite", action="store_true", help="replace an existing output bag (never the input)")
    anonymize.add_argument("--no-progress", action="store_true", help="no progress bar")

    play = sub.add_parser("play", help="publish a bag's topics on their recorded timing",
                          description="Publish a bag's messages with rclpy, as recorded (raw CDR), on their "
                                      "recorded timing, e.g. to test the live node by replay.")
    play.add_argument("input", type=Path, help="the bag folder (or its .mcap / .db3 file)")
    play.add_argument("--rate", type=float, default=1.0, help="playback speed factor (2: twice as fast)")
    play.add_argument("--topics", nargs="+", metavar="TOPIC", help="publish only these topics")
    play.add_argument("--loop", action="store_true", help="play again from the start until interrupted")
    play.add_argument("--wait-for-subscribers", type=float, default=0.0, metavar="SECONDS",
                      help="before playing, wait up to this long until every topic has a subscriber")
    play.add_argument("--remap", nargs="+", default=[], metavar="FROM:=TO", help="publish topic FROM as TO")


def run(args: argparse.Namespace) -> int:
    if args.bag_command == "anonymize":
        return _anonymize(args)
    return _play(args)


def _anonymize(args: argparse.Namespace) -> int:
    from .anonymize import anonymize_bag

    config = config_from_args(args)
    with _sigterm_interrupts():
        report = anonymize_bag(args.input, args.output, config, storage=args.storage, topics=args.topics,
                               overwrite=args.overwrite, progress=not args.no_progress)
    print(report.summary())
    failed = report.dropped + report.black
    if failed:
        print(f"{failed} frames could not be anonymized: {report.dropped} dropped, {report.black} replaced by black "
              "frames (none copied raw).", file=sys.stderr)
    return 1 if failed else 0


def _play(args: argparse.Namespace) -> int:
    from .play import parse_remaps, play_bag

    with _sigterm_interrupts():
        stats = play_bag(args.input, rate=args.rate, topics=args.topics, loop=args.loop,
                         wait_for_subscribers=args.wait_for_subscribers, remaps=parse_remaps(args.remap))
    print(f"published {sum(stats.values())} messages on {len(stats)} topics")
    return 0


@contextmanager
def _sigterm_interrupts():
    """SIGTERM stops the command like Ctrl-C, so it cleans up (no partial bag, publishers shut down)."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
