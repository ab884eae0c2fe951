"""Launch one anonymizer_node per camera.

    ros2 launch ros_anonymizer anonymizer.launch.py cameras:=front,rear
    ros2 launch ros_anonymizer anonymizer.launch.py image_topic:=/camera/color/image_raw

Each camera gets a node named `anonymizer` in namespace `<namespace>/<camera>`,
so its outputs are `<namespace>/<camera>/image_anonymized`, `.../detections`,
and its input `image` is remapped to `image_topic` with `{camera}` filled in.
The plain functions below hold every decision, so tests can check them
where launch_ros is not installed.
"""
from __future__ import annotations

from pathlib import Path

PACKAGE = "ros_anonymizer"
EXECUTABLE = "anonymizer_node"
NODE_NAME = "anonymizer"
DEFAULT_IMAGE_TOPIC = "/{camera}/image_raw"


def share_file(*parts: str) -> str:
    """A file installed in the package's share directory; the source tree's copy when not installed."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            installed = Path(get_package_share_directory(PACKAGE)).joinpath(*parts)
            if installed.is_file():
                return str(installed)
        except (PackageNotFoundError, OSError):  # not installed, or no AMENT_PREFIX_PATH at all
            pass
    except ImportError:
        pass
    return str(Path(__file__).resolve().parents[1].joinpath(*parts))


def node_specs(cameras: str, image_topic: str = DEFAULT_IMAGE_TOPIC, namespace: str = "", params_file: str = "") -> list[dict]:
    """What each camera's node is started with: name, namespace, parameters file and remappings."""
    names = [c.strip() for c in cameras.split(",") if c.strip()]
    if not names:
        raise ValueError("cameras must name at least one camera, e.g. cameras:=front,rear")
    if len(set(names)) != len(names):
        raise ValueError(f"cameras must be different names, not {cameras!r}")
    specs = []
    for camera in names:
        topic = image_topic.replace("{camera}", camera)
        specs.append({
            "camera": camera,
            "executable": EXECUTABLE,
            "name": NODE_NAME,
            "namespace": "/" + "/".join(p for p in (namespace.strip("/"), camera) if p),
            "params_file": params_file or share_file("config", "anonymizer.yaml"),
            "remappings": [("image", topic), ("image/compressed", topic + "/compressed")],
        })
    return specs


def _nodes(context):
    from launch_ros.actions import Node

    args = context.launch_configurations
    profile = args["fastdds_profile"]
    env = {"FASTDDS_DEFAULT_PROFILES_FILE": profile} if profile else {}
    return [
        Node(package=PACKAGE, executable=spec["executable"], name=spec["name"], namespace=spec["namespace"],
             parameters=[spec["params_file"]], remappings=spec["remappings"], additional_env=env, output="screen",
             arguments=["--ros-args", "--log-level", args["log_level"]])
        for spec in node_specs(args["cameras"], args["image_topic"], args["namespace"], args["params_file"])
    ]


def generate_launch_description():
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    return LaunchDescription([
        DeclareLaunchArgument("cameras", default_value="camera", description="comma-separated camera names; one node each"),
        DeclareLaunchArgument("image_topic", default_value=DEFAULT_IMAGE_TOPIC,
                              description="each camera's raw image topic; {camera} is replaced by the camera name"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace above the per-camera namespaces"),
        DeclareLaunchArgument("params_file", default_value=share_file("config", "anonymizer.yaml"),
                              description="ROS 2 parameters file (keys of ros_anonymizer.config.AnonymizerConfig)"),
        DeclareLaunchArgument("fastdds_profile", default_value=share_file("config", "fastdds_shm.xml"),
                              description="Fast DDS profile with a 16 MB shared-memory segment; empty: leave the environment alone"),
        DeclareLaunchArgument("log_level", default_value="info", description="node log level"),
        OpaqueFunction(function=_nodes),
    ])
