"""`ros-anonymizer`: one command, a subcommand per job.

Each subcommand lives in its own module exposing `add_arguments(parser)` and
`run(args) -> int`; modules are imported only when their subcommand runs, so a
robot without rosbags or TensorRT still gets every other command.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .backends import ModelError
from .config import ConfigError

SUBCOMMANDS = {
    "anonymize": ("ros_anonymizer.file_cli", "anonymize images, a folder of images or a video"),
    "demo": ("ros_anonymizer.demo", "anonymize a built-in sample and write a side-by-side preview"),
    "bag": ("ros_anonymizer.bag.cli", "anonymize or play rosbag2 recordings"),
    "evaluate": ("ros_anonymizer.evaluate.cli", "measure privacy, naturalness, utility and speed per filter"),
    "engines": ("engines.cli", "build and check TensorRT engines"),
}


class UserError(Exception):
    """Stops a command with one plain sentence for the user (no traceback)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ros-anonymizer", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    module_name, help_text = SUBCOMMANDS[args.command]
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        print(f"ros-anonymizer {args.command}: needs the Python package '{e.name}', which is not installed.", file=sys.stderr)
        return 2
    sub = argparse.ArgumentParser(prog=f"ros-anonymizer {args.command}", description=help_text)
    module.add_arguments(sub)
    sub_args = sub.parse_args(rest)
    try:
        return int(module.run(sub_args) or 0)
    except (UserError, ConfigError, ModelError) as e:
        if args.debug:
            raise
        print(f"ros-anonymizer {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ros-anonymizer {args.command}: interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    from ros_anonymizer.cli import main as package_main  # so UserError is the class the subcommands raise

    sys.exit(package_main())
