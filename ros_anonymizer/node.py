"""anonymizer_node: the rclpy adapter around `Pipeline` (parameters, QoS, topics, diagnostics).

Threading keeps the node from ever queueing without bound: subscription
callbacks only put the newest message into a one-slot mailbox (a message still
waiting there is overwritten and counted as dropped), and one worker thread
decodes, anonymizes and publishes. Whatever fails on that path, the raw frame
is never published: the frame is dropped, or replaced by a black one when
`on_failure` is `black`.
"""
from __future__ import annotations

import sys
import threading
import time
from collections import deque
from dataclasses import fields

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from vision_msgs.msg import Detection2DArray

from .backends import ModelError
from .config import AnonymizerConfig, ConfigError
from .image_io import ImageDecodeError, decode, rgb_to_compressed, rgb_to_image
from .messages import action_detections, face_detections
from .pipeline import Pipeline, failure_frame

NODE_NAME = "anonymizer"
INPUT_TOPIC = "image"
COMPRESSED_INPUT_TOPIC = "image/compressed"
OUTPUT_TOPIC = "image_anonymized"
COMPRESSED_OUTPUT_TOPIC = "image_anonymized/compressed"
DETECTIONS_TOPIC = "detections"
FACES_TOPIC = "faces"
DIAGNOSTICS_TOPIC = "/diagnostics"

_OUTPUT_QOS = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
_DETECTIONS_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)


def parameter_descriptor(field) -> ParameterDescriptor:
    """A ROS parameter descriptor from a config field's metadata: help, range, choices, read-only."""
    meta = field.metadata
    descriptor = ParameterDescriptor(description=meta["help"], read_only=not meta["dynamic"])
    if meta["choices"]:
        descriptor.additional_constraints = "one of: " + ", ".join(meta["choices"])
    if meta["range"] and field.type == "float":
        descriptor.floating_point_range = [FloatingPointRange(from_value=float(meta["range"][0]), to_value=float(meta["range"][1]))]
    elif meta["range"] and field.type == "int":
        descriptor.integer_range = [IntegerRange(from_value=int(meta["range"][0]), to_value=int(meta["range"][1]), step=1)]
    return descriptor


def _plain(value):
    """rclpy returns integer arrays as array.array; the config wants lists."""
    return [int(v) for v in value] if not isinstance(value, (str, bool, int, float)) else value


class LatestMessage:
    """A one-slot mailbox: put() overwrites a message nobody took yet and says so."""

    def __init__(self):
        self._item = None
        self._ready = threading.Condition()

    def put(self, item) -> bool:
        with self._ready:
            overwrote = self._item is not None
            self._item = item
            self._ready.notify()
        return overwrote

    def take(self, timeout: float):
        with self._ready:
            if self._item is None:
                self._ready.wait(timeout)
            item, self._item = self._item, None
        return item


class Stats:
    """Counters and recent latencies for /diagnostics; totals since start, rates since the last report."""

    def __init__(self):
        self.lock = threading.Lock()
        self.received = self.published = self.dropped = self.failed = self.malformed = 0
        self.latencies_ms: deque[float] = deque(maxlen=300)
        self.faces: deque[int] = deque(maxlen=300)
        self.last_error = ""
        self._last_report = (time.monotonic(), 0, 0, 0)

    def since_last_report(self) -> tuple[float, float, int]:
        """Input rate, output rate, and frames failed or malformed since the previous call."""
        now, bad = time.monotonic(), self.failed + self.malformed
        then, received, published, bad_before = self._last_report
        self._last_report = (now, self.received, self.published, bad)
        elapsed = max(now - then, 1e-6)
        return (self.received - received) / elapsed, (self.published - published) / elapsed, bad - bad_before


class AnonymizerNode(Node):
    """Subscribes camera images, publishes anonymized images, detections and diagnostics."""

    def __init__(self, **node_options):
        super().__init__(NODE_NAME, **node_options)
        self.config = self._declare_config()
        self.pipeline = Pipeline(self.config)
        self._pipeline_lock = threading.Lock()
        self.stats = Stats()
        self._mailbox = LatestMessage()
        self._stop = threading.Event()

        input_qos = QoSProfile(depth=self.config.input_depth, history=HistoryPolicy.KEEP_LAST,
                               reliability=ReliabilityPolicy.RELIABLE if self.config.input_reliability == "reliable"
                               else ReliabilityPolicy.BEST_EFFORT)
        self.create_subscription(Image, INPUT_TOPIC, self._on_message, input_qos)
        if self.config.subscribe_compressed:
            self.create_subscription(CompressedImage, COMPRESSED_INPUT_TOPIC, self._on_message, input_qos)
        self.image_pub = self.create_publisher(Image, OUTPUT_TOPIC, _OUTPUT_QOS)
        self.compressed_pub = (self.create_publisher(CompressedImage, COMPRESSED_OUTPUT_TOPIC, _OUTPUT_QOS)
                               if self.config.publish_compressed else None)
        self.detections_pub = self.create_publisher(Detection2DArray, DETECTIONS_TOPIC, _DETECTIONS_QOS)
        self.faces_pub = self.create_publisher(Detection2DArray, FACES_TOPIC, _DETECTIONS_QOS) if self.config.publish_faces else None
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        self.create_timer(self.config.diagnostics_period, self._publish_diagnostics)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._worker = threading.Thread(target=self._work, name="anonymizer-worker", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"anonymizing '{self.resolve_topic_name(INPUT_TOPIC)}' -> '{self.resolve_topic_name(OUTPUT_TOPIC)}' "
            f"with filter {self.config.filter} on {self.pipeline.backend_name}")

    # Parameters -------------------------------------------------------------
    def _declare_config(self) -> AnonymizerConfig:
        defaults = AnonymizerConfig()
        for field in fields(AnonymizerConfig):
            self.declare_parameter(field.name, getattr(defaults, field.name), parameter_descriptor(field))
        return AnonymizerConfig.from_mapping({f.name: _plain(self.get_parameter(f.name).value) for f in fields(AnonymizerConfig)})

    def _on_set_parameters(self, params) -> SetParametersResult:
        try:
            config = self.config.replace(**{p.name: _plain(p.value) for p in params})
            with self._pipeline_lock:
                self.pipeline.reconfigure(config)
            self.config = config
        except (ConfigError, ModelError) as e:
            return SetParametersResult(successful=False, reason=str(e))
        self.get_logger().info("parameters changed: " + ", ".join(f"{p.name}={p.value}" for p in params))
        return SetParametersResult(successful=True)

    # Frames -------------------------------------------------------------------
    def _on_message(self, msg) -> None:
        overwrote = self._mailbox.put((msg, time.monotonic()))
        with self.stats.lock:
            self.stats.received += 1
            self.stats.dropped += overwrote

    def _work(self) -> None:
        while not self._stop.is_set():
            item = self._mailbox.take(timeout=0.1)
            if item is None:
                continue
            try:
                self._handle(*item)
            except Exception as e:  # the worker outlives any frame; the raw frame was never published
                self._count_failure("failed", f"frame failed after anonymization: {type(e).__name__}: {e}")

    def _handle(self, msg, received: float) -> None:
        config = self.config
        try:
            rgb, encoding = decode(msg, config.max_image_pixels)
        except ImageDecodeError as e:
            self._count_failure("malformed", f"dropped a malformed message: {e}")
            return
        with self._pipeline_lock:
            result = self.pipeline.process(rgb)
        error = result.error
        if result.image is not None and np.may_share_memory(result.image, rgb):
            error = "the pipeline returned the input frame"
        elapsed_ms = (time.monotonic() - received) * 1000.0
        if error is None and config.frame_deadline_ms and elapsed_ms > config.frame_deadline_ms:
            error = f"deadline missed: {elapsed_ms:.0f} ms since the frame arrived > {config.frame_deadline_ms:.0f} ms"
        if error is not None:
            self._count_failure("failed", f"frame not anonymized ({error}); published {'a black frame' if config.on_failure == 'black' else 'nothing'}")
            black = failure_frame(rgb.shape, config)
            if black is not None:
                self._publish_image(black, encoding, msg.header, config)
            return
        self._publish_image(result.image, encoding, msg.header, config)
        actions = result.actions
        self.detections_pub.publish(action_detections(msg.header, actions))
        if self.faces_pub is not None:
            faces = result.faces
            self.faces_pub.publish(face_detections(msg.header, faces))
        with self.stats.lock:
            self.stats.published += 1
            self.stats.latencies_ms.append((time.monotonic() - received) * 1000.0)
            self.stats.faces.append(len(result.faces))

    def _publish_image(self, rgb: np.ndarray, encoding: str, header, config: AnonymizerConfig) -> None:
        self.image_pub.publish(rgb_to_image(rgb, encoding, header))
        if self.compressed_pub is not None:
            self.compressed_pub.publish(rgb_to_compressed(rgb, config.compressed_format, config.jpeg_quality, header, encoding))

    def _count_failure(self, counter: str, message: str) -> None:
        with self.stats.lock:
            setattr(self.stats, counter, getattr(self.stats, counter) + 1)
            self.stats.last_error = message
        self.get_logger().warning(message, throttle_duration_sec=5.0)

    # Diagnostics ---------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        stats = self.stats
        with stats.lock:
            input_rate, output_rate, not_anonymized = stats.since_last_report()
            latencies = np.array(stats.latencies_ms) if stats.latencies_ms else np.zeros(1)
            faces = float(np.mean(stats.faces)) if stats.faces else 0.0
            values = {
                "input_rate_hz": f"{input_rate:.2f}", "output_rate_hz": f"{output_rate:.2f}",
                "latency_ms_p50": f"{np.percentile(latencies, 50):.1f}", "latency_ms_p95": f"{np.percentile(latencies, 95):.1f}",
                "faces_per_frame": f"{faces:.2f}", "frames_received": str(stats.received),
                "frames_published": str(stats.published), "dropped_frames": str(stats.dropped),
                "failed_frames": str(stats.failed), "malformed_messages": str(stats.malformed),
                "backend": self.pipeline.backend_name, "filter": self.config.filter, "last_error": stats.last_error,
            }
            level, message = DiagnosticStatus.OK, "anonymizing"
            if not_anonymized:
                level, message = DiagnosticStatus.WARN, f"{not_anonymized} frame(s) not anonymized, so not published"
            if input_rate > 0 and output_rate == 0:
                level, message = DiagnosticStatus.ERROR, "receiving frames but publishing none"
        status = DiagnosticStatus(level=level, name=f"{self.get_fully_qualified_name()}: image anonymizer", message=message,
                                  hardware_id=self.pipeline.backend_name,
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        diagnostics = DiagnosticArray(status=[status])
        diagnostics.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(diagnostics)

    def destroy_node(self) -> None:
        self._stop.set()
        self._worker.join(timeout=5.0)
        super().destroy_node()


def main(argv: list[str] | None = None) -> int:
    rclpy.init(args=sys.argv if argv is None else argv)
    node = None
    try:
        node = AnonymizerNode()
        rclpy.spin(node)
    except (ConfigError, ModelError, ParameterException) as e:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {e}")
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
