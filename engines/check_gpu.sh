#!/usr/bin/env bash
# The TensorRT path on a machine with an NVIDIA GPU (a Jetson, or any desktop/server GPU): builds the engines,
# runs the face detector, anonymizer and action detector through the TensorRT backend on real frames, compares
# every output with ONNX Runtime (stated tolerance) and prints frames/s and latency. Exit status 0: all passed.
#
#   engines/check_gpu.sh [FRAMES...]     videos, image folders or rosbag2 folders (default: ../shared/data clips)
#
# Needs TensorRT's Python module (JetPack: python3-libnvinfer; x86: pip install tensorrt), pycuda or cuda-python,
# and requirements/runtime.txt. Environment: PYTHON (python3), OUT (out/gpu_check), ENGINE_CACHE ($OUT/engines),
# CHECK_ARGS (more options of engines/ros_anonymizer_engines/check_gpu.py, e.g. "--precision fp32 --iterations 200 --cuda cuda-python").
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT=${OUT:-out/gpu_check}
if [ $# -eq 0 ]; then
  set -- ../shared/data/jhmdb/catch/*.avi ../shared/data/mot17_mini/MOT17-02-FRCNN/img1
fi
mkdir -p "$OUT"
{ nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv 2>/dev/null \
  || cat /etc/nv_tegra_release 2>/dev/null || echo "no nvidia-smi"; } | tee "$OUT/device.txt"
# shellcheck disable=SC2086  # CHECK_ARGS is a list of options
PYTHONPATH="$PWD:$PWD/engines${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m ros_anonymizer_engines.check_gpu --frames "$@" --out "$OUT" \
  --cache-dir "${ENGINE_CACHE:-$OUT/engines}" ${CHECK_ARGS:-} 2>&1 | tee "$OUT/check_gpu.log"
