"""`ros-anonymizer`: one command, a subcommand per job.

Each subcommand lives in its own module exposing `add_arguments(parser)` and
`run(args) -> int`; modules are imported only when their subcommand runs, so a
robot without rosbags or TensorRT still gets every other command. Commands of
the other distributions (`evaluate` from ros-anonymizer-workstation, `engines`
from ros-anonymizer-engines) are entry points in the group
`ros_anonymizer.commands`: the runtime finds them there and never imports those
packages by name.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from importlib.metadata import entry_points

from .backends import ModelError
from .config import ConfigError
from .errors import UserError

COMMANDS_GROUP = "ros_anonymizer.commands"

SUBCOMMANDS = {
    "anonymize": ("ros_anonymizer.file_cli", "anonymize images, a folder of images or a video"),
    "demo": ("ros_anonymizer.demo", "anonymize a built-in sample and write a side-by-side preview"),
    "bag": ("ros_anonymizer.bag.cli", "anonymize or play rosbag2 recordings"),
}

# Commands another distribution provides: help text, and what to install when it is missing.
INSTALLABLE = {
    "evaluate": ("measure privacy, naturalness, utility and speed per filter",
                 "the workstation tools: pip install ros-anonymizer-workstation (from training/ in the source tree)"),
    "engines": ("build and check TensorRT engines",
                "the engine builder: pip install ros-anonymizer-engines (from engines/ in the source tree)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ros-anonymizer", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    helps = {name: help_text for name, (_, help_text) in SUBCOMMANDS.items()}
    helps.update({name: help_text for name, (help_text, _) in INSTALLABLE.items()})
    for entry in entry_points(group=COMMANDS_GROUP):
        helps.setdefault(entry.name, f"provided by {entry.value}")
    for name, help_text in helps.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _help(name: str) -> str | None:
    return SUBCOMMANDS[name][1] if name in SUBCOMMANDS else INSTALLABLE.get(name, (None,))[0]


def load_command(name: str):
    """The module behind subcommand `name`; UserError naming what to install when its distribution is missing."""
    if name in SUBCOMMANDS:
        return importlib.import_module(SUBCOMMANDS[name][0])
    for entry in entry_points(group=COMMANDS_GROUP, name=name):
        return entry.load()
    raise UserError(f"this command needs {INSTALLABLE[name][1]}.")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    try:
        module = load_command(args.command)
    except UserError as e:
        print(f"ros-anonymizer {args.command}: {e}", file=sys.stderr)
        return 2
    except ImportError as e:
        print(f"ros-anonymizer {args.command}: needs the Python package '{e.name}', which is not installed.", file=sys.stderr)
        return 2
    sub = argparse.ArgumentParser(prog=f"ros-anonymizer {args.command}", description=_help(args.command))
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
    sys.exit(main())
