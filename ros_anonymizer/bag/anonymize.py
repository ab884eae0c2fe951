"""`bag anonymize`: rewrite a rosbag2 recording with every camera image anonymized.

Image topics (sensor_msgs Image and CompressedImage) go through one Pipeline
per topic, so face tracks persist per camera; each gets a
`<topic>/detections` topic (vision_msgs/Detection2DArray, the image's
header). Every other topic is copied byte for byte with its timestamps, QoS
and serialization format.

Fail closed: a frame that cannot be decoded or anonymized is dropped (or,
with on_failure=black, replaced by a black frame); topics whose messages
carry pictures this tool cannot anonymize (video packets, messages with an
embedded image) are left out, never copied. The bag is written under a
temporary name next to OUT and renamed only when complete, so an interrupted
run leaves no OUT, and the input is only ever read.
"""
from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.interfaces import Connection, MessageDefinitionFormat
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.enums import CompressionFormat, CompressionMode
from rosbags.typesys import Stores, TypesysError, get_types_from_msg, get_typestore
from sensor_msgs.msg import CompressedImage, Image
from tqdm import tqdm

from .. import __version__
from ..config import AnonymizerConfig
from ..errors import UserError
from ..image_io import decode, rgb_to_compressed, rgb_to_image
from ..messages import action_detections
from ..pipeline import Pipeline, failure_frame
from .reading import open_bag, read_messages
from .types import COMPRESSED_IMAGE_TYPE, DETECTIONS_TYPE, IMAGE_TYPE, typestore

STORAGES = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
DETECTIONS_SUFFIX = "/detections"

# Message types that carry pictures this tool cannot anonymize; their topics are left out.
PICTURE_TYPES = {
    "theora_image_transport/msg/Packet",
    "ffmpeg_image_transport_msgs/msg/FFMPEGPacket",
    "foxglove_msgs/msg/CompressedVideo",
    "foxglove_msgs/msg/RawImage",
    "foxglove_msgs/msg/CompressedImage",
}


@dataclass
class TopicCounts:
    """What happened to the frames of one image topic."""

    frames: int = 0
    anonymized: int = 0
    faces: int = 0
    black: int = 0  # could not be anonymized; replaced by a black frame (on_failure=black)
    undecodable: int = 0  # malformed message: dropped
    failed: int = 0  # the pipeline could not anonymize it: dropped
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def dropped(self) -> int:
        return self.undecodable + self.failed

    def note_error(self, text: str) -> None:
        self.errors[text] = self.errors.get(text, 0) + 1


@dataclass
class BagReport:
    output: Path
    images: dict[str, TopicCounts] = field(default_factory=dict)
    copied: dict[str, int] = field(default_factory=dict)  # topic -> messages copied unchanged
    left_out: dict[str, str] = field(default_factory=dict)  # topic -> why it is not in the output

    @property
    def dropped(self) -> int:
        return sum(c.dropped for c in self.images.values())

    @property
    def black(self) -> int:
        return sum(c.black for c in self.images.values())

    def summary(self) -> str:
        lines = [f"wrote {self.output}"]
        for topic, c in self.images.items():
            line = (f"  {topic}: {c.frames} frames, {c.anonymized} anonymized ({c.faces} faces), "
                    f"{c.black} black, {c.undecodable} undecodable and {c.failed} failed frames dropped")
            lines.append(line)
            lines.extend(f"    {n} x {error}" for error, n in sorted(c.errors.items(), key=lambda kv: -kv[1])[:5])
        if self.copied:
            lines.append(f"  copied unchanged: {len(self.copied)} topics, {sum(self.copied.values())} messages")
        lines.extend(f"  left out {topic}: {why}" for topic, why in self.left_out.items())
        return "\n".join(lines)


def anonymize_bag(src: Path, dst: Path, config: AnonymizerConfig, *, storage: str | None = None,
                  topics: list[str] | None = None, overwrite: bool = False, progress: bool = True) -> BagReport:
    """Write an anonymized copy of the bag `src` to the new bag folder `dst`."""
    src, dst = Path(src), Path(dst)
    check_paths(src, dst, overwrite)
    config = config.replace(frame_deadline_ms=0.0)  # offline: every frame may take the time it needs
    with open_bag(src) as reader:
        plan = plan_topics(reader.connections, topics)
        plugin = STORAGES[storage] if storage else input_storage(src)
        pipelines = {topic: Pipeline(config) for topic in plan.images}
        report = BagReport(dst, images={topic: TopicCounts() for topic in plan.images}, left_out=dict(plan.left_out))
        with staging(dst, overwrite) as path:
            writer = _writer_like(reader, path, plugin, config)
            writer.open()
            try:
                outputs, detections = _add_connections(writer, plan)
                total = sum(c.msgcount for c in plan.selected)
                messages = tqdm(reader.messages(plan.selected), total=total, unit="msg", desc="anonymizing",
                                disable=not progress)
                for conn, timestamp, raw in read_messages(messages, src):
                    out = outputs[conn.id]
                    if conn.topic not in plan.images:
                        writer.write(out, timestamp, raw)
                        report.copied[conn.topic] = report.copied.get(conn.topic, 0) + 1
                        continue
                    frame = anonymize_frame(conn.msgtype, raw, pipelines[conn.topic], config, report.images[conn.topic])
                    if frame is not None:
                        image_bytes, detections_bytes = frame
                        writer.write(out, timestamp, image_bytes)
                        if detections_bytes is not None:
                            writer.write(detections[conn.topic], timestamp, detections_bytes)
                writer.close()
            except BaseException:
                writer.abort()
                raise
    return report


def _writer_like(reader, path: Path, plugin: StoragePlugin, config: AnonymizerConfig) -> Writer:
    """A writer with the input's compression and custom data, noting how the bag was anonymized."""
    writer = Writer(path, version=Writer.VERSION_LATEST, storage_plugin=plugin)
    mode = (reader.compression_mode or "").upper()
    if mode in CompressionMode.__members__:
        writer.set_compression(CompressionMode[mode], CompressionFormat.ZSTD)
    for key, value in (reader.storage.metadata.custom or {}).items():
        writer.set_custom_data(str(key), str(value))
    writer.set_custom_data("ros_anonymizer", f"{__version__} filter={config.filter}")
    return writer


def anonymize_frame(msgtype: str, raw: bytes, pipeline: Pipeline, config: AnonymizerConfig,
                    counts: TopicCounts) -> tuple[bytes, bytes | None] | None:
    """One image message -> serialized (anonymized image, detections), or None to drop it.

    A frame replaced by a black one has no detections, as in the node.
    """
    counts.frames += 1
    compressed = msgtype == COMPRESSED_IMAGE_TYPE
    try:
        msg = deserialize_message(raw, CompressedImage if compressed else Image)
        rgb, encoding = decode(msg, config.max_image_pixels)
    except Exception as e:  # any malformed message, whatever the decoder raises: drop it
        counts.undecodable += 1
        counts.note_error(f"undecodable: {e}")
        return None
    result = pipeline.process(rgb)
    error = result.error
    if result.image is not None and np.may_share_memory(result.image, rgb):
        error = "the pipeline returned the input frame"
    image = result.image
    if error is not None:
        counts.note_error(error)
        image = failure_frame(rgb.shape, config)
    if image is None:
        counts.failed += 1
        return None
    try:
        if compressed:
            fmt = "png" if "png" in msg.format.lower() else "jpeg"
            out = rgb_to_compressed(image, fmt, config.jpeg_quality, msg.header, encoding)
        else:
            out = rgb_to_image(image, encoding, msg.header)
        detections = None if error else serialize_message(action_detections(msg.header, result.actions))
        encoded = serialize_message(out), detections
    except Exception as e:  # an anonymized frame that cannot be encoded is dropped, never replaced by the input
        counts.failed += 1
        counts.note_error(f"cannot encode: {e}")
        return None
    if error is None:
        counts.anonymized += 1
        counts.faces += len(result.faces)
    else:
        counts.black += 1
    return encoded


# Paths ---------------------------------------------------------------------

def check_paths(src: Path, dst: Path, overwrite: bool) -> None:
    """Refuse anything that could write over the input or over an existing bag without --overwrite."""
    if not src.exists():
        raise UserError(f"the input bag {src} does not exist.")
    s, d = src.resolve(), dst.resolve()
    if d == s or s in d.parents or d in s.parents:
        raise UserError(f"the output {dst} would overwrite the input bag {src}; choose an output outside it.")
    if dst.exists() and not overwrite:
        raise UserError(f"the output {dst} already exists; choose another name or pass --overwrite to replace it.")
    if not dst.parent.is_dir():
        raise UserError(f"the output's folder {dst.parent} does not exist; create it first.")


@contextmanager
def staging(dst: Path, overwrite: bool) -> Iterator[Path]:
    """A bag path next to `dst`; renamed to `dst` only when the block completes, removed otherwise."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.partial-", dir=dst.parent))
    try:
        yield tmp / "bag"
        if overwrite and dst.exists():
            dst.rename(tmp / "replaced")
        (tmp / "bag").rename(dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def input_storage(src: Path) -> StoragePlugin:
    files = [src] if src.is_file() else list(src.iterdir())
    return StoragePlugin.MCAP if any(f.name.endswith((".mcap", ".mcap.zstd")) for f in files) else StoragePlugin.SQLITE3


# Topics --------------------------------------------------------------------

@dataclass
class TopicPlan:
    selected: list[Connection]  # every input connection that is read
    images: list[str]  # image topics, anonymized
    left_out: dict[str, str]  # topics not written, and why


def plan_topics(connections: list[Connection], topics: list[str] | None) -> TopicPlan:
    """Which topics are anonymized, copied or left out (pictures that cannot be anonymized)."""
    present = {c.topic for c in connections}
    if topics:
        missing = sorted(set(topics) - present)
        if missing:
            raise UserError(f"the bag has no topic {', '.join(missing)}; it has {', '.join(sorted(present))}.")
    wanted = [c for c in connections if not topics or c.topic in topics]
    images = sorted({c.topic for c in wanted if c.msgtype in (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE)})
    left_out: dict[str, str] = {}
    for c in wanted:
        if c.topic in images and c.msgtype not in (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE):
            left_out[c.topic] = f"it mixes {c.msgtype} with image messages"
        elif c.msgtype in PICTURE_TYPES or (c.topic not in images and _embeds_image(c)):
            left_out[c.topic] = f"{c.msgtype} carries pictures this tool cannot anonymize"
        elif c.topic in {t + DETECTIONS_SUFFIX for t in images}:
            left_out[c.topic] = "replaced by the detections of the anonymized images"
    images = [t for t in images if t not in left_out]
    selected = [c for c in wanted if c.topic not in left_out]
    return TopicPlan(selected, images, left_out)


_IMAGE_FIELD_TYPES = {"sensor_msgs/Image", "sensor_msgs/msg/Image", "sensor_msgs::msg::Image",
                      "sensor_msgs/CompressedImage", "sensor_msgs/msg/CompressedImage", "sensor_msgs::msg::CompressedImage"}


def _embeds_image(conn: Connection) -> bool:
    """A message type with an Image or CompressedImage field, at any depth (e.g. stereo_msgs/DisparityImage)."""
    text = conn.msgdef.data if conn.msgdef.format != MessageDefinitionFormat.NONE else ""
    if not text and conn.msgtype in typestore().types:
        text, _ = typestore().generate_msgdef(conn.msgtype, ros_version=2)
    for line in text.splitlines():
        words = line.split("#")[0].split()
        if words and words[0].split("[")[0] in _IMAGE_FIELD_TYPES:
            return True
    return False


def _definition(conn: Connection) -> tuple[str, str]:
    """(message definition, type hash) to write `conn` back as recorded; what the bag lacks is derived from what it has."""
    msgdef = conn.msgdef.data if conn.msgdef.format != MessageDefinitionFormat.NONE else ""
    if msgdef and conn.digest:
        return msgdef, conn.digest
    if msgdef and conn.msgdef.format == MessageDefinitionFormat.MSG:  # the bag's own definition, hashed as is
        scratch = get_typestore(Stores.EMPTY)
        try:
            scratch.register(get_types_from_msg(msgdef, conn.msgtype))
            return msgdef, scratch.hash_rihs01(conn.msgtype)
        except TypesysError:
            pass  # a definition rosbags cannot parse: fall back to the standard one below
    if conn.msgtype in typestore().types:
        return typestore().generate_msgdef(conn.msgtype, ros_version=2)[0], conn.digest or typestore().hash_rihs01(conn.msgtype)
    raise UserError(f"topic {conn.topic} has type {conn.msgtype}, whose definition is not in the bag, so it "
                    "cannot be copied; leave it out with --topics.")


def _add_connections(writer: Writer, plan: TopicPlan) -> tuple[dict[int, Connection], dict[str, Connection]]:
    """Output connections mirroring the input's (same type, definition, format, QoS), plus one detections topic per image topic."""
    outputs: dict[int, Connection] = {}
    by_key: dict[tuple, Connection] = {}
    for conn in plan.selected:
        key = (conn.topic, conn.msgtype, conn.ext.serialization_format, tuple(conn.ext.offered_qos_profiles))
        if key not in by_key:
            msgdef, digest = _definition(conn)
            by_key[key] = writer.add_connection(
                conn.topic, conn.msgtype, msgdef=msgdef, rihs01=digest,
                serialization_format=conn.ext.serialization_format,
                offered_qos_profiles=conn.ext.offered_qos_profiles)
        outputs[conn.id] = by_key[key]
    detections = {}
    for topic in plan.images:
        qos = next(c.ext.offered_qos_profiles for c in plan.selected if c.topic == topic)
        detections[topic] = writer.add_connection(topic + DETECTIONS_SUFFIX, DETECTIONS_TYPE, typestore=typestore(),
                                                  offered_qos_profiles=qos)
    return outputs, detections
