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

from tests.conftest import AlsaCapture
from tests.demo_fixtures import demo_bundle  # noqa: F401 - fixture
from tests.test_durability import REPO, DaemonProcess, check_exactly_once, daemon_process  # noqa: F401

QUIET = {"lead_in_ms": 50, "tail_ms": 50}


def reload(daemon: DaemonProcess) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "daemon.cli", "reload", "--config", str(daemon.config)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)


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
    refused = reload(daemon)
    assert refused.returncode == 1, refused
    assert "reload refused, still serving the previous configuration" in refused.stderr
    assert "SHA-256" in refused.stderr and "t2s_step.onnx" in refused.stderr
    event = next(e for e in control_events(daemon) if e["event"] == "reload_refused")
    assert "SHA-256" in event["reason"]
    assert "reload refused" in daemon.log.read_text()

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
    assert checked.returncode == 2 and "queue.max_depth" in checked.stderr and "not sent" in checked.stderr

    daemon.config.write_text(original + "\nthis is not toml = = =\n")
    assert daemon.proc is not None
    os.kill(daemon.proc.pid, signal.SIGHUP)  # as systemd's ExecReload would
    daemon.recorder.wait_for(f"{daemon.base}/events", lambda m: m.json()["event"] == "reload_refused")
    daemon.config.write_text(original.replace("reconnect_max_s = 1.0", "reconnect_max_s = 2.0"))
    accepted = reload(daemon)
    assert accepted.returncode == 0 and "at the next restart: mqtt.reconnect_max_s" in accepted.stdout
    daemon.say({"id": "still", "text": "Still serving."})
    daemon.wait_event("still", "done")
