"""launch/anonymizer.launch.py: what it passes to each node is checked here; the launch itself where launch_ros exists."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import threading
import time
from dataclasses import fields
from pathlib import Path

import pytest
import yaml
from ros_env import NodeProcess, RosPeer, ros_environment, wait_until  # noqa: F401 (fixture)

from ros_anonymizer import node as anonymizer_node
from ros_anonymizer.config import AnonymizerConfig

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILE = REPO / "launch" / "anonymizer.launch.py"


def load_launch_module():
    spec = importlib.util.spec_from_file_location("anonymizer_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


launch_file = load_launch_module()


def test_default_params_file_holds_exactly_the_config_fields_with_ros_types():
    path = Path(launch_file.share_file("config", "anonymizer.yaml"))
    data = yaml.safe_load(path.read_text())
    params = data["/**"]["ros__parameters"]
    assert set(params) == {f.name for f in fields(AnonymizerConfig)}
    for f in fields(AnonymizerConfig):  # rclpy refuses 500 for a double parameter: types must match exactly
        assert type(params[f.name]).__name__ == f.type, f"{f.name}: {params[f.name]!r} is not a {f.type}"
    differences = {k: (v, getattr(AnonymizerConfig(), k)) for k, v in AnonymizerConfig.from_yaml(path).to_dict().items()
                   if v != getattr(AnonymizerConfig(), k)}
    assert not differences, f"config/anonymizer.yaml differs from the defaults in config.py (file, code): {differences}"


def test_fastdds_profile_is_shipped_with_a_16_mb_segment():
    profile = Path(launch_file.share_file("config", "fastdds_shm.xml")).read_text()
    assert "<segment_size>16777216</segment_size>" in profile and "<type>SHM</type>" in profile


def test_executable_is_the_console_script_of_the_node():
    [entry] = [e for e in importlib.metadata.entry_points(group="console_scripts") if e.name == launch_file.EXECUTABLE]
    assert entry.value == "ros_anonymizer.node:main"
    setup = (REPO / "setup.py").read_text()
    assert all(pattern in setup for pattern in ('"launch/*.launch.py"', '"config/*.yaml"', '"config/*.xml"'))


def test_one_node_per_camera_with_remaps_namespace_and_params():
    specs = launch_file.node_specs("front, rear", namespace="/robot1")
    assert [(s["name"], s["namespace"]) for s in specs] == [("anonymizer", "/robot1/front"), ("anonymizer", "/robot1/rear")]
    assert specs[1]["remappings"] == [("image", "/rear/image_raw")]
    assert all(Path(s["params_file"]).is_file() for s in specs)
    [single] = launch_file.node_specs("camera", image_topic="/camera/color/image_raw", params_file="/tmp/p.yaml")
    assert single["remappings"] == [(anonymizer_node.INPUT_TOPIC, "/camera/color/image_raw")] and single["params_file"] == "/tmp/p.yaml"
    for bad in ("", " , ", "front,front"):
        with pytest.raises(ValueError, match="cameras"):
            launch_file.node_specs(bad)


def test_one_process_serves_every_camera():
    [spec] = launch_file.node_specs("front,rear", namespace="robot1", one_process=True)
    assert (spec["name"], spec["namespace"], spec["parameters"]) == ("anonymizer", "/robot1", {"cameras": "front,rear"})
    assert spec["remappings"] == [("front/image", "/front/image_raw"), ("rear/image", "/rear/image_raw")]


def test_launch_file_leaves_the_robots_dds_profile_alone_by_default():
    source = LAUNCH_FILE.read_text()
    assert 'DeclareLaunchArgument("fastdds_profile", default_value=""' in source
    for argument in ("use_sim_time", "respawn", "namespace", "one_process"):
        assert f'DeclareLaunchArgument("{argument}"' in source


def start_as_launched(spec: dict, log: Path) -> NodeProcess:
    """The node started exactly as the launch file would start it (namespace, name, parameters, remappings)."""
    ros_args = ["-r", f"__ns:={spec['namespace']}", "-r", f"__node:={spec['name']}"]
    for source, target in spec["remappings"]:
        ros_args += ["-r", f"{source}:={target}"]
    return NodeProcess(log, {"publish_faces": True, "publish_compressed": True, **spec["parameters"]},
                       params_file=Path(spec["params_file"]), ros_args=tuple(ros_args))


@pytest.mark.parametrize("one_process", [False, True])
def test_remapped_names_are_the_topics_the_real_node_uses(ros_environment, tmp_path, one_process):
    """Start the node as the launch file would for cameras front and rear and read its topics from the ROS graph."""
    specs = launch_file.node_specs("front,rear" if one_process else "front", namespace="robot1", one_process=one_process)
    nodes = [start_as_launched(spec, tmp_path / f"node{i}.log") for i, spec in enumerate(specs)]
    peer = RosPeer("launch_tester")
    spec, cameras = specs[0], ("front", "rear") if one_process else ("front",)
    try:
        from rclpy.node import NodeNameNonExistentError

        def topics(kind):
            try:
                return {name for name, _ in kind(spec["name"], spec["namespace"])}
            except NodeNameNonExistentError:  # not discovered yet
                return set()
        inputs = {f"/{c}/{topic}" for c in cameras for topic in ("image_raw", "camera_info")}
        wait_until(lambda: topics(peer.node.get_subscriber_names_and_types_by_node) >= inputs, 60,
                   f"the node's subscriptions (log:\n{nodes[0].log()})")
        outputs = {f"/robot1/{c}/{topic}" for c in cameras for topic in (
            "anonymized/image_raw", "anonymized/camera_info", "anonymized/image_raw/compressed", "detections", "faces")}
        wait_until(lambda: topics(peer.node.get_publisher_names_and_types_by_node) >= outputs | {"/diagnostics"}, 60,
                   f"the node's publishers (log:\n{nodes[0].log()})")
    finally:
        peer.close()
        for node in nodes:
            assert node.stop() == 0, node.log()


def test_launch_description_starts_one_node_per_camera(ros_environment):
    pytest.importorskip("launch_ros", reason="launch_ros is not on PyPI; this runs where ROS 2 is installed")
    from launch import LaunchDescription, LaunchService
    from launch.actions import IncludeLaunchDescription, Shutdown, TimerAction
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    service = LaunchService()
    service.include_launch_description(LaunchDescription([
        IncludeLaunchDescription(PythonLaunchDescriptionSource(str(LAUNCH_FILE)),
                                 launch_arguments={"cameras": "front,rear"}.items()),
        TimerAction(period=60.0, actions=[Shutdown(reason="the nodes did not appear in 60 s")]),
    ]))
    peer, seen, expected = RosPeer("launch_watcher"), set(), {"/front/anonymizer", "/rear/anonymizer"}
    done = threading.Event()

    def watch():
        while not expected <= seen and not done.is_set():
            seen.update(peer.node.get_fully_qualified_node_names())
            time.sleep(0.2)
        service.shutdown()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        service.run()
    finally:
        done.set()
        watcher.join(timeout=5.0)
        peer.close()
    assert expected <= seen
