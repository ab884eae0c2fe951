"""rosbag2 metadata versions: which one each ROS 2 distribution reads, and writing a bag in it.

rosbag2 reads `metadata.yaml` by its `version` field, and older releases only
know the layouts up to their own (rosbag2_storage's metadata_io / yaml.hpp):

| version | written by | adds |
|---|---|---|
| 5 | Galactic, Humble | `files` |
| 6 | | `custom_data` |
| 7 | Iron | `type_description_hash` per topic |
| 8 | | `ros_distro` |
| 9 | Jazzy, Kilted | `offered_qos_profiles` as a YAML list with policy names instead of a YAML string with enum numbers |

Humble parses `offered_qos_profiles` as a string holding numbers, so a
version 9 bag (a list with names) stops `ros2 bag` there. rosbags' Writer
writes 8 or 9; a bag for 5-7 is written as 8 (QoS strings with numbers, also in
the sqlite3 `topics` table and the mcap channel metadata) and its metadata,
in `metadata.yaml` and in the copy embedded in the storage file, is then
rewritten in that version's layout.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError

VERSIONS = (5, 6, 7, 8, 9)
LATEST = 9
DISTRO_VERSIONS = {"humble": 5, "iron": 7, "jazzy": 9, "kilted": 9}

# What each version adds to the one before (top level, and per topic_metadata).
_ADDED = {6: ("custom_data", None), 7: (None, "type_description_hash"), 8: ("ros_distro", None)}

BAG_KEYS = ("version", "storage_identifier", "duration", "starting_time", "message_count", "topics_with_message_count",
            "compression_format", "compression_mode", "relative_file_paths", "files", "custom_data", "ros_distro")
TOPIC_KEYS = ("name", "type", "serialization_format", "offered_qos_profiles", "type_description_hash")


def layout(version: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(bag keys, topic_metadata keys) that a `metadata.yaml` of `version` holds."""
    bag = [k for k in BAG_KEYS if not any(k == top and version < v for v, (top, _) in _ADDED.items())]
    topic = [k for k in TOPIC_KEYS if not any(k == per and version < v for v, (_, per) in _ADDED.items())]
    return tuple(bag), tuple(topic)


def parse_target(text: str) -> int:
    """`--metadata-version`: a version number or a distribution name -> the version to write."""
    name = str(text).strip().lower()
    if name in DISTRO_VERSIONS:
        return DISTRO_VERSIONS[name]
    if name.isdigit() and int(name) in VERSIONS:
        return int(name)
    raise UserError(f"--metadata-version takes one of {', '.join(map(str, VERSIONS))} or a distribution "
                    f"({', '.join(DISTRO_VERSIONS)}), not {text!r}.")


def input_version(src: Path) -> int:
    """The version of the input bag's metadata.yaml, raised to 5 (the oldest written); a lone storage file: the latest."""
    meta = Path(src) / "metadata.yaml"
    if not meta.is_file():
        return LATEST
    try:
        version = int(yaml.safe_load(meta.read_text())["rosbag2_bagfile_information"]["version"])
    except (yaml.YAMLError, KeyError, TypeError, ValueError):
        return LATEST  # the reader has already refused a bag whose metadata it cannot read
    return min(max(version, VERSIONS[0]), LATEST)


def writer_version(target: int) -> int:
    """The version rosbags' Writer is opened with for a `target` bag (it writes only 8 and 9)."""
    return LATEST if target == LATEST else 8


def convert(info: dict[str, Any], target: int) -> dict[str, Any]:
    """A version 8 `rosbag2_bagfile_information` mapping in the layout of `target` (5-8), keys in rosbag2's order."""
    bag_keys, topic_keys = layout(target)
    out = {key: info.get(key) for key in bag_keys}
    out["version"] = target
    if "custom_data" in out:
        out["custom_data"] = out["custom_data"] or {}
    out["topics_with_message_count"] = [
        {"topic_metadata": {k: t["topic_metadata"].get(k, "") for k in topic_keys}, "message_count": t["message_count"]}
        for t in info["topics_with_message_count"]]
    return out


def _dump(info: dict[str, Any]) -> str:
    return yaml.safe_dump(info, sort_keys=False, default_flow_style=False)


def hold_back(writer, target: int) -> None:
    """Before `writer.close()`: the metadata the storage file embeds (sqlite3 table, mcap record) is written as `target`."""
    if target == writer.version:
        return
    storage = writer.storage
    close = storage.close

    def close_as_target(version: int, text: str) -> None:
        close(target, _dump(convert(yaml.safe_load(text), target)).strip())

    storage.close = close_as_target


def finish(bag: Path, target: int) -> None:
    """After `writer.close()`: rewrite `metadata.yaml` in the layout of `target`."""
    path = Path(bag) / "metadata.yaml"
    data = yaml.safe_load(path.read_text())
    info = data["rosbag2_bagfile_information"]
    if info["version"] == target:
        return
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(_dump({"rosbag2_bagfile_information": convert(info, target)}))
    tmp.replace(path)


def embedded_metadata(bag: Path) -> tuple[int, dict[str, Any]] | None:
    """(version, metadata) stored inside a sqlite3 bag's database, as rosbag2 reindexing reads it; None for mcap."""
    files = sorted(Path(bag).glob("*.db3"))
    if not files:
        return None
    with sqlite3.connect(f"file:{files[0]}?mode=ro", uri=True) as db:
        version, text = db.execute("SELECT metadata_version, metadata FROM metadata").fetchone()
    return int(version), yaml.safe_load(text)
