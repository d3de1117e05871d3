"""``scripts/run-local.sh`` runs the daemon against a broker on this machine; when it stops, it stops what it
started (the daemon, then the private mosquitto it started) and leaves a broker that was already there alone. It
serves the web console, prints its address, a first admin token (on the first run only) and the say topic."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import MOSQUITTO, Broker, Recorder
from tests.http_fixtures import free_port
from tests.paths import REPO

SCRIPT = REPO / "scripts" / "run-local.sh"


def _checkout(root: Path) -> Path:
    """The script in a checkout that ``scripts/setup.sh`` has set up: a copy of it beside a ``.venv`` whose
    ``gsv-edge`` runs this code with this interpreter."""
    (root / "scripts").mkdir(parents=True)
    shutil.copy2(SCRIPT, root / "scripts" / "run-local.sh")
    launcher = root / ".venv" / "bin" / "gsv-edge"
    launcher.parent.mkdir(parents=True)
    launcher.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m daemon "$@"\n')
    launcher.chmod(0o755)
    return root / "scripts" / "run-local.sh"


def _running_with(argument: Path) -> list[int]:
    """Pids of the live processes whose command line has ``argument`` (a zombie's is empty)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                args = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if str(argument).encode() in args:
                found.append(int(entry.name))
    return found


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


class RunLocal:
    """``bash scripts/run-local.sh`` in a session of its own, on a given port, node id and state directory."""

    def __init__(self, tmp_path: Path, port: int, state_dir: Path | None = None) -> None:
        self.node_id = f"local{uuid.uuid4().hex[:8]}"
        self.http_port = free_port()
        self.state_dir = state_dir or tmp_path / "state"
        self.broker_config = self.state_dir / "mosquitto.conf"  # where the script writes its broker's config
        self.log = tmp_path / "run-local.log"
        env = {
            **os.environ,
            "PATH": f"{Path(MOSQUITTO).parent}:{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(REPO),
            "GSV_EDGE_MQTT__HOST": "127.0.0.1",
            "GSV_EDGE_MQTT__PORT": str(port),
            "GSV_EDGE_MQTT__NODE_ID": self.node_id,
            "GSV_EDGE_STATE_DIR": str(self.state_dir),
            "GSV_EDGE_HTTP__PORT": str(self.http_port),
        }
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(["bash", str(_checkout(tmp_path / "checkout"))], env=env,
                                         stdout=log, stderr=log, start_new_session=True)

    def wait_online(self, recorder_for: Callable[[], Recorder]) -> Recorder:
        """A recorder subscribed to the daemon's availability once it reads ``online``."""
        recorder = recorder_for()
        recorder.subscribe(f"gsv-edge/{self.node_id}/availability")
        recorder.wait_for(f"gsv-edge/{self.node_id}/availability", lambda m: m.payload == b"online", timeout=60)
        return recorder

    def stop(self, signum: int) -> int:
        self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"run-local.sh did not stop; log:\n{self.log.read_text()}") from None

    def clean_up(self) -> None:
        """Whatever the script left behind (only its session and its own broker)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        for pid in _running_with(self.broker_config):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def run_local(tmp_path: Path) -> Iterator[Callable[[int], RunLocal]]:
    if not os.path.exists(MOSQUITTO):
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    started: list[RunLocal] = []

    def start(port: int, state_dir: Path | None = None) -> RunLocal:
        root = tmp_path / f"run{len(started)}"
        root.mkdir()
        started.append(RunLocal(root, port, state_dir))
        return started[-1]

    yield start
    for script in started:
        script.clean_up()


def test_stopping_the_script_stops_the_daemon_and_then_the_broker_it_started(
    run_local: Callable[[int], RunLocal], tmp_path: Path
) -> None:
    broker = Broker(tmp_path)  # only a free port: no broker answers there, so the script starts its own
    script = run_local(broker.port)

    def connect() -> Recorder:
        deadline = time.monotonic() + 30
        while not _answers(broker.port):
            assert script.proc.poll() is None and time.monotonic() < deadline, script.log.read_text()
            time.sleep(0.1)
        return Recorder(broker)

    recorder = script.wait_online(connect)
    [started] = _running_with(script.broker_config)
    try:
        status = script.stop(signal.SIGTERM)
        recorder.wait_for(f"gsv-edge/{script.node_id}/availability", lambda m: m.payload == b"offline")
    finally:
        recorder.close()
    assert not _running_with(script.broker_config), f"mosquitto {started}, started by the script, still runs"
    assert not _answers(broker.port)
    assert status == 128 + signal.SIGTERM  # as a shell reports a command ended by the signal


def test_ctrl_c_pressed_again_while_stopping_still_stops_the_broker(
    run_local: Callable[[int], RunLocal], tmp_path: Path
) -> None:
    broker = Broker(tmp_path)
    script = run_local(broker.port)
    deadline = time.monotonic() + 60
    while not _answers(broker.port):
        assert script.proc.poll() is None and time.monotonic() < deadline, script.log.read_text()
        time.sleep(0.1)
    script.wait_online(lambda: Recorder(broker)).close()
    [started] = _running_with(script.broker_config)
    while script.proc.poll() is None and time.monotonic() < deadline:  # an impatient user: Ctrl-C, again and again
        script.proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
    assert script.proc.poll() is not None, "run-local.sh did not stop"
    assert not _running_with(script.broker_config), f"mosquitto {started}, started by the script, still runs"


def test_a_broker_that_was_already_there_is_left_alone(
    run_local: Callable[[int], RunLocal], mosquitto_broker: Broker, recorder: Recorder
) -> None:
    script = run_local(mosquitto_broker.port)
    script.wait_online(lambda: recorder)
    status = script.stop(signal.SIGINT)
    recorder.wait_for(f"gsv-edge/{script.node_id}/availability", lambda m: m.payload == b"offline")
    assert not script.broker_config.exists() and not _running_with(script.broker_config)
    probe = f"gsv-edge/{script.node_id}/probe"
    recorder.subscribe(probe)
    recorder.publish(probe, b"still serving")
    assert recorder.wait_for(probe).payload == b"still serving"  # the broker that was there still serves
    assert status == 128 + signal.SIGINT


def test_the_first_run_prints_the_console_an_admin_token_and_the_say_topic(
    run_local: Callable[..., RunLocal], mosquitto_broker: Broker, recorder: Recorder, tmp_path: Path
) -> None:
    script = run_local(mosquitto_broker.port)
    script.wait_online(lambda: recorder)
    log = script.log.read_text()
    console = f"http://127.0.0.1:{script.http_port}/"
    [line] = [line for line in log.splitlines() if line.startswith("web console: ")]
    assert line.startswith(f"web console: {console}  log in with this admin token (shown only now): gsv_")
    token = line.rsplit(" ", 1)[1]
    login = httpx.post(f"{console}v1/session", json={"token": token})
    assert login.status_code == 200 and login.json()["scopes"] == ["admin"]
    assert httpx.get(console, follow_redirects=True).status_code == 200
    assert "publish a say" in log and f"gsv-edge/{script.node_id}/say" in log
    script.stop(signal.SIGTERM)

    again = run_local(mosquitto_broker.port, script.state_dir)  # the token exists: it is not shown again
    again.wait_online(lambda: recorder)
    [line] = [line for line in again.log.read_text().splitlines() if line.startswith("web console: ")]
    assert "log in with your token" in line and "gsv_" not in again.log.read_text()
    again.stop(signal.SIGTERM)
