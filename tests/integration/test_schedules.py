"""A schedule added from the command line beside a running daemon (real mosquitto) is noticed without a reload,
runs once as an ordinary request with the stable id, and leaves one audit row for its run, even when the daemon
is killed (SIGKILL) the moment its run is queued."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from daemon.commands import exit_codes
from daemon.core.audit import read_records
from tests.doubles import ToneEngine
from tests.integration.test_durability import (  # noqa: F401 - fixture
    DaemonProcess,
    daemon_process,
    without_redeliveries,
)
from tests.paths import REPO

AHEAD_S = 6  # far enough ahead that the command has stored it before it is due (a slow machine still runs it late)


def add_one_shot(state_dir: Path, tmp_path: Path, name: str) -> str:
    """``gsv-edge schedule add`` a one-shot due AHEAD_S from now, in UTC; returns its run's id."""
    config = tmp_path / "cli.toml"
    config.write_text(f"state_dir = {json.dumps(str(state_dir))}\n")
    due = (datetime.now(timezone.utc) + timedelta(seconds=AHEAD_S)).replace(microsecond=0)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GSV_EDGE_")}
    env.update(PYTHONPATH=str(REPO), HOME=str(tmp_path))
    added = subprocess.run(
        [sys.executable, "-m", "daemon", "schedule", "add", name, "--at", due.replace(tzinfo=None).isoformat(),
         "--tz", "UTC", "--text", "The shop closes now.", "--priority", "high", "--run-if-late", "300",
         "--config", str(config)], env=env, capture_output=True, text=True, timeout=120)
    assert added.returncode == exit_codes.OK, added.stderr
    return f"{name}@{due.strftime('%Y-%m-%dT%H:%M:%SZ')}"


def test_a_one_shot_added_beside_the_daemon_runs_once(start_daemon: Any, tmp_path: Path) -> None:
    daemon = start_daemon(synth=ToneEngine(seconds=0.05))
    state_dir = daemon.service.settings.state_dir
    run_id = add_one_shot(state_dir, tmp_path, "bell")
    done = daemon.wait_event(run_id, "done", timeout=60)
    assert done["id"] == run_id
    queued = [e for e in daemon.events(run_id) if e["event"] == "queued"]
    assert len(queued) == 1 and queued[0]["priority"] == "high"
    rows = [r for r in read_records(state_dir) if r["request_id"] == run_id]
    assert [(r["outcome"], r["topic"]) for r in rows] == [("done", "schedule/bell")]


def test_a_kill_at_the_due_second_does_not_run_it_twice(daemon_process: Any, tmp_path: Path) -> None:  # noqa: F811
    daemon: DaemonProcess = daemon_process()
    daemon.start()
    run_id = add_one_shot(daemon.state_dir, tmp_path, "close")
    daemon.wait_event(run_id, "queued", timeout=60)
    daemon.kill()
    daemon.start()  # the runner looks again at a due time already handled; the queue resumes the run it holds
    daemon.wait_event(run_id, "done", timeout=60)

    db = sqlite3.connect(daemon.state_dir / "state.db")
    assert db.execute("SELECT COUNT(*) FROM requests WHERE id = ?", (run_id,)).fetchone() == (1,)
    db.close()
    events = without_redeliveries([e for e in daemon.events() if e["id"] == run_id])
    assert len([e for e in events if e["event"] == "queued" and not e.get("resumed")]) == 1
    assert not [e for e in events if e["event"] in ("duplicate", "rejected")]  # not even submitted a second time
    rows = [r for r in read_records(daemon.state_dir) if r["request_id"] == run_id]
    assert [r["outcome"] for r in rows] == ["done"]
