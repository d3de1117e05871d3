#!/usr/bin/env bash
# Set up (runtime only) and run the daemon against a mosquitto on this machine, with the default voice.
# Starts a private mosquitto on 127.0.0.1:1883 when no broker answers there; extra arguments go to `serve`.
# Serves the HTTP API and the web console on http://127.0.0.1:9880/; the first run makes an admin token for it
# and prints it (once: it is stored hashed).
# When the daemon stops, or this script is stopped (Ctrl-C, SIGTERM), it stops the daemon and then the
# mosquitto it started, and only that one: a broker that was already running is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
# set up once (needs the package registries); later runs work offline
[ -x .venv/bin/gsv-edge ] || bash scripts/setup.sh
export GSV_EDGE_MQTT__HOST=${GSV_EDGE_MQTT__HOST:-127.0.0.1}
export GSV_EDGE_MQTT__PORT=${GSV_EDGE_MQTT__PORT:-1883}
export GSV_EDGE_HTTP__HOST=${GSV_EDGE_HTTP__HOST:-127.0.0.1}
export GSV_EDGE_HTTP__PORT=${GSV_EDGE_HTTP__PORT:-9880}
export GSV_EDGE_STATE_DIR=${GSV_EDGE_STATE_DIR:-$PWD/.state}
mkdir -p "$GSV_EDGE_STATE_DIR"

console="http://$GSV_EDGE_HTTP__HOST:$GSV_EDGE_HTTP__PORT/"
if [ -z "$(.venv/bin/gsv-edge token list --json)" ]; then
    token=$(.venv/bin/gsv-edge token add admin --scope admin | tail -n 1)
    echo "web console: $console  log in with this admin token (shown only now): $token"
else
    echo "web console: $console  log in with your token (another: .venv/bin/gsv-edge token add NAME --scope admin)"
fi

daemon_pid=""
broker_pid=""
stop_started() {
    trap - EXIT
    trap '' INT TERM  # a second Ctrl-C must not leave the broker behind: stopping takes at most queue.drain_s
    if [ -n "$daemon_pid" ]; then
        kill -TERM "$daemon_pid" 2>/dev/null || true
        wait "$daemon_pid" 2>/dev/null || true  # it finishes the announcement in progress first
    fi
    if [ -n "$broker_pid" ]; then
        kill -TERM "$broker_pid" 2>/dev/null || true
        wait "$broker_pid" 2>/dev/null || true
    fi
}
trap stop_started EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

broker_answers() { (exec 3<>"/dev/tcp/$GSV_EDGE_MQTT__HOST/$GSV_EDGE_MQTT__PORT") 2>/dev/null; }
if ! broker_answers; then
    echo "no broker on $GSV_EDGE_MQTT__HOST:$GSV_EDGE_MQTT__PORT: starting a private mosquitto" \
         "(log: $GSV_EDGE_STATE_DIR/mosquitto.log)"
    printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$GSV_EDGE_MQTT__PORT" > "$GSV_EDGE_STATE_DIR/mosquitto.conf"
    # a session of its own: Ctrl-C reaches the daemon, and the broker serves until the daemon has stopped
    setsid mosquitto -c "$GSV_EDGE_STATE_DIR/mosquitto.conf" >>"$GSV_EDGE_STATE_DIR/mosquitto.log" 2>&1 &
    broker_pid=$!
    for _ in $(seq 100); do
        broker_answers && break
        if ! kill -0 "$broker_pid" 2>/dev/null; then
            broker_pid=""
            echo "mosquitto did not start; see $GSV_EDGE_STATE_DIR/mosquitto.log" >&2
            exit 1
        fi
        sleep 0.1
    done
fi
.venv/bin/gsv-edge serve "$@" &
daemon_pid=$!
status=0
wait "$daemon_pid" || status=$?
daemon_pid=""
exit "$status"
