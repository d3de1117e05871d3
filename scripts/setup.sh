#!/usr/bin/env bash
# One-time setup of a fresh Debian/Ubuntu machine: system packages, a virtualenv in .venv, the project in it.
# Usage: scripts/setup.sh [EXTRAS]   no argument: the runtime only (onnxruntime + numpy, no torch);
#        "dev": everything the tests need (torch CPU for conversion, pytest, peer clients).
# Safe to run again; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for pkg in mosquitto mosquitto-clients libportaudio2 systemd chromium chromium-driver fonts-wqy-microhei; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
extras=${1:-}
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".${extras:+[$extras]}"
# rhasspy-hermes pins paho-mqtt 1.x; its message classes work beside paho 2.x, so skip its pins.
if [ "$extras" = "dev" ]; then
    .venv/bin/python -m pip install -q --no-deps "rhasspy-hermes==0.6.2"
fi
echo "setup done: $(.venv/bin/python --version), $(.venv/bin/python -c 'import onnxruntime as o; print("onnxruntime", o.__version__)')"
