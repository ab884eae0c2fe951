"""What `bag anonymize` does with each topic: anonymize, strip colour, copy or drop.

Pixels are not only in sensor_msgs Image: a coloured PointCloud2 is a colour
picture of the people in it, a video packet is a compressed camera stream,
and any message with a byte array may hold an encoded image. So every topic
gets an explicit action, from (first match wins) a rule for its topic, a rule
for its message type, or the safe default for its type:

- Image, CompressedImage: `anonymize` (the only types that can be anonymized);
- PointCloud2: `strip_colour` (rewritten without its colour fields);
- known picture types (video packets, foxglove images), types with an Image or
  CompressedImage inside, types with a byte array (`uint8[]`, `byte[]`, ...;
  except occupancy grids) and types whose definition is unknown: `drop`;
- every other type: `copy`, byte for byte.

Rules cannot write raw pixels: `copy` is refused for any type that carries
pictures (images, clouds, picture types, types with an image inside), and
`anonymize` / `strip_colour` only apply to the types they can handle.
A policy file (`--policy FILE`, YAML) sets rules:

    topics: {/camera/points: drop, /can/frames: copy}
    types: {my_msgs/msg/Blob: copy}
    colour_fields: [rgb, rgba, r, g, b, a, ...]   # PointCloud2 fields that strip_colour removes
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from rosbags.interfaces import Connection, MessageDefinitionFormat, Nodetype
from rosbags.typesys import Stores, TypesysError, get_types_from_idl, get_types_from_msg, get_typestore

from ..config import read_yaml
from ..errors import UserError
from .types import COMPRESSED_IMAGE_TYPE, IMAGE_TYPE, POINTCLOUD_TYPE, typestore

ACTIONS = ("anonymize", "strip_colour", "copy", "drop")
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE)

# Message types that carry pictures this tool cannot anonymize.
PICTURE_TYPES = frozenset({
    "theora_image_transport/msg/Packet",
    "ffmpeg_image_transport_msgs/msg/FFMPEGPacket",
    "foxglove_msgs/msg/CompressedVideo",
    "foxglove_msgs/msg/RawImage",
    "foxglove_msgs/msg/CompressedImage",
})
# Standard types whose byte array is not a picture: occupancy values of a map.
NO_PIXEL_BYTE_TYPES = frozenset({"nav_msgs/msg/OccupancyGrid", "map_msgs/msg/OccupancyGridUpdate"})
# PointCloud2 fields holding colour, or a camera-like near-infrared image (Ouster's `ambient`).
COLOUR_FIELDS = ("rgb", "rgba", "bgr", "bgra", "argb", "r", "g", "b", "a", "color", "colour", "ambient", "near_ir")
_BYTES = {"uint8", "int8", "byte", "char", "octet"}
_LONG_ARRAY = 1024  # a fixed byte array at least this long may hold a (small) picture; shorter ones are ids


@dataclass(frozen=True)
class Decision:
    action: str
    reason: str


@dataclass(frozen=True)
class Policy:
    topics: dict[str, str] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    colour_fields: tuple[str, ...] = COLOUR_FIELDS

    @classmethod
    def from_file(cls, path: str | Path | None) -> "Policy":
        if path is None:
            return cls()
        return cls.from_mapping(read_yaml(Path(path), "the policy file", UserError), str(path))

    @classmethod
    def from_mapping(cls, data, source: str = "the policy") -> "Policy":
        if not isinstance(data, dict) or set(data) - {"topics", "types", "colour_fields"}:
            raise UserError(f"{source} must be a mapping with the keys topics, types and colour_fields.")
        rules = {}
        for key in ("topics", "types"):
            value = data.get(key) or {}
            if not isinstance(value, dict) or any(a not in ACTIONS for a in value.values()):
                raise UserError(f"{source}: {key} maps names to one of {', '.join(ACTIONS)}; got {value!r}.")
            rules[key] = {str(k): str(v) for k, v in value.items()}
        colour = data.get("colour_fields", COLOUR_FIELDS)
        if not isinstance(colour, (list, tuple)) or not all(isinstance(c, str) for c in colour):
            raise UserError(f"{source}: colour_fields is a list of PointCloud2 field names; got {colour!r}.")
        return cls(rules["topics"], rules["types"], tuple(c.lower() for c in colour))

    def to_dict(self) -> dict:
        return {"topics": dict(sorted(self.topics.items())), "types": dict(sorted(self.types.items())),
                "colour_fields": list(self.colour_fields)}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def decide(self, conn: Connection) -> Decision:
        """The action for one input connection, and why; a rule that would leak pixels stops with UserError."""
        carries = pictures(conn)
        if conn.topic in self.topics:
            return _checked(self.topics[conn.topic], conn, carries, f"rule for topic {conn.topic}")
        if conn.msgtype in self.types:
            return _checked(self.types[conn.msgtype], conn, carries, f"rule for type {conn.msgtype}")
        if conn.msgtype in IMAGE_TYPES:
            return Decision("anonymize", "camera images")
        if conn.msgtype == POINTCLOUD_TYPE:
            return Decision("strip_colour", "a point cloud may be coloured (a colour picture of the people in it)")
        if carries:
            return Decision("drop", f"{carries}: this tool cannot anonymize it")
        byte_field = byte_array(conn)
        if byte_field is None:
            return Decision("drop", "its definition is not in the bag, so it may carry pixels")
        if byte_field:
            return Decision("drop", f"its byte array {byte_field} may carry pixels (a policy rule can copy it)")
        return Decision("copy", "no pixels in its type")


def _checked(action: str, conn: Connection, carries: str, rule: str) -> Decision:
    if action == "anonymize" and conn.msgtype not in IMAGE_TYPES:
        raise UserError(f"{rule}: only Image and CompressedImage can be anonymized, not {conn.msgtype}.")
    if action == "strip_colour" and conn.msgtype != POINTCLOUD_TYPE:
        raise UserError(f"{rule}: strip_colour applies to {POINTCLOUD_TYPE}, not {conn.msgtype}.")
    if action == "copy" and carries:
        raise UserError(f"{rule}: copying {conn.topic} would write raw pixels ({carries}); choose "
                        f"{'anonymize' if conn.msgtype in IMAGE_TYPES else 'strip_colour' if conn.msgtype == POINTCLOUD_TYPE else 'drop'}.")
    return Decision(action, rule)


def pictures(conn: Connection) -> str:
    """Why messages of this type carry pictures ('' if they need not): images, clouds, picture types, embedded images."""
    if conn.msgtype in IMAGE_TYPES:
        return "camera images"
    if conn.msgtype == POINTCLOUD_TYPE:
        return "a point cloud with colour"
    if conn.msgtype in PICTURE_TYPES:
        return f"{conn.msgtype} is a picture or video type"
    inner = _find(conn, lambda name, kind, spec: kind == Nodetype.NAME and spec in (*IMAGE_TYPES, POINTCLOUD_TYPE))
    return f"it has an image or point cloud inside ({inner})" if inner else ""


def byte_array(conn: Connection) -> str | None:
    """The first byte-array field (dotted path) that could hold an encoded picture, '' if none, None if the type is unknown."""
    if conn.msgtype in NO_PIXEL_BYTE_TYPES:
        return ""
    if _fielddefs(conn) is None:
        return None

    def is_bytes(name, kind, spec):
        if kind not in (Nodetype.SEQUENCE, Nodetype.ARRAY):
            return False
        (inner_kind, inner), length = spec
        long_enough = kind == Nodetype.SEQUENCE or length >= _LONG_ARRAY
        return inner_kind == Nodetype.BASE and inner[0] in _BYTES and long_enough
    return _find(conn, is_bytes)


def _find(conn: Connection, test) -> str:
    """Dotted path of the first field (at any depth) for which test(name, kind, spec) holds, else ''."""
    defs = _fielddefs(conn) or {}
    seen = set()

    def walk(msgtype: str, prefix: str) -> str:
        if msgtype in seen or msgtype not in defs:
            return ""
        seen.add(msgtype)
        for name, (kind, spec) in defs[msgtype][1]:
            if test(name, kind, spec):
                return prefix + name
            inner = spec if kind == Nodetype.NAME else None
            if kind in (Nodetype.SEQUENCE, Nodetype.ARRAY) and spec[0][0] == Nodetype.NAME:
                inner = spec[0][1]
                if test(name, Nodetype.NAME, inner):
                    return prefix + name
            if inner and (found := walk(inner, f"{prefix}{name}.")):
                return found
        return ""
    return walk(conn.msgtype, "")


def _fielddefs(conn: Connection):
    """Field definitions of the connection's type and every type it uses: from the bag's definition, else the standard ones."""
    text = conn.msgdef.data if conn.msgdef.format != MessageDefinitionFormat.NONE else ""
    return _parse(conn.msgtype, text, conn.msgdef.format == MessageDefinitionFormat.IDL)


@lru_cache(maxsize=256)
def _parse(msgtype: str, text: str, idl: bool):
    if text:
        try:
            store = get_typestore(Stores.EMPTY)
            store.register(get_types_from_idl(text) if idl else get_types_from_msg(text, msgtype))
            if msgtype in store.fielddefs:
                return {**typestore().fielddefs, **store.fielddefs}
        except (TypesysError, ValueError, KeyError):
            pass  # a definition rosbags cannot parse: try the standard one
    if msgtype in typestore().fielddefs:
        return typestore().fielddefs
    return None
