"""The audit trail: what it records matches what was spoken, it survives kill -9, it is append-only and
capped, and ``gsv-edge audit`` reads it."""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import subprocess
import sys
import time
import wave
from pathlib import Path
from typing import Any

import pytest

from daemon.commands.audit import parse_since
from daemon.config import AuditSettings
from daemon.core.audit import AuditLog, read_records, text_sha256
from daemon.core.state_db import StateDb
from tests.conftest import Recorder
from tests.doubles import ToneEngine
from tests.integration.test_durability import REPO, DaemonProcess, daemon_process  # noqa: F401 - fixture


def wav_data_sha256(payload: bytes) -> str:
    with wave.open(io.BytesIO(payload)) as wav:
        return hashlib.sha256(wav.readframes(wav.getnframes())).hexdigest()


def test_audit_record_matches_what_was_spoken(start_daemon: Any, recorder: Recorder) -> None:
    daemon = start_daemon(synth=ToneEngine(seconds=0.2), audit={"store_text": True})
    daemon.say({"id": "a-1", "text": "Platform change. Please listen.", "volume": 0.7, "chime": True})
    done = daemon.wait_event("a-1", "done")
    published = recorder.wait_for(daemon.topics.audio("a-1")).payload
    assert done["audio_sha256"] == wav_data_sha256(published)
    daemon.say(b'{"id": "bad/id", "text": "x"}')
    daemon.wait_event("bad/id", "rejected")

    records = read_records(daemon.service.settings.state_dir)
    spoken = next(r for r in records if r["request_id"] == "a-1")
    assert spoken["outcome"] == "done" and spoken["audio_sha256"] == done["audio_sha256"]
    assert spoken["text_sha256"] == text_sha256("Platform change. Please listen.")
    assert spoken["text"] == "Platform change. Please listen."
    assert (spoken["protocol"], spoken["topic"], spoken["engine"]) == ("native", daemon.topics.say, "tone")
    refused = next(r for r in records if r["outcome"] == "rejected")
    assert refused["request_id"] == "bad/id" and "forbidden character" in refused["reason"]
    assert refused["text"] is None and refused["audio_sha256"] is None


def test_text_is_not_kept_unless_configured(start_daemon: Any) -> None:
    daemon = start_daemon(synth=ToneEngine(seconds=0.05))
    daemon.say({"id": "private", "text": "Patient Smith to room four."})
    daemon.wait_event("private", "done")
    (record,) = [r for r in read_records(daemon.service.settings.state_dir) if r["request_id"] == "private"]
    assert record["text"] is None and record["text_sha256"] == text_sha256("Patient Smith to room four.")
    db = sqlite3.connect(daemon.service.settings.state_dir / "state.db")
    assert not db.execute("SELECT 1 FROM requests WHERE body LIKE '%Smith%'").fetchall()


def test_audit_survives_kill_9_and_the_cli_reads_it(daemon_process: Any, recorder: Recorder) -> None:  # noqa: F811
    daemon: DaemonProcess = daemon_process()
    daemon.start()
    daemon.say({"id": "kept", "text": "Written before it was announced.", "lang": "en"})
    done = daemon.wait_event("kept", "done")
    published = recorder.wait_for(f"{daemon.base}/audio/kept").payload
    daemon.kill()

    command = [sys.executable, "-m", "daemon", "audit", "--config", str(daemon.config), "--json", "--since", "1h"]
    out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True).stdout
    (record,) = [json.loads(line) for line in out.splitlines() if json.loads(line)["request_id"] == "kept"]
    assert record["outcome"] == "done" and record["audio_sha256"] == done["audio_sha256"] == wav_data_sha256(published)
    table = subprocess.run(command[:-3], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "\tdone\tnative\t" in table and done["audio_sha256"][:16] in table


def test_append_only_and_capped(tmp_path: Path) -> None:
    db = StateDb.in_dir(tmp_path)
    audit = AuditLog(db, AuditSettings(max_rows=100, max_age_days=1))
    for n in range(150):
        audit.write(outcome="done", request_id=f"r{n}")
    with db.transaction() as conn:  # an old row, as if written two days ago
        conn.execute("INSERT INTO audit (ts, outcome, request_id) VALUES (?, 'done', 'ancient')",
                     (time.time() - 2 * 86400,))
    with pytest.raises(Exception, match="append-only"), db.transaction() as conn:
        conn.execute("UPDATE audit SET outcome = 'done' WHERE request_id = 'r1'")
    audit.prune()
    ids = [r["request_id"] for r in read_records(tmp_path)]
    assert len(ids) == 100 and ids[-1] == "r149" and "ancient" not in ids


def test_since_accepts_durations_and_times() -> None:
    now = 1_700_000_000.0
    assert parse_since("30m", now) == now - 1800 and parse_since("2d", now) == now - 2 * 86400
    assert parse_since("2023-11-14T22:13:20Z", now) == 1_700_000_000.0
    with pytest.raises(Exception, match="neither a duration"):
        parse_since("yesterday", now)
