#!/usr/bin/env bash
# Build the vision_msgs subset in ros_anonymizer/interfaces into a virtual environment.
#
# Why: vision_msgs is not on PyPI. The rosidl/ament wheels can generate and compile it,
# and installing it into the venv prefix (where the ROS wheels keep their libraries and
# Python packages) means rclpy finds it with no extra environment at all.
# Robots with a ROS install use `ros-$ROS_DISTRO-vision-msgs` instead and never run this.
#
# Usage: scripts/build_interfaces.sh VENV_DIR     (rebuilds only when the .msg files change)
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 VENV_DIR" >&2
    exit 2
fi
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$(cd "$1" && pwd)"
PY="$VENV/bin/python"
MSG_DIR="$ROOT/ros_anonymizer/interfaces/vision_msgs"
WORK="$VENV/interfaces"
STAMP="$WORK/.built"

for tool in cmake make c++; do
    command -v "$tool" >/dev/null || { echo "build_interfaces: '$tool' is missing; install it (apt-get install cmake build-essential) and run again." >&2; exit 1; }
done
[ -x "$PY" ] || { echo "build_interfaces: $PY does not exist; create the venv first (make .venv/.installed)." >&2; exit 1; }

want="$(cat "$MSG_DIR"/*.msg "$0" | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$PY" -c "import vision_msgs.msg" 2>/dev/null; then
    exit 0
fi
start=$SECONDS

# The wheels' exported CMake files name the Python and numpy headers of the machine that
# built them (/opt/python/cp3XX-cp3XX/...); point them at this venv's.
py_include="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
np_include="$("$PY" -c 'import numpy; print(numpy.get_include())')"
{ grep -rlE --include='*.cmake' '/opt/python/cp3[0-9]+-cp3[0-9]+/' "$VENV/share" || true; } | while read -r f; do
    sed -i -E \
        -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_?core/include#${np_include}#g" \
        -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#${py_include}#g" "$f"
done

rm -rf "$WORK"
mkdir -p "$WORK/src/vision_msgs/msg"
cp "$MSG_DIR"/*.msg "$WORK/src/vision_msgs/msg/"
msgs="$(cd "$MSG_DIR" && ls *.msg | sed 's#^#  "msg/#; s#$#"#')"
cat > "$WORK/src/vision_msgs/package.xml" <<XML
<?xml version="1.0"?>
<package format="3">
  <name>vision_msgs</name>
  <version>4.1.1</version>
  <description>Subset of ROS 2 vision_msgs (Detection2DArray), built by ros_anonymizer.</description>
  <maintainer email="maintainers@ros-anonymizer.org">ros_anonymizer maintainers</maintainer>
  <license>Apache-2.0</license>
  <buildtool_depend>ament_cmake</buildtool_depend>
  <buildtool_depend>rosidl_default_generators</buildtool_depend>
  <depend>std_msgs</depend>
  <depend>geometry_msgs</depend>
  <exec_depend>rosidl_default_runtime</exec_depend>
  <member_of_group>rosidl_interface_packages</member_of_group>
  <export><build_type>ament_cmake</build_type></export>
</package>
XML
cat > "$WORK/src/vision_msgs/CMakeLists.txt" <<CMAKE
cmake_minimum_required(VERSION 3.16)
project(vision_msgs)
find_package(ament_cmake REQUIRED)
find_package(rosidl_default_generators REQUIRED)
find_package(std_msgs REQUIRED)
find_package(geometry_msgs REQUIRED)
rosidl_generate_interfaces(\${PROJECT_NAME}
$msgs
  DEPENDENCIES std_msgs geometry_msgs
)
ament_export_dependencies(rosidl_default_runtime)
ament_package()
CMAKE

echo "build_interfaces: building vision_msgs into $VENV (about a minute)..."
export PATH="$VENV/bin:$PATH" AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"
if ! {
    cmake -S "$WORK/src/vision_msgs" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_INSTALL_PREFIX="$VENV" -DPython3_EXECUTABLE="$PY" -DBUILD_TESTING=OFF &&
    cmake --build "$WORK/build" -j "$(nproc)" &&
    cmake --install "$WORK/build"
} > "$WORK/build.log" 2>&1; then
    tail -n 30 "$WORK/build.log" >&2
    echo "build_interfaces: building vision_msgs failed; the full log is $WORK/build.log." >&2
    exit 1
fi
"$PY" -c "
from rclpy.serialization import serialize_message, deserialize_message
from vision_msgs.msg import Detection2DArray, Detection2D
m = Detection2DArray(detections=[Detection2D(id='1')])
assert deserialize_message(serialize_message(m), Detection2DArray).detections[0].id == '1'
" || { echo "build_interfaces: vision_msgs was built but does not load in rclpy; see $WORK/build.log." >&2; exit 1; }
echo "$want" > "$STAMP"
echo "build_interfaces: vision_msgs ready in $((SECONDS - start)) s."
