"""`bag anonymize`: rewrite a rosbag2 recording with every camera image anonymized.

Each topic gets the action its policy decides (bag/policy.py): image topics
(sensor_msgs Image and CompressedImage) go through one Pipeline per topic, so
face tracks persist per camera, and each gets a `<topic>/detections` topic
(vision_msgs/Detection2DArray, the image's header); point clouds lose their
colour fields; topics of types that carry no pixels are copied byte for byte
with their timestamps, QoS and serialization format; everything else is left
out. Depth images follow the `depth_images` parameter, as in the node.

Fail closed: a frame that cannot be decoded or anonymized is dropped (or,
with on_failure=black, replaced by a black frame), a malformed point cloud is
dropped. The bag is written under a temporary name next to OUT and renamed
only when complete (report included), so an interrupted run leaves no OUT,
and the input is only ever read. The metadata is written in the version the
target ROS 2 distribution reads (bag/metadata.py).
"""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.interfaces import Connection, MessageDefinitionFormat
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.enums import CompressionFormat, CompressionMode
from rosbags.typesys import Stores, TypesysError, get_types_from_msg, get_typestore
from sensor_msgs.msg import CompressedImage, Image, PointCloud2
from tqdm import tqdm

from .. import __version__
from ..config import AnonymizerConfig
from ..errors import UserError, raise_if_interrupted
from ..image_io import DepthImage, decode, rgb_to_compressed, rgb_to_image
from ..messages import action_detections
from ..pipeline import Pipeline, failure_frame
from . import metadata
from .pointcloud import strip_colour
from .policy import Decision, Policy
from .reading import open_bag, read_messages
from .report import BagReport, TopicReport
from .types import COMPRESSED_IMAGE_TYPE, DETECTIONS_TYPE, POINTCLOUD_TYPE, typestore

STORAGES = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
DETECTIONS_SUFFIX = "/detections"


class PipelinePool:
    """Pipelines for the image topics of one bag after another: models load once, tracks start afresh per bag."""

    def __init__(self, config: AnonymizerConfig):
        self.config = config
        self._pipelines: list[Pipeline] = []

    def take(self, count: int) -> list[Pipeline]:
        while len(self._pipelines) < count:
            self._pipelines.append(Pipeline(self.config))
        for pipeline in self._pipelines[:count]:
            pipeline.reset()
        return self._pipelines[:count]


def anonymize_bag(src: Path, dst: Path, config: AnonymizerConfig, *, storage: str | None = None,
                  topics: list[str] | None = None, overwrite: bool = False, progress: bool = True,
                  policy: Policy | None = None, metadata_version: int | None = None,
                  pipelines: PipelinePool | None = None) -> BagReport:
    """Write an anonymized copy of the bag `src` to the new bag folder `dst`.

    `metadata_version`: the rosbag2 metadata version to write (default: the input's); `pipelines`: a pool
    to reuse loaded models across bags (its config must be `config` without a frame deadline).
    """
    src, dst = Path(src), Path(dst)
    check_paths(src, dst, overwrite)
    start = time.perf_counter()
    config = config.replace(frame_deadline_ms=0.0)  # offline: every frame may take the time it needs
    target = metadata_version or metadata.input_version(src)
    policy = policy or Policy()
    with open_bag(src) as reader:
        plan = plan_topics(reader.connections, topics, policy)
        plugin = STORAGES[storage] if storage else input_storage(src)
        pool = pipelines or PipelinePool(config)
        if pool.config != config:
            raise ValueError("the pipeline pool was built for another configuration")
        pipelines_by_topic = dict(zip(plan.images, pool.take(len(plan.images))))
        with staging(dst, overwrite) as path:
            writer, compression = _writer_like(reader, path, plugin, config, target)
            report = BagReport(str(src), str(dst), plugin.name.lower(), target, compression)
            for conn in reader.connections:
                decision = plan.decisions[conn.topic]
                report.topic(conn.topic, conn.msgtype, decision.action, decision.reason).read += conn.msgcount
            writer.open()
            try:
                outputs, detections = _add_connections(writer, plan)
                total = sum(c.msgcount for c in plan.selected)
                messages = tqdm(reader.messages(plan.selected), total=total, unit="msg", desc="anonymizing",
                                disable=not progress)
                for conn, timestamp, raw in read_messages(messages, src):
                    topic = report.topics[conn.topic]
                    if topic.action == "copy":
                        out, extra = bytes(raw), None
                    elif topic.action == "strip_colour":
                        out, extra = strip_cloud(raw, policy.colour_fields, topic), None
                    else:
                        out, extra = anonymize_frame(conn.msgtype, raw, pipelines_by_topic[conn.topic], config, topic)
                    if out is not None:
                        writer.write(outputs[conn.id], timestamp, out)
                        topic.written += 1
                    if extra is not None:
                        writer.write(detections[conn.topic], timestamp, extra)
                        topic.add("detections")
                metadata.hold_back(writer, target)
                writer.close()
            except BaseException:
                writer.abort()
                raise
            metadata.finish(path, target)
            report.seconds = round(time.perf_counter() - start, 3)
            report.write(path)
    return report


def _writer_like(reader, path: Path, plugin: StoragePlugin, config: AnonymizerConfig, target: int) -> tuple[Writer, str]:
    """A writer for metadata version `target`, with the input's custom data, noting how the bag was anonymized.

    Compression: mcap output always uses MCAP's own zstd chunk compression and never rosbag2's file or
    message compression inside it (which rosbag2 advises against and other mcap tools cannot read);
    sqlite3 output keeps the input's rosbag2 compression mode.
    """
    writer = Writer(path, version=metadata.writer_version(target), storage_plugin=plugin)
    if plugin == StoragePlugin.MCAP:
        writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        compression = "zstd chunks (mcap)"
    else:
        mode = (reader.compression_mode or "").upper()
        compression = "none"
        if mode in ("FILE", "MESSAGE"):
            writer.set_compression(CompressionMode[mode], CompressionFormat.ZSTD)
            compression = f"zstd per {mode.lower()} (rosbag2)"
    for key, value in (reader.storage.metadata.custom or {}).items():
        writer.set_custom_data(str(key), str(value))
    writer.set_custom_data("ros_anonymizer", f"{__version__} filter={config.filter}")
    return writer, compression


def anonymize_frame(msgtype: str, raw: bytes, pipeline: Pipeline, config: AnonymizerConfig,
                    counts: TopicReport) -> tuple[bytes | None, bytes | None]:
    """One image message -> serialized (anonymized image, detections); (None, None) drops it.

    A frame replaced by a black one has no detections, as in the node. A depth image is dropped or
    passed through unchanged by the `depth_images` rule.
    """
    counts.add("frames")
    compressed = msgtype == COMPRESSED_IMAGE_TYPE
    try:
        msg = deserialize_message(raw, CompressedImage if compressed else Image)
        rgb, encoding = decode(msg, config.max_image_pixels)
    except DepthImage:  # the `depth_images` rule, as in the node
        if config.depth_images == "passthrough":
            counts.add("depth_passed")
            return bytes(raw), None
        counts.add("depth_dropped")
        return None, None
    except Exception as e:  # any malformed message, whatever the decoder raises: drop it
        raise_if_interrupted(e)
        counts.add("undecodable")
        counts.note_error(f"undecodable: {e}")
        return None, None
    result = pipeline.process(rgb)
    error = result.error
    if result.image is not None and np.may_share_memory(result.image, rgb):
        error = "the pipeline returned the input frame"
    image = result.image
    if error is not None:
        counts.note_error(error)
        image = failure_frame(rgb.shape, config)
    if image is None:
        counts.add("failed")
        return None, None
    try:
        if compressed:
            fmt = "png" if "png" in msg.format.lower() else "jpeg"
            out = rgb_to_compressed(image, fmt, config.jpeg_quality, msg.header, encoding)
        else:
            out = rgb_to_image(image, encoding, msg.header)
        detections = None if error else clean_cdr(action_detections(msg.header, result.actions), DETECTIONS_TYPE)
        encoded = clean_cdr(out, msgtype), detections
    except Exception as e:  # an anonymized frame that cannot be encoded is dropped, never replaced by the input
        raise_if_interrupted(e)
        counts.add("failed")
        counts.note_error(f"cannot encode: {e}")
        return None, None
    if error is None:
        counts.add("anonymized")
        counts.add("faces", len(result.faces))
    else:
        counts.add("black")
    return encoded


def strip_cloud(raw: bytes, colour_fields: tuple[str, ...], counts: TopicReport) -> bytes | None:
    """A serialized PointCloud2 without its colour fields (unchanged if it has none); None drops a malformed one."""
    try:
        stripped = strip_colour(deserialize_message(raw, PointCloud2), colour_fields)
    except Exception as e:  # a malformed cloud is dropped, never copied
        raise_if_interrupted(e)
        counts.add("malformed")
        counts.note_error(f"malformed: {e}")
        return None
    if stripped is None:
        counts.add("unchanged")
        return bytes(raw)
    counts.add("stripped")
    return clean_cdr(stripped, POINTCLOUD_TYPE)


def clean_cdr(msg, msgtype: str) -> bytes:
    """An rclpy message as CDR with zeroed alignment padding.

    rclpy's serializer leaves the padding bytes between fields uninitialized: heap memory that differs
    from run to run and may hold bytes of earlier (raw) frames. rosbags zero-fills its buffer, so the
    message is re-serialized by it.
    """
    store = typestore()
    return bytes(store.serialize_cdr(store.deserialize_cdr(serialize_message(msg), msgtype), msgtype))


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
    """A bag path next to `dst`; renamed to `dst` only when the block completes, removed otherwise.

    A run killed outright (SIGKILL, power loss) cannot remove its hidden `.NAME.partial-*` folder; the
    next run for the same `dst` removes those whose owner (host and pid, noted inside) is gone.
    """
    remove_orphans(dst)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.partial-", dir=dst.parent))
    try:
        (tmp / "owner").write_text(f"{socket.gethostname()} {os.getpid()}")
        yield tmp / "bag"
        if overwrite and dst.exists():
            dst.rename(tmp / "replaced")
        (tmp / "bag").rename(dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_orphans(dst: Path) -> None:
    """Remove partial folders of `dst` left by processes of this host that no longer run."""
    for folder in dst.parent.glob(f".{dst.name}.partial-*"):
        try:
            host, pid = (folder / "owner").read_text().split()
        except (OSError, ValueError):
            if time.time() - folder.stat().st_mtime > 60:  # no owner noted a minute after creation: orphaned
                shutil.rmtree(folder, ignore_errors=True)
            continue
        if host == socket.gethostname() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def input_storage(src: Path) -> StoragePlugin:
    files = [src] if src.is_file() else list(src.iterdir())
    return StoragePlugin.MCAP if any(f.name.endswith((".mcap", ".mcap.zstd")) for f in files) else StoragePlugin.SQLITE3


# Topics --------------------------------------------------------------------

@dataclass
class TopicPlan:
    selected: list[Connection]  # input connections that are read (copied, stripped or anonymized)
    decisions: dict[str, Decision]  # every input topic -> its action and why

    @property
    def images(self) -> list[str]:
        return sorted(t for t, d in self.decisions.items() if d.action == "anonymize")


def plan_topics(connections: list[Connection], topics: list[str] | None, policy: Policy) -> TopicPlan:
    """The policy's action for every topic; `topics` limits what is written (the rest is dropped)."""
    present = {c.topic for c in connections}
    if topics:
        missing = sorted(set(topics) - present)
        if missing:
            raise UserError(f"the bag has no topic {', '.join(missing)}; it has {', '.join(sorted(present))}.")
    by_topic: dict[str, list[Connection]] = {}
    for c in connections:
        by_topic.setdefault(c.topic, []).append(c)
    decisions: dict[str, Decision] = {}
    for topic, conns in by_topic.items():
        options = [policy.decide(c) for c in conns]
        decisions[topic] = options[0]
        if len({d.action for d in options}) > 1:
            types = ", ".join(sorted({c.msgtype for c in conns}))
            decisions[topic] = Decision("drop", f"it mixes types that need different actions ({types})")
    for topic in decisions:
        if topics and topic not in topics:
            decisions[topic] = Decision("drop", "not selected by --topics")
    images = {t for t, d in decisions.items() if d.action == "anonymize"}
    for topic in present & {t + DETECTIONS_SUFFIX for t in images}:
        decisions[topic] = Decision("drop", "replaced by the detections of the anonymized images")
    selected = [c for c in connections if decisions[c.topic].action != "drop"]
    return TopicPlan(selected, decisions)


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
