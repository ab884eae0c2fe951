"""anonymizer_node: the rclpy adapter around `Pipeline`: a lifecycle node serving one or more cameras.

Lifecycle: parameters and endpoints exist from construction; `configure` loads
the models (one set, shared by every camera); `activate` starts the worker and
the publishers; `deactivate` waits for the frame in hand to be published in
full (image, camera_info, detections) before the publishers stop. With
`autostart` (the default) the node configures and activates itself, so plain
`anonymizer_node` behaves as before.

Threading keeps the node from ever queueing without bound: subscription
callbacks only put the newest message of each camera into a mailbox (a message
still waiting there is overwritten and counted as dropped), and one worker
takes every camera's latest frame, anonymizes them together (one batched face
detection) and publishes. Whatever fails on that path, the raw frame is never
published: the frame is dropped, or replaced by a black one when `on_failure`
is `black`.
"""
from __future__ import annotations

import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field, fields

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from vision_msgs.msg import Detection2DArray, VisionInfo

from .backends import ModelError
from .config import AnonymizerConfig, ConfigError
from .image_io import DepthImage, ImageDecodeError, decode, rgb_to_compressed, rgb_to_image
from .messages import action_detections, face_detections
from .pipeline import Pipeline, failure_frame, process_batch

NODE_NAME = "anonymizer"
INPUT_TOPIC = "image"  # image_transport base topic: `compressed` reads INPUT_TOPIC + "/compressed"
OUTPUT_TOPIC = "anonymized/image_raw"
OUTPUT_CAMERA_INFO_TOPIC = "anonymized/camera_info"
COMPRESSED_OUTPUT_TOPIC = "anonymized/image_raw/compressed"
DETECTIONS_TOPIC = "detections"
FACES_TOPIC = "faces"
VISION_INFO_TOPIC = "vision_info"
LABELS_PARAMETER = "labels"
DIAGNOSTICS_TOPIC = "/diagnostics"
RATE_TOLERANCE = 0.1  # diagnostic_updater's FrequencyStatus default

_OUTPUT_QOS = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
_DETECTIONS_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
_LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def _overridable() -> QoSOverridingOptions:
    """`qos_overrides.<topic>.<publisher|subscription>.<history|depth|reliability>` parameters for an endpoint."""
    return QoSOverridingOptions.with_default_policies()


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


def camera_names(config: AnonymizerConfig) -> list[str]:
    """The cameras one process serves: `cameras` split on commas; [""] (one camera at the node's namespace) if empty."""
    names = [c.strip().strip("/") for c in config.cameras.split(",") if c.strip().strip("/")]
    if len(set(names)) != len(names):
        raise ConfigError(f"cameras must be different names, not {config.cameras!r}.")
    return names or [""]


class Mailboxes:
    """One slot per camera: put() overwrites a message nobody took yet and says so; take_all() empties every slot."""

    def __init__(self):
        self._items: dict = {}
        self._ready = threading.Condition()

    def put(self, key, item) -> bool:
        with self._ready:
            overwrote = key in self._items
            self._items[key] = item
            self._ready.notify()
        return overwrote

    def take_all(self, timeout: float) -> dict:
        with self._ready:
            if not self._items:
                self._ready.wait(timeout)
            items, self._items = self._items, {}
        return items

    def clear(self) -> None:
        with self._ready:
            self._items = {}


@dataclass
class Stats:
    """One camera's counters and recent history for /diagnostics; totals since start."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    received: int = 0
    published: int = 0
    dropped: int = 0
    failed: int = 0
    malformed: int = 0
    depth: int = 0
    arrivals: deque = field(default_factory=lambda: deque(maxlen=10000))  # monotonic arrival times
    publications: deque = field(default_factory=lambda: deque(maxlen=10000))
    depth_drops: deque = field(default_factory=lambda: deque(maxlen=10000))  # when depth images were dropped
    stamp_ages_s: deque = field(default_factory=lambda: deque(maxlen=300))
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=300))
    faces: deque = field(default_factory=lambda: deque(maxlen=300))
    last_face: float | None = None  # when a face was last found; None: never
    last_error: str = ""
    reported_bad: tuple[int, int] = (0, 0)  # failed, malformed at the previous report


class Camera:
    """One camera's endpoints and state: input, camera_info, outputs, tracks (its own Pipeline) and stats."""

    def __init__(self, node: "AnonymizerNode", name: str):
        self.name, self.prefix = name, (name + "/" if name else "")
        self.stats = Stats()
        self.pipeline: Pipeline | None = None
        self.camera_infos: dict[tuple, CameraInfo] = {}  # by header stamp, the last few
        self.latest_info: CameraInfo | None = None
        config = node.config
        image_topic = node.resolve_topic_name(self.prefix + INPUT_TOPIC)
        self.input_topic = image_topic + "/compressed" if config.input_transport == "compressed" else image_topic
        # image_transport's CameraSubscriber convention: camera_info beside the image topic.
        self.info_topic = image_topic.rsplit("/", 1)[0] + "/camera_info"
        node.create_subscription(CompressedImage if config.input_transport == "compressed" else Image, self.input_topic,
                                 lambda msg: node.on_image(self, msg), qos_profile_sensor_data,
                                 qos_overriding_options=_overridable())
        node.create_subscription(CameraInfo, self.info_topic, self.on_camera_info, qos_profile_sensor_data,
                                 qos_overriding_options=_overridable())
        self.image_pub = node.create_lifecycle_publisher(Image, self.prefix + OUTPUT_TOPIC, _OUTPUT_QOS,
                                                         qos_overriding_options=_overridable())
        self.info_pub = node.create_lifecycle_publisher(CameraInfo, self.prefix + OUTPUT_CAMERA_INFO_TOPIC, _OUTPUT_QOS,
                                                        qos_overriding_options=_overridable())
        self.compressed_pub = (node.create_lifecycle_publisher(CompressedImage, self.prefix + COMPRESSED_OUTPUT_TOPIC, _OUTPUT_QOS,
                                                               qos_overriding_options=_overridable())
                               if config.publish_compressed else None)
        self.detections_pub = node.create_lifecycle_publisher(Detection2DArray, self.prefix + DETECTIONS_TOPIC, _DETECTIONS_QOS,
                                                              qos_overriding_options=_overridable())
        self.faces_pub = (node.create_lifecycle_publisher(Detection2DArray, self.prefix + FACES_TOPIC, _DETECTIONS_QOS,
                                                          qos_overriding_options=_overridable())
                          if config.publish_faces else None)
        self.output_topic = node.resolve_topic_name(self.prefix + OUTPUT_TOPIC)

    def on_camera_info(self, msg: CameraInfo) -> None:
        stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        self.camera_infos[stamp] = msg
        while len(self.camera_infos) > 30:
            self.camera_infos.pop(next(iter(self.camera_infos)))
        self.latest_info = msg

    def camera_info_for(self, header) -> CameraInfo | None:
        """The camera_info with the image's stamp, else the latest one, carrying the image's header; None before any."""
        info = self.camera_infos.get((header.stamp.sec, header.stamp.nanosec), self.latest_info)
        if info is None:
            return None
        matched = CameraInfo(**{name: getattr(info, name) for name in info.get_fields_and_field_types()})
        matched.header = header
        return matched


class StartError(RuntimeError):
    """configure failed (a model, a parameter); the message says why."""


class AnonymizerNode(LifecycleNode):
    """Subscribes camera images (and camera_info), publishes anonymized images, camera_info, detections, diagnostics."""

    def __init__(self, **node_options):
        self._active = threading.Event()  # before anything can fail: rclpy destroys a half-built node at shutdown
        self._worker: threading.Thread | None = None
        super().__init__(NODE_NAME, **node_options)
        self.config = self._declare_config()
        self.cameras = [Camera(self, name) for name in camera_names(self.config)]
        self.vision_info_pub = self.create_lifecycle_publisher(VisionInfo, VISION_INFO_TOPIC, _LATCHED_QOS,
                                                               qos_overriding_options=_overridable())
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10, qos_overriding_options=_overridable())
        self._pipeline_lock = threading.Lock()
        self._mailboxes = Mailboxes()
        self.configure_error = ""
        self.create_timer(self.config.diagnostics_period, self._publish_diagnostics)
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # Lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        """configure + activate (autostart); raises StartError with the reason when configure fails."""
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            raise StartError(self.configure_error or "configure failed")
        if self.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            raise StartError("activate failed")

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            first = Pipeline(self.config)
        except (ConfigError, ModelError) as e:
            self.configure_error = str(e)
            self.get_logger().error(f"cannot configure: {e}")
            return TransitionCallbackReturn.FAILURE
        for i, camera in enumerate(self.cameras):
            camera.pipeline = first if i == 0 else first.for_another_camera()
        self._declare_labels(first)
        self.get_logger().info(
            f"configured: {', '.join(c.input_topic + ' -> ' + c.output_topic for c in self.cameras)} "
            f"with filter {self.config.filter} on {first.backend_name}")
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)  # publishers first, so the worker's first frame goes out
        self._mailboxes.clear()  # never publish a frame that arrived before activation
        self._active.set()
        self._worker = threading.Thread(target=self._work, name="anonymizer-worker", daemon=True)
        self._worker.start()
        self.vision_info_pub.publish(self._vision_info())
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()  # the frame in hand is published in full before the publishers stop
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        for camera in self.cameras:
            camera.pipeline = None
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        return super().on_shutdown(state)

    def _stop_worker(self) -> None:
        self._active.clear()
        if self._worker is not None:
            self._worker.join(timeout=30.0)
            self._worker = None

    def _declare_labels(self, pipeline: Pipeline) -> None:
        """Every class_id the node publishes, as the read-only `labels` parameter that VisionInfo points to."""
        actions = pipeline.action_detector
        labels = ["face", *(actions.class_names if actions is not None else ())]
        if not self.has_parameter(LABELS_PARAMETER):  # a later configure loads the same models (read-only parameters)
            self.declare_parameter(LABELS_PARAMETER, labels, ParameterDescriptor(
                description="class_id of every detection this node publishes (faces and actions)", read_only=True))

    def _vision_info(self) -> VisionInfo:
        info = VisionInfo(method=f"ros_anonymizer: CenterFace faces, action detector {self.config.action_model or 'none'}",
                          database_location=f"{self.get_fully_qualified_name()}:{LABELS_PARAMETER}", database_version=1)
        info.header.stamp = self.get_clock().now().to_msg()
        return info

    # Parameters -------------------------------------------------------------
    def _declare_config(self) -> AnonymizerConfig:
        defaults = AnonymizerConfig()
        for f in fields(AnonymizerConfig):
            self.declare_parameter(f.name, getattr(defaults, f.name), parameter_descriptor(f))
        return AnonymizerConfig.from_mapping({f.name: _plain(self.get_parameter(f.name).value) for f in fields(AnonymizerConfig)})

    def _on_set_parameters(self, params) -> SetParametersResult:
        known = {f.name for f in fields(AnonymizerConfig)}
        changes = {p.name: _plain(p.value) for p in params if p.name in known}
        if not changes:  # rclpy's own (use_sim_time), QoS overrides, labels
            return SetParametersResult(successful=True)
        try:
            config = self.config.replace(**changes)
            weakened = self.config.weakenings(config)
            if weakened and not self.config.allow_weakening:
                return SetParametersResult(successful=False, reason=(
                    "refused: this weakens anonymization (" + "; ".join(weakened) + "); the node must be started "
                    "with allow_weakening:=true to accept such changes"))
            with self._pipeline_lock:
                pipelines = [c.pipeline for c in self.cameras if c.pipeline is not None]
                for i, pipeline in enumerate(pipelines):
                    if i:
                        pipeline.learned = pipelines[0].learned  # one learned model per process
                    pipeline.reconfigure(config)
            self.config = config
        except (ConfigError, ModelError) as e:
            return SetParametersResult(successful=False, reason=str(e))
        self.get_logger().info("parameters changed: " + ", ".join(f"{k}={v}" for k, v in changes.items()))
        return SetParametersResult(successful=True)

    # Frames -------------------------------------------------------------------
    def on_image(self, camera: Camera, msg) -> None:
        if not self._active.is_set():
            return  # not active: nothing is taken in, so nothing can come out
        now = time.monotonic()
        age = (self.get_clock().now().nanoseconds - (msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec)) / 1e9
        overwrote = self._mailboxes.put(camera, (msg, now))
        with camera.stats.lock:
            camera.stats.received += 1
            camera.stats.dropped += overwrote
            camera.stats.arrivals.append(now)
            camera.stats.stamp_ages_s.append(age)

    def _work(self) -> None:
        while self._active.is_set():
            items = self._mailboxes.take_all(timeout=0.1)
            if items:
                try:
                    self._handle(items)
                except Exception as e:  # the worker outlives any frame; no raw frame was published
                    for camera in items:
                        self._count_failure(camera, "failed", f"frames failed: {type(e).__name__}: {e}")

    def _handle(self, items: dict) -> None:
        """Every camera's latest message: decode, anonymize together, publish each (a failure costs only its frame)."""
        config, decoded = self.config, []
        for camera, (msg, received) in items.items():
            try:
                rgb, encoding = decode(msg, config.max_image_pixels)
            except DepthImage as e:
                self._depth_image(camera, msg, config, str(e))
                continue
            except ImageDecodeError as e:
                self._count_failure(camera, "malformed", f"dropped a malformed message: {e}")
                continue
            decoded.append((camera, msg, received, rgb, encoding))
        if not decoded:
            return
        with self._pipeline_lock:
            results = process_batch([c.pipeline for c, *_ in decoded], [rgb for *_, rgb, _ in decoded])
        for (camera, msg, received, rgb, encoding), result in zip(decoded, results):
            try:
                self._publish_result(camera, msg, received, rgb, encoding, result, config)
            except Exception as e:  # e.g. encoding the output; nothing of this frame was published before it
                self._count_failure(camera, "failed", f"frame failed after anonymization: {type(e).__name__}: {e}")

    def _publish_result(self, camera: Camera, msg, received: float, rgb: np.ndarray, encoding: str, result, config) -> None:
        error = result.error
        if result.image is not None and np.may_share_memory(result.image, rgb):
            error = "the pipeline returned the input frame"
        elapsed_ms = (time.monotonic() - received) * 1000.0
        if error is None and config.frame_deadline_ms and elapsed_ms > config.frame_deadline_ms:
            error = f"deadline missed: {elapsed_ms:.0f} ms since the frame arrived > {config.frame_deadline_ms:.0f} ms"
        if error is not None:
            self._count_failure(camera, "failed", f"frame not anonymized ({error}); "
                                                  f"published {'a black frame' if config.on_failure == 'black' else 'nothing'}")
            black = failure_frame(rgb.shape, config)
            if black is not None:
                self._publish_image(camera, black, encoding, msg.header, config)
            return
        self._publish_image(camera, result.image, encoding, msg.header, config)
        actions = result.actions
        camera.detections_pub.publish(action_detections(msg.header, actions))
        if camera.faces_pub is not None:
            camera.faces_pub.publish(face_detections(msg.header, result.faces))
        now = time.monotonic()
        with camera.stats.lock:
            camera.stats.published += 1
            camera.stats.publications.append(now)
            camera.stats.latencies_ms.append((now - received) * 1000.0)
            camera.stats.faces.append(len(result.faces))
            if len(result.faces):
                camera.stats.last_face = now

    def _publish_image(self, camera: Camera, rgb: np.ndarray, encoding: str, header, config: AnonymizerConfig) -> None:
        image = rgb_to_image(rgb, encoding, header)
        compressed = (rgb_to_compressed(rgb, config.compressed_format, config.jpeg_quality, header, encoding)
                      if camera.compressed_pub is not None else None)
        self._publish_with_info(camera, image, header, compressed)

    def _publish_with_info(self, camera: Camera, image: Image | None, header, compressed: CompressedImage | None = None) -> None:
        """Everything for one frame, encoded before the first publish, so a failure publishes none of it."""
        info = camera.camera_info_for(header)
        if image is not None:
            camera.image_pub.publish(image)
        if info is not None:
            camera.info_pub.publish(info)
        if compressed is not None:
            camera.compressed_pub.publish(compressed)

    def _depth_image(self, camera: Camera, msg: Image, config: AnonymizerConfig, what: str) -> None:
        with camera.stats.lock:
            camera.stats.depth += 1
            if config.depth_images == "drop":
                camera.stats.depth_drops.append(time.monotonic())
        if config.depth_images == "passthrough" and isinstance(msg, CompressedImage) and camera.compressed_pub is None:
            self.get_logger().info("dropping compressed depth images: passing them through needs publish_compressed",
                                   throttle_duration_sec=60.0)
        elif config.depth_images == "passthrough":
            if isinstance(msg, CompressedImage):  # compressedDepth: its own transport, beside the raw output
                self._publish_with_info(camera, None, msg.header, msg)
            else:
                self._publish_with_info(camera, msg, msg.header)
            with camera.stats.lock:
                camera.stats.published += 1
                camera.stats.publications.append(time.monotonic())
        else:
            self.get_logger().info(f"dropping depth images ({what}; depth_images: drop)", throttle_duration_sec=60.0)

    def _count_failure(self, camera: Camera, counter: str, message: str) -> None:
        with camera.stats.lock:
            setattr(camera.stats, counter, getattr(camera.stats, counter) + 1)
            camera.stats.last_error = message
        self.get_logger().warning(f"{camera.name + ': ' if camera.name else ''}{message}", throttle_duration_sec=5.0)

    # Diagnostics ---------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        diagnostics = DiagnosticArray(status=[self._camera_status(c) for c in self.cameras])
        diagnostics.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(diagnostics)

    def _camera_status(self, camera: Camera) -> DiagnosticStatus:
        """diagnostic_updater semantics: the worst check sets the level; messages of that level are joined."""
        config, stats, now = self.config, camera.stats, time.monotonic()
        backend = camera.pipeline.backend_name if camera.pipeline is not None else "not configured"
        checks: list[tuple[bytes, str]] = []
        with stats.lock:
            window = [t for t in stats.arrivals if t > now - config.rate_window]
            published = sum(1 for t in stats.publications if t > now - config.rate_window)
            input_rate = len(window) / config.rate_window
            failed, malformed = stats.failed - stats.reported_bad[0], stats.malformed - stats.reported_bad[1]
            stats.reported_bad = (stats.failed, stats.malformed)
            latencies = np.array(stats.latencies_ms) if stats.latencies_ms else np.zeros(1)
            ages = list(stats.stamp_ages_s)[-len(window):] if window else []
            values = {
                "input_rate_hz": f"{input_rate:.2f}", "output_rate_hz": f"{published / config.rate_window:.2f}",
                "expected_rate_hz": f"{config.expected_rate:.2f}",
                "latency_ms_p50": f"{np.percentile(latencies, 50):.1f}", "latency_ms_p95": f"{np.percentile(latencies, 95):.1f}",
                "frame_age_s_max": f"{max(ages):.3f}" if ages else "",
                "faces_per_frame": f"{np.mean(stats.faces) if stats.faces else 0.0:.2f}",
                "seconds_since_last_face": f"{now - stats.last_face:.1f}" if stats.last_face is not None else "",
                "frames_received": str(stats.received), "frames_published": str(stats.published),
                "dropped_frames": str(stats.dropped), "failed_frames": str(stats.failed),
                "malformed_messages": str(stats.malformed), "depth_images": str(stats.depth),
                "backend": backend, "filter": config.filter, "last_error": stats.last_error,
            }
            if not self._active.is_set():
                checks.append((DiagnosticStatus.WARN, f"not active ({self._state_machine.current_state[1]}): publishing nothing"))
            if failed:
                checks.append((DiagnosticStatus.ERROR, f"{failed} frame(s) could not be anonymized and were dropped"))
            if window and not published:
                if sum(1 for t in stats.depth_drops if t > now - config.rate_window) >= len(window):
                    checks.append((DiagnosticStatus.WARN, "receiving only depth images, dropped (depth_images: drop)"))
                else:
                    checks.append((DiagnosticStatus.ERROR, "receiving frames but publishing none"))
            if malformed:
                checks.append((DiagnosticStatus.WARN, f"{malformed} malformed message(s) dropped"))
            if not window and self._active.is_set():
                last = f"for {now - stats.arrivals[-1]:.1f} s" if stats.arrivals else "yet"
                checks.append((DiagnosticStatus.WARN, f"no frame received {last}"))
            elif config.expected_rate and input_rate < config.expected_rate * (1.0 - RATE_TOLERANCE):
                checks.append((DiagnosticStatus.WARN, f"input rate {input_rate:.1f} Hz is below the expected {config.expected_rate:.1f} Hz"))
            if config.max_frame_age and ages and max(ages) > config.max_frame_age:
                checks.append((DiagnosticStatus.WARN, f"frames arrive up to {max(ages):.1f} s after their header stamps"))
            if (config.no_face_warning and stats.last_face is not None and window
                    and now - stats.last_face > config.no_face_warning):
                checks.append((DiagnosticStatus.WARN, f"no face found for {now - stats.last_face:.0f} s on a stream that had "
                                                      "faces: check the camera and the face detector"))
        level = max((lvl for lvl, _ in checks), default=DiagnosticStatus.OK)
        message = "; ".join(m for lvl, m in checks if lvl == level) or "anonymizing"
        name = f"{self.get_fully_qualified_name()}: {camera.name + ' ' if camera.name else ''}image anonymizer"
        return DiagnosticStatus(level=level, name=name, message=message, hardware_id=backend,
                                values=[KeyValue(key=k, value=v) for k, v in values.items()])

    def destroy_node(self) -> None:
        self._stop_worker()
        super().destroy_node()


def main(argv: list[str] | None = None) -> int:
    rclpy.init(args=sys.argv if argv is None else argv)
    node = None
    try:
        node = AnonymizerNode()
        if node.config.autostart:
            node.start()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ConfigError, ModelError, ParameterException, StartError) as e:
        if rclpy.ok():
            rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {e}")
            return 1
    except Exception:
        if rclpy.ok():
            raise
        # Ctrl-C (rclpy shuts the context down) while the node was being built or started: a normal stop.
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
