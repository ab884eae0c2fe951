"""`ros-anonymizer bag anonymize|anonymize-archive|play`: the rosbag2 tools' command line."""
from __future__ import annotations

import argparse
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

from ..cli_args import add_config_arguments, config_from_args
from ..errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bag_command", metavar="ACTION", required=True)

    anonymize = sub.add_parser("anonymize", help="write a copy of a bag with every camera image anonymized",
                               description="Write a copy of a rosbag2 bag with every sensor_msgs Image and "
                                           "CompressedImage anonymized, a <topic>/detections topic per image topic, "
                                           "point clouds without colour, topics without pixels copied unchanged and "
                                           "the rest left out (see --policy); a report goes into the output bag.")
    anonymize.add_argument("input", type=Path, help="the bag folder (or its .mcap / .db3 file); only read")
    anonymize.add_argument("output", type=Path, help="the new bag folder; written under a temporary name, renamed when complete")
    add_config_arguments(anonymize)
    anonymize.add_argument("--storage", choices=("sqlite3", "mcap"), help="output storage (default: the input's)")
    anonymize.add_argument("--topics", nargs="+", metavar="TOPIC",
                           help="write only these topics (image topics among them are always anonymized)")
    anonymize.add_argument("--overwrite", action="store_true", help="replace an existing output bag (never the input)")
    anonymize.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_bag_output_arguments(anonymize)

    archive = sub.add_parser("anonymize-archive", help="anonymize every bag under a folder on Ray, resumably",
                             description="Anonymize every rosbag2 bag under IN_ROOT into the same relative path under "
                                         "OUT_ROOT, as `bag anonymize` does, on Ray (a local engine, or --address). "
                                         "A manifest in OUT_ROOT makes a rerun skip what is done and verified.")
    archive.add_argument("input", type=Path, metavar="IN_ROOT", help="folder holding bag folders at any depth; only read")
    archive.add_argument("output", type=Path, metavar="OUT_ROOT", help="where the anonymized bags, the manifest and the report go")
    add_config_arguments(archive)
    archive.add_argument("--storage", choices=("sqlite3", "mcap"), help="output storage (default: each input's)")
    add_bag_output_arguments(archive)
    archive.add_argument("--address", help="Ray cluster to run on (ray://HOST:10001, HOST:6379 or auto); "
                                           "default: start a local engine on this machine's cores")
    archive.add_argument("--workers", type=int, default=0, help="workers (one model set each); default: CPUs / --cpus-per-worker")
    archive.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs each worker reserves (default 1)")
    archive.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs each worker reserves (default 0)")
    archive.add_argument("--no-progress", action="store_true", help="no progress bar")

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


def add_bag_output_arguments(parser: argparse.ArgumentParser) -> None:
    """--policy and --metadata-version, shared by `bag anonymize` and `bag anonymize-archive`."""
    parser.add_argument("--policy", type=Path, metavar="FILE",
                        help="what to do per topic and message type (anonymize, strip_colour, copy, drop); "
                             "see docs/bags.md. Default: images anonymized, clouds without colour, types that may "
                             "carry pixels dropped, the rest copied")
    parser.add_argument("--metadata-version", metavar="VERSION|DISTRO",
                        help="rosbag2 metadata version to write: 5-9, or the distribution that will read the bag "
                             "(humble: 5, iron: 7, jazzy and kilted: 9); default: the input's")


def run(args: argparse.Namespace) -> int:
    if args.bag_command == "anonymize":
        return _anonymize(args)
    if args.bag_command == "anonymize-archive":
        return _archive(args)
    return _play(args)


def _archive(args: argparse.Namespace) -> int:
    from .archive import anonymize_archive
    from .metadata import parse_target
    from .policy import Policy

    try:
        import ray  # noqa: F401 (only this command needs it; robots do not)
    except ImportError:
        raise UserError("anonymize-archive runs on Ray: pip install ray (or the package's [bag] extra).") from None
    if args.workers < 0 or args.cpus_per_worker <= 0 or args.gpus_per_worker < 0:
        raise UserError("--workers must be 0 or more, --cpus-per-worker more than 0 and --gpus-per-worker 0 or more.")
    config = config_from_args(args)
    policy = Policy.from_file(args.policy)
    version = parse_target(args.metadata_version) if args.metadata_version else None
    with _sigterm_interrupts():
        report = anonymize_archive(args.input, args.output, config, policy=policy, metadata_version=version,
                                   storage=args.storage, address=args.address, workers=args.workers,
                                   cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker,
                                   progress=not args.no_progress)
    print(report.summary())
    return 1 if report.failed else 0


def _anonymize(args: argparse.Namespace) -> int:
    from .anonymize import anonymize_bag
    from .metadata import parse_target
    from .policy import Policy

    config = config_from_args(args)
    policy = Policy.from_file(args.policy)
    version = parse_target(args.metadata_version) if args.metadata_version else None
    with _sigterm_interrupts():
        report = anonymize_bag(args.input, args.output, config, storage=args.storage, topics=args.topics,
                               overwrite=args.overwrite, progress=not args.no_progress, policy=policy,
                               metadata_version=version)
    print(report.summary())
    failed = report.failures
    if failed:
        dropped = failed - report.total("black")
        print(f"{failed} messages could not be anonymized: {dropped} dropped, {report.total('black')} replaced by black "
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
