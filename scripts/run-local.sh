#!/usr/bin/env bash
# Set up (runtime only) and run the daemon against a mosquitto on this machine, with the default voice.
# Starts a private mosquitto on 127.0.0.1:1883 when no broker answers there; extra arguments go to `serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
# set up once (needs the package registries); later runs work offline
[ -x .venv/bin/gsv-edge ] || bash scripts/setup.sh
export GSV_EDGE_MQTT__HOST=${GSV_EDGE_MQTT__HOST:-127.0.0.1}
export GSV_EDGE_MQTT__PORT=${GSV_EDGE_MQTT__PORT:-1883}
export GSV_EDGE_STATE_DIR=${GSV_EDGE_STATE_DIR:-$PWD/.state}
mkdir -p "$GSV_EDGE_STATE_DIR"
if ! (exec 3<>"/dev/tcp/$GSV_EDGE_MQTT__HOST/$GSV_EDGE_MQTT__PORT") 2>/dev/null; then
    echo "no broker on $GSV_EDGE_MQTT__HOST:$GSV_EDGE_MQTT__PORT: starting a private mosquitto"
    printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$GSV_EDGE_MQTT__PORT" > "$GSV_EDGE_STATE_DIR/mosquitto.conf"
    mosquitto -c "$GSV_EDGE_STATE_DIR/mosquitto.conf" -d
    sleep 0.5
fi
exec .venv/bin/gsv-edge serve "$@"
