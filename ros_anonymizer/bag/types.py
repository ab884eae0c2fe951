"""The rosbags typestore the bag tools read and write with.

ROS 2 Kilted's standard messages, plus `vision_msgs`, which rosbags does not
ship: its types are registered from the repository's `.msg` files, the same
definitions the rclpy interface package is built from, so a detections topic
written here has the type hash the live node's publisher has.
"""
from __future__ import annotations

from functools import lru_cache
from importlib import resources

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

VISION_MSGS_DIR = resources.files("ros_anonymizer") / "interfaces" / "vision_msgs"
DETECTIONS_TYPE = "vision_msgs/msg/Detection2DArray"
IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
POINTCLOUD_TYPE = "sensor_msgs/msg/PointCloud2"


@lru_cache(maxsize=1)
def typestore() -> Typestore:
    """Kilted's types plus vision_msgs; built once per process."""
    store = get_typestore(Stores.ROS2_KILTED)
    types = {}
    for msg_file in sorted(VISION_MSGS_DIR.iterdir(), key=lambda f: f.name):
        if msg_file.name.endswith(".msg"):
            types.update(get_types_from_msg(msg_file.read_text(), f"vision_msgs/msg/{msg_file.name[:-4]}"))
    store.register(types)
    return store
