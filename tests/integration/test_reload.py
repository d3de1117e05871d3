"""Safe updates: ``gsv-edge reload`` (SIGHUP) switches in a new config or bundle only after it validated;
a broken one is refused with a clear event and log line while the old one keeps serving, and nothing
queued is lost either way."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from daemon.commands import exit_codes
from tests.conftest import AlsaCapture
from tests.integration.test_durability import REPO, DaemonProcess, check_exactly_once, daemon_process  # noqa: F401

QUIET = {"lead_in_ms": 50, "tail_ms": 50}


def reload(daemon: DaemonProcess, config: Path | None = None, *, own: bool = True) -> subprocess.CompletedProcess[str]:
    """``gsv-edge reload --config`` with the daemon's file (``own``), another file, or no ``--config`` at all
    (the daemon then found through GSV_EDGE_STATE_DIR)."""
    options = ["--config", str(config or daemon.config)] if own or config else []
    env = {**os.environ, "GSV_EDGE_STATE_DIR": str(daemon.state_dir)}
    command = [sys.executable, "-m", "daemon", "reload", *options]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def control_events(daemon: DaemonProcess) -> list[dict[str, Any]]:
    return [m.json() for m in daemon.recorder.on(f"{daemon.base}/events") if m.json().get("id") is None]


def test_broken_bundle_is_refused_and_the_old_one_keeps_serving(
    daemon_process: Any, tmp_path: Path, demo_bundle: Path, alsa: AlsaCapture  # noqa: F811
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(demo_bundle, bundle)
    daemon: DaemonProcess = daemon_process(engine={"bundle": str(bundle)}, audio={"output_device": "gsvtest", **QUIET})
    daemon.start()
    status = daemon.recorder.wait_for(f"{daemon.base}/status").json()
    assert status["engine_state"] == "ready" and status["model"].startswith("GPT-SoVITS v2 'demo")
    ids = [f"q{n}" for n in range(3)]
    for request_id in ids:  # queued behind each other on a real-time device while the reloads happen
        daemon.say({"id": request_id, "text": "Announcement during the update.", "lang": "en"})

    good = (bundle / "t2s_step.onnx").read_bytes()
    with (bundle / "t2s_step.onnx").open("r+b") as graph:
        graph.seek(len(good) // 2)
        graph.write(b"corrupted")
    checked = reload(daemon)  # the command checks the bundle's digests itself and signals nothing
    assert checked.returncode == exit_codes.SETUP, checked
    assert "not sent" in checked.stderr and "SHA-256" in checked.stderr
    assert str(bundle / "t2s_step.onnx") in checked.stderr and not checked.stdout
    assert daemon.proc is not None
    os.kill(daemon.proc.pid, signal.SIGHUP)  # systemd's ExecReload: the daemon refuses it on its own
    event = daemon.recorder.wait_for(f"{daemon.base}/events", lambda m: m.json()["event"] == "reload_refused").json()
    assert "SHA-256" in event["reason"] and "t2s_step.onnx" in event["reason"]
    assert [e["event"] for e in control_events(daemon)] == ["reload_refused"]  # the command sent nothing
    assert "reload refused, still serving the previous configuration" in daemon.log.read_text()

    (bundle / "t2s_step.onnx").write_bytes(good)  # the fixed bundle, and a config change
    text = daemon.config.read_text().replace("[queue]\n", "")
    daemon.config.write_text(text + "[queue]\nmax_text_chars = 500\n")
    accepted = reload(daemon)
    assert accepted.returncode == 0, accepted
    assert "reloaded: engine GPT-SoVITS v2 'demo" in accepted.stdout and "queue.max_text_chars" in accepted.stdout

    daemon.say({"id": "after", "text": "Served after the reloads.", "lang": "en"})
    events = daemon.wait_terminal({*ids, "after"})
    check_exactly_once(events, {*ids, "after"})
    assert all(e["event"] == "done" for e in events if e["id"] in {*ids, "after"} and e["event"] in ("done", "failed"))
    status = [m.json() for m in daemon.recorder.on(f"{daemon.base}/status")][-1]
    assert status["engine_state"] == "ready" and status["model"].startswith("GPT-SoVITS v2 'demo")


def test_invalid_config_is_not_signalled_and_sighup_refuses_it(daemon_process: Any) -> None:  # noqa: F811
    daemon: DaemonProcess = daemon_process()
    daemon.start()
    original = daemon.config.read_text()
    daemon.config.write_text(original + "\n[queue]\nmax_depth = -1\n")
    checked = reload(daemon)
    assert checked.returncode == exit_codes.SETUP
    assert "queue.max_depth" in checked.stderr and "not sent" in checked.stderr

    daemon.config.write_text(original + "\nthis is not toml = = =\n")
    assert daemon.proc is not None
    os.kill(daemon.proc.pid, signal.SIGHUP)  # as systemd's ExecReload would
    daemon.recorder.wait_for(f"{daemon.base}/events", lambda m: m.json()["event"] == "reload_refused")
    daemon.config.write_text(original.replace("reconnect_max_s = 1.0", "reconnect_max_s = 2.0"))
    accepted = reload(daemon)
    assert accepted.returncode == 0 and "at the next restart: mqtt.reconnect_max_s" in accepted.stdout
    daemon.say({"id": "still", "text": "Still serving."})
    daemon.wait_event("still", "done")


def test_reload_refuses_a_config_file_the_daemon_does_not_run_with(daemon_process: Any, tmp_path: Path) -> None:  # noqa: F811
    """The daemon re-reads its own file: a check of another one would report a success that never happened."""
    daemon: DaemonProcess = daemon_process()
    daemon.start()
    original = daemon.config.read_text()
    other = tmp_path / "other.toml"
    other.write_text(original + "\n[queue]\nmax_text_chars = 500\n")
    refused = reload(daemon, other)
    assert refused.returncode == exit_codes.USAGE, refused
    [line] = refused.stderr.splitlines()
    assert "not sent" in line and str(other) in line and str(daemon.config) in line
    assert not refused.stdout

    daemon.config.write_text(original + "\n[queue]\nmax_depth = -1\n")
    checked = reload(daemon, own=False)  # no --config: the daemon's own file is the one checked
    assert checked.returncode == exit_codes.SETUP
    assert "queue.max_depth" in checked.stderr and str(daemon.config) in checked.stderr

    daemon.config.write_text(original + "\n[queue]\nmax_text_chars = 500\n")
    accepted = reload(daemon, own=False)
    assert accepted.returncode == 0, accepted
    assert "reloaded" in accepted.stdout and "queue.max_text_chars" in accepted.stdout
    daemon.recorder.wait_for(f"{daemon.base}/events", lambda m: m.json()["event"] == "reloaded")
    assert [e["event"] for e in control_events(daemon)] == ["reloaded"]  # the refused ones signalled nothing
