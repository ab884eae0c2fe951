"""Launch the anonymizer for one or more cameras.

    ros2 launch ros_anonymizer anonymizer.launch.py cameras:=front,rear
    ros2 launch ros_anonymizer anonymizer.launch.py cameras:=front,rear one_process:=true
    ros2 launch ros_anonymizer anonymizer.launch.py image_topic:=/camera/color/image_raw

By default each camera gets a node named `anonymizer` in namespace
`<namespace>/<camera>`; with `one_process:=true` one node `<namespace>/anonymizer`
serves every camera with one shared set of models (parameter `cameras`). Either
way camera `front` publishes `<namespace>/front/anonymized/image_raw`,
`.../anonymized/camera_info`, `.../detections`, and reads `image_topic` with
`{camera}` filled in (its camera_info beside it, as image_transport does).
The robot's DDS configuration is left alone unless `fastdds_profile` names one.
The plain functions below hold every decision, so tests can check them where
launch_ros is not installed.
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


def node_specs(cameras: str, image_topic: str = DEFAULT_IMAGE_TOPIC, namespace: str = "", params_file: str = "",
               one_process: bool = False) -> list[dict]:
    """What each node is started with: name, namespace, parameters file, parameters and remappings."""
    names = [c.strip() for c in cameras.split(",") if c.strip()]
    if not names:
        raise ValueError("cameras must name at least one camera, e.g. cameras:=front,rear")
    if len(set(names)) != len(names):
        raise ValueError(f"cameras must be different names, not {cameras!r}")
    base = namespace.strip("/")
    params_file = params_file or share_file("config", "anonymizer.yaml")
    if one_process:
        return [{"executable": EXECUTABLE, "name": NODE_NAME, "namespace": "/" + base, "params_file": params_file,
                 "parameters": {"cameras": ",".join(names)},
                 "remappings": [(f"{camera}/image", image_topic.replace("{camera}", camera)) for camera in names]}]
    return [{"executable": EXECUTABLE, "name": NODE_NAME, "namespace": "/" + "/".join(p for p in (base, camera) if p),
             "params_file": params_file, "parameters": {},
             "remappings": [("image", image_topic.replace("{camera}", camera))]} for camera in names]


def _true(value: str) -> bool:
    return value.strip().lower() in ("true", "1", "yes")


def _nodes(context):
    from launch_ros.actions import Node

    args = context.launch_configurations
    profile = args["fastdds_profile"]
    env = {"FASTDDS_DEFAULT_PROFILES_FILE": profile} if profile else {}
    return [
        Node(package=PACKAGE, executable=spec["executable"], name=spec["name"], namespace=spec["namespace"],
             parameters=[spec["params_file"], {**spec["parameters"], "use_sim_time": _true(args["use_sim_time"])}],
             remappings=spec["remappings"], additional_env=env, output="screen",
             respawn=_true(args["respawn"]), respawn_delay=float(args["respawn_delay"]),
             arguments=["--ros-args", "--log-level", args["log_level"]])
        for spec in node_specs(args["cameras"], args["image_topic"], args["namespace"], args["params_file"],
                               _true(args["one_process"]))
    ]


def generate_launch_description():
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    return LaunchDescription([
        DeclareLaunchArgument("cameras", default_value="camera", description="comma-separated camera names"),
        DeclareLaunchArgument("one_process", default_value="false",
                              description="true: one node serves every camera with one shared set of models; false: one node per camera"),
        DeclareLaunchArgument("image_topic", default_value=DEFAULT_IMAGE_TOPIC,
                              description="each camera's raw image topic; {camera} is replaced by the camera name"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace above the per-camera namespaces"),
        DeclareLaunchArgument("params_file", default_value=share_file("config", "anonymizer.yaml"),
                              description="ROS 2 parameters file (keys of ros_anonymizer.config.AnonymizerConfig, qos_overrides)"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (bag replay, simulation)"),
        DeclareLaunchArgument("respawn", default_value="false", description="restart a node that exits"),
        DeclareLaunchArgument("respawn_delay", default_value="2.0", description="seconds before a respawn"),
        DeclareLaunchArgument("fastdds_profile", default_value="",
                              description="a Fast DDS profile for the node, e.g. the shipped config/fastdds_shm.xml "
                                          f"({share_file('config', 'fastdds_shm.xml')}); empty: the robot's own DDS setup"),
        DeclareLaunchArgument("log_level", default_value="info", description="node log level"),
        OpaqueFunction(function=_nodes),
    ])
