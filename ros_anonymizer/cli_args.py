"""The options every command that builds a pipeline shares: --config, --set, --filter."""
from __future__ import annotations

import argparse
from pathlib import Path

from .config import AnonymizerConfig, ConfigError


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """--config and --set, shared by every command that builds a pipeline."""
    parser.add_argument("--config", type=Path, help="parameter file (config/anonymizer.yaml layout)")
    parser.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                        help="override one parameter, e.g. --set filter=mosaic (repeatable)")
    parser.add_argument("--filter", help="shorthand for --set filter=...")


def config_from_args(args: argparse.Namespace) -> AnonymizerConfig:
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set takes KEY=VALUE, not {item!r}.")
        overrides[key.strip()] = _parse_value(value)
    if args.filter:
        overrides["filter"] = args.filter
    if args.config:
        return AnonymizerConfig.from_yaml(args.config, **overrides)
    return AnonymizerConfig.from_mapping(overrides)


def _parse_value(text: str):
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text
