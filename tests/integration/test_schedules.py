"""A schedule added from the command line beside a running daemon (real mosquitto) is noticed without a reload,
runs once as an ordinary request with the stable id, and leaves one audit row for its run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from daemon.commands import exit_codes
from daemon.core.audit import read_records
from tests.doubles import ToneEngine
from tests.paths import REPO

AHEAD_S = 6  # far enough ahead that the command has stored it before it is due (a slow machine still runs it late)


def test_a_one_shot_added_beside_the_daemon_runs_once(start_daemon: Any, tmp_path: Path) -> None:
    daemon = start_daemon(synth=ToneEngine(seconds=0.05))
    state_dir = daemon.service.settings.state_dir
    config = tmp_path / "cli.toml"
    config.write_text(f"state_dir = {json.dumps(str(state_dir))}\n")
    due = (datetime.now(timezone.utc) + timedelta(seconds=AHEAD_S)).replace(microsecond=0)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GSV_EDGE_")}
    env.update(PYTHONPATH=str(REPO), HOME=str(tmp_path))
    added = subprocess.run(
        [sys.executable, "-m", "daemon", "schedule", "add", "bell", "--at", due.replace(tzinfo=None).isoformat(),
         "--tz", "UTC", "--text", "The shop closes now.", "--priority", "high", "--run-if-late", "300",
         "--config", str(config)], env=env, capture_output=True, text=True, timeout=120)
    assert added.returncode == exit_codes.OK, added.stderr

    run_id = f"bell@{due.strftime('%Y-%m-%dT%H:%M:%SZ')}"
    done = daemon.wait_event(run_id, "done", timeout=60)
    assert done["id"] == run_id
    queued = [e for e in daemon.events(run_id) if e["event"] == "queued"]
    assert len(queued) == 1 and queued[0]["priority"] == "high"
    rows = [r for r in read_records(state_dir) if r["request_id"] == run_id]
    assert [(r["outcome"], r["topic"]) for r in rows] == [("done", "schedule/bell")]
