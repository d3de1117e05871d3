"""A configured bundle the daemon cannot use is said loudly: an error in the log, ``engine_state: degraded`` with
the reason in the retained status, and an ``engine_down`` event at start; the daemon goes on speaking with
eSpeak NG. Covers a bad bundle and an installation that lost one of the front end's data files."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import Broker, Recorder, to_toml
from tests.paths import REPO


def test_a_bad_bundle_is_reported_in_log_status_and_events(
    start_daemon, recorder: Recorder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bundle = tmp_path / "bad-bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{not json")
    with caplog.at_level(logging.ERROR):
        daemon = start_daemon(engine={"bundle": str(bundle)})
    assert any(r.levelno == logging.ERROR and "bad-bundle" in r.getMessage() for r in caplog.records)
    status = recorder.wait_for(daemon.topics.status).json()
    assert status["engine_state"] == "degraded" and "bad-bundle" in status["engine_error"]
    down = recorder.wait_for(daemon.topics.events, lambda m: m.json()["event"] == "engine_down").json()
    assert down["id"] is None and down["reason"] == status["engine_error"] and down["ts"] > 0
    daemon.say({"id": "anyway", "text": "Still speaking.", "lang": "en"})
    assert daemon.wait_event("anyway", "done")["engine"] == "espeak-ng fallback"


def test_an_installation_missing_a_front_end_file_degrades_loudly(
    mosquitto_broker: Broker, recorder: Recorder, tmp_path: Path
) -> None:
    """The daemon's packages copied without ``symbols_v2.txt``, as a wheel without its package data was."""
    site = tmp_path / "site"
    for package in ("daemon", "hardware"):
        shutil.copytree(REPO / package, site / package, ignore=shutil.ignore_patterns("__pycache__"))
    (site / "daemon" / "frontend" / "data" / "symbols_v2.txt").unlink()
    node = f"d{uuid.uuid4().hex[:8]}"
    config = tmp_path / "gsv-edge.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n' + to_toml({
        "mqtt": {"host": mosquitto_broker.host, "port": mosquitto_broker.port, "node_id": node},
        "engine": {"bundle": str(tmp_path / "any-bundle")},
    }))
    base = f"gsv-edge/{node}"
    recorder.subscribe(f"{base}/#")
    log = tmp_path / "daemon.log"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site)}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "daemon", "serve", "--config", str(config)],
                                cwd=tmp_path, env=env, stdout=out, stderr=out)
    try:
        down = recorder.wait_for(f"{base}/events", lambda m: m.json()["event"] == "engine_down", 60).json()
        status = recorder.wait_for(f"{base}/status").json()
        assert status["engine_state"] == "degraded" and "symbols_v2.txt" in status["engine_error"]
        assert down["reason"] == status["engine_error"]
        recorder.publish(f"{base}/say", '{"id": "anyway", "text": "Still speaking.", "lang": "en"}')
        done = recorder.wait_for(f"{base}/events", lambda m: m.json()["id"] == "anyway" and m.json()["event"] == "done")
        assert done.json()["engine"] == "espeak-ng fallback"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = log.read_text()
    assert "ERROR" in text and "symbols_v2.txt" in text and "Traceback" not in text, text
