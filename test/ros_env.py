"""Real ROS 2 for tests: an isolated DDS environment, a test-side peer node, and the node as a child process.

Import the fixtures into a test module (`from ros_env import ros_environment`).
Isolation: a random ROS_DOMAIN_ID, discovery on localhost only, logs in a temp
dir; transport: the shipped Fast DDS shared-memory profile (as robots should use).
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FASTDDS_PROFILE = REPO / "config" / "fastdds_shm.xml"
PARAMS_FILE = REPO / "config" / "anonymizer.yaml"

# Fast DDS reads its profile once per process, when the first participant is created: set it on import
# (test collection), before any test can create one, rather than in a fixture that may come too late.
os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(FASTDDS_PROFILE)


def isolated_environment(log_dir: Path) -> dict[str, str]:
    return {
        "ROS_DOMAIN_ID": str(random.SystemRandom().randint(1, 100)),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "ROS_LOG_DIR": str(log_dir),
        "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture(scope="session")
def ros_environment(tmp_path_factory):
    """Sets the isolated ROS settings in this process (before any rclpy.init) and for its children."""
    settings = isolated_environment(tmp_path_factory.mktemp("ros_log"))
    saved = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    yield settings
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def wait_until(predicate, timeout: float, what: str, poll: float = 0.02):
    """Poll `predicate` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def reply_within(future, seconds: float) -> bool:
    """Whether a service call's future completed within `seconds`."""
    deadline = time.monotonic() + seconds
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.02)
    return future.done()


def ask(call, what: str, timeout: float = 30.0, reply_wait: float = 5.0):
    """The reply to a service request that is safe to repeat; `call()` sends it and returns its future.

    A reply can be lost when a client calls right after discovery: the server may answer before it has matched
    the client's reply reader (ros2/rmw_fastrtps#390). So a request unanswered after `reply_wait` is sent again.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        future = call()
        if reply_within(future, min(reply_wait, max(deadline - time.monotonic(), 0.0))):
            return future.result()
        future.cancel()
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class RosPeer:
    """A node in the test process, spun by a background executor, that publishes and records messages."""

    def __init__(self, name: str = "tester"):
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor

        self.context = Context()
        rclpy.init(args=[], context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        from rclpy.executors import ExternalShutdownException

        try:
            self.executor.spin()
        except ExternalShutdownException:
            pass

    def publisher(self, msg_type, topic: str, depth: int = 10):
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        return self.node.create_publisher(msg_type, topic, QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE))

    def record(self, msg_type, topic: str, depth: int = 50) -> list:
        """A list that fills with every message received on `topic`."""
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        received: list = []

        def keep(msg):
            with self._lock:
                received.append(msg)

        self.node.create_subscription(msg_type, topic, keep, QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE))
        return received

    def snapshot(self, received: list) -> list:
        with self._lock:
            return list(received)

    def close(self):
        import rclpy

        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=5.0)


class NodeProcess:
    """anonymizer_node in its own process, with --params-file and `-p name:=value` overrides."""

    def __init__(self, log_path: Path, params: dict | None = None, params_file: Path = PARAMS_FILE, ros_args: tuple = ()):
        args = [sys.executable, "-m", "ros_anonymizer.node", "--ros-args", "--params-file", str(params_file)]
        for name, value in (params or {}).items():
            args += ["-p", f"{name}:={_ros_value(value)}"]
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.process = subprocess.Popen(args + list(ros_args), cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text()

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        finally:
            self._log.close()

    def stop(self, timeout: float = 15.0) -> int:
        """SIGINT, as ros2 launch does; kill only if it does not exit in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"the node did not stop within {timeout:.0f} s of SIGINT:\n{self.log()}")
        finally:
            self._log.close()


def _ros_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_ros_value(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    return str(value)
