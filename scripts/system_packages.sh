#!/usr/bin/env bash
# Install the few Debian/Ubuntu packages the set-up needs when they are missing:
# venv support for the interpreter, and a C++ tool chain with CMake to build vision_msgs.
# Runs apt-get directly as root, through sudo otherwise; says what to do when it cannot.
set -euo pipefail
PYTHON="${1:-python3}"
missing=()
"$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || missing+=("python3-venv")
"$PYTHON" -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' || missing+=("python3-dev")
command -v cmake >/dev/null || missing+=("cmake")
command -v c++ >/dev/null || missing+=("g++")
command -v make >/dev/null || missing+=("make")
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
    echo "Please install: ${missing[*]} (Debian/Ubuntu package names), then run again." >&2
    exit 1
fi
if [ "$(id -u)" -eq 0 ]; then sudo=""; elif command -v sudo >/dev/null; then sudo="sudo"; else
    echo "Please install as root: apt-get install ${missing[*]}, then run again." >&2
    exit 1
fi
echo "Installing system packages: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
