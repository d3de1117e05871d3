"""systemd integration: the unit file passes ``systemd-analyze verify``; ``gsv-edge serve`` speaks the
sd_notify protocol on a real NOTIFY_SOCKET (READY only once the broker is there, watchdog pings, STOPPING
on SIGTERM); the watchdog ping stops while a worker loop is stuck; SIGTERM drains gracefully."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.app.systemd_notify import Notifier, Watchdog
from daemon.config import Settings
from tests.conftest import AlsaCapture, Broker, to_toml
from tests.doubles import ToneEngine
from tests.paths import REPO

UNIT = REPO / "systemd" / "gsv-edge.service"
INSTALLED_BINARY = "/opt/gsv-edge/.venv/bin/gsv-edge"
QUIET = {"lead_in_ms": 50, "tail_ms": 50}


class NotifyListener:
    """A bound unix datagram socket, as systemd's: records every message with its arrival time."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.messages: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self._sock.settimeout(0.2)
        self._closed = False
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed:
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._cond:
                self.messages.append((time.monotonic(), data.decode()))
                self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = 15, after: float = 0.0) -> tuple[float, str]:
        """The first message (arrived after ``after``) with a line matching ``pattern``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for arrived, text in self.messages:
                    if arrived >= after and any(re.fullmatch(pattern, line) for line in text.split("\n")):
                        return arrived, text
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {pattern!r} within {timeout}s; got {self.messages}")
                self._cond.wait(left)

    def lines(self, prefix: str, after: float = 0.0, before: float = float("inf")) -> list[str]:
        with self._cond:
            return [
                line
                for arrived, text in self.messages
                if after <= arrived <= before
                for line in text.split("\n")
                if line.startswith(prefix)
            ]

    def close(self) -> None:
        self._closed = True
        self._thread.join()
        self._sock.close()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[NotifyListener]:
    sock = NotifyListener(str(tmp_path / "notify.sock"))
    yield sock
    sock.close()


# -- the unit file ------------------------------------------------------------------------------------


def unit_settings() -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def test_unit_file_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    text = UNIT.read_text()
    assert INSTALLED_BINARY in text  # the documented install path
    binary = Path(sys.executable).with_name("gsv-edge")  # verify wants ExecStart's binary to exist
    unit = tmp_path / "gsv-edge.service"
    unit.write_text(text.replace(INSTALLED_BINARY, str(binary if binary.exists() else sys.executable)))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    ours = [line for line in (result.stdout + result.stderr).splitlines() if "gsv-edge.service" in line]
    assert result.returncode == 0 and not ours, result.stdout + result.stderr


def test_unit_file_agrees_with_the_daemon() -> None:
    unit = unit_settings()
    assert unit["Type"] == ["notify"] and unit["StateDirectory"] == ["gsv-edge"]
    assert "GSV_EDGE_STATE_DIR=/var/lib/gsv-edge" in unit["Environment"]
    assert "audio" in unit["SupplementaryGroups"][0].split()
    assert "char-alsa rw" in unit["DeviceAllow"] and unit["PrivateDevices"] == ["no"]
    assert set(unit["RestrictAddressFamilies"][0].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    # SIGTERM lets the announcement in progress finish for queue.drain_s: systemd must wait longer.
    assert float(unit["TimeoutStopSec"][0]) > Settings.model_fields["queue"].default_factory().drain_s + 5
    assert float(unit["WatchdogSec"][0]) >= 30  # a slow sentence on a Jetson CPU is not a hang


# -- the protocol -------------------------------------------------------------------------------------


def test_notifier_outside_systemd_is_a_no_op() -> None:
    notifier = Notifier.from_environ({})
    assert not notifier.enabled and notifier.watchdog_s is None and notifier.ready("x") is False
    with notifier.extending_timeout(1.0, 1.0):
        pass
    assert Notifier.from_environ({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "2000000"}).watchdog_s == 2.0
    other_pid = {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}
    assert Notifier.from_environ(other_pid).watchdog_s is None  # the watchdog is for another process


def test_start_timeout_is_extended_while_the_block_runs_and_within_a_limit(listener: NotifyListener) -> None:
    notifier = Notifier(listener.address)
    start = time.monotonic()
    with notifier.extending_timeout(0.3, 10.0):
        time.sleep(0.45)
    listener.wait_for("EXTEND_TIMEOUT_USEC=300000", after=start)
    assert len(listener.lines("EXTEND_TIMEOUT_USEC=300000")) >= 3  # every window/3 while the block ran
    later = time.monotonic()
    with notifier.extending_timeout(0.3, 0.05):  # a build that overruns its limit is no longer extended
        time.sleep(0.45)
    assert len(listener.lines("EXTEND_TIMEOUT_USEC=", after=later)) == 1


def test_serve_notifies_systemd(mosquitto_broker: Broker, tmp_path: Path) -> None:
    """``gsv-edge serve`` under a fake systemd: an abstract NOTIFY_SOCKET, a watchdog, journald stderr."""
    mosquitto_broker.stop()  # READY must wait for the broker
    listener = NotifyListener(f"@gsv-edge-test-{uuid.uuid4().hex}")
    config = tmp_path / "config.toml"
    mqtt = {"host": mosquitto_broker.host, "port": mosquitto_broker.port, "node_id": "notify",
            "reconnect_min_s": 0.1, "reconnect_max_s": 0.5}
    config.write_text(to_toml({"mqtt": mqtt}))
    log_file = tmp_path / "stderr.log"
    log_file.touch()
    stat = log_file.stat()
    env = {
        **os.environ,
        "GSV_EDGE_STATE_DIR": str(tmp_path / "state"),
        "NOTIFY_SOCKET": listener.address,
        "WATCHDOG_USEC": "1000000",
        "JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}",  # our stderr "is" the journal
    }
    with log_file.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "daemon", "serve", "--config", str(config)], cwd=REPO, env=env, stderr=stderr
        )
    try:
        listener.wait_for("STATUS=loading the engine")
        waiting, _ = listener.wait_for(r"STATUS=waiting for the MQTT broker 127\.0\.0\.1:\d+")
        time.sleep(0.5)
        assert not listener.lines("READY=1"), "READY before the broker was reachable"
        broker_up = time.monotonic()
        mosquitto_broker.start()
        ready_at, ready = listener.wait_for("READY=1", timeout=20)
        assert ready_at > broker_up and waiting < broker_up
        assert re.search(r"STATUS=idle, queue 0; engine fallback-only \(.*\); broker .* connected", ready), ready
        listener.wait_for("WATCHDOG=1", after=ready_at + 0.6, timeout=5)  # pinged every 0.5 s
        assert len(listener.lines("WATCHDOG=1", after=ready_at)) >= 2
        assert not listener.lines("WATCHDOG=1", before=ready_at)  # the watchdog starts once ready
        assert not listener.lines("EXTEND_TIMEOUT_USEC")  # no TensorRT here
        proc.send_signal(signal.SIGTERM)
        _, stopping = listener.wait_for("STOPPING=1", timeout=10)
        assert "STATUS=stopping" in stopping
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        listener.close()
    logged = log_file.read_text().splitlines()
    assert logged and all(re.match(r"<[2-7]>", line) for line in logged), logged[:5]  # priorities, no timestamps
    assert any(line.startswith("<6>gsv-edge: gsv-edge ") for line in logged)


def test_watchdog_ping_withheld_while_a_loop_is_stuck(start_daemon, listener: NotifyListener) -> None:
    gate = threading.Event()
    daemon = start_daemon(synth=ToneEngine(seconds=0.05, gate=gate))
    service = daemon.service
    watchdog = Watchdog(Notifier(listener.address, watchdog_usec=1_000_000), service.problems, service.status_line)
    watchdog.start()
    try:
        listener.wait_for("WATCHDOG=1")
        listener.wait_for("STATUS=idle, queue 0; .*")
        daemon.say({"id": "hang", "text": "The engine hangs here."})  # the synthesis waits on the gate
        stuck_at, stuck = listener.wait_for("STATUS=unhealthy: .*", timeout=8)
        assert "synthesis loop silent" in stuck and "playback loop silent" in stuck
        time.sleep(1.2)
        assert not listener.lines("WATCHDOG=1", after=stuck_at)  # systemd would now restart the daemon
        gate.set()
        daemon.wait_event("hang", "done")
        listener.wait_for("WATCHDOG=1", after=stuck_at, timeout=5)
        listener.wait_for("STATUS=idle, queue 0; .*", after=stuck_at)
    finally:
        gate.set()
        watchdog.stop()


# -- graceful stop ------------------------------------------------------------------------------------


def test_drain_finishes_the_announcement_and_keeps_the_queue(start_daemon, alsa: AlsaCapture) -> None:
    audio = {"output_device": "gsvtest", **QUIET}
    daemon = start_daemon(synth=ToneEngine(seconds=1.0), audio=audio)
    daemon.say({"id": "playing", "text": "One second of tone."})
    daemon.say({"id": "waiting", "text": "Spoken after the restart."})
    daemon.wait_event("playing", "first_audio")
    begun = time.monotonic()
    daemon.service.drain(5.0)
    assert 0.3 < time.monotonic() - begun < 3.0  # waited for the end of the second-long tone, no longer
    assert daemon.wait_event("playing", "done")["audio_ms"] == 1000
    daemon.service.stop()
    assert not [e for e in daemon.events("waiting") if e["event"] in ("done", "failed", "first_audio")]
    again = start_daemon(synth=ToneEngine(seconds=0.1), audio=audio, mqtt={"node_id": daemon.topics.node_id})
    again.wait_event("waiting", "done")  # kept by the durable queue, spoken by the next run


def test_drain_is_bounded(start_daemon, alsa: AlsaCapture) -> None:
    daemon = start_daemon(synth=ToneEngine(seconds=3.0), audio={"output_device": "gsvtest", **QUIET})
    daemon.say({"id": "long", "text": "Three seconds of tone."})
    daemon.wait_event("long", "first_audio")
    begun = time.monotonic()
    daemon.service.drain(0.3)
    assert time.monotonic() - begun < 1.0
    daemon.service.stop()
    assert daemon.wait_event("long", "failed")["reason"] == "daemon stopping"
