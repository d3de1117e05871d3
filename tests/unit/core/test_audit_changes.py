"""Changes in the audit trail: a trail from before they were kept gains their columns and keeps its rows, a
reader beside an older daemon still reads it, and ``kind`` tells changes from requests."""

from __future__ import annotations

import os
import pwd
import time
from pathlib import Path

from daemon.config import AuditSettings
from daemon.core.audit import CHANGE_OUTCOMES, Actor, AuditLog, AuditQuery, local_user, read_page, read_records
from daemon.core.state_db import StateDb

# The trail as the version before changes were recorded wrote it: token_name, but neither os_user nor subject.
TOKEN_NAME_SCHEMA = """CREATE TABLE audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL,
    outcome TEXT NOT NULL, protocol TEXT, topic TEXT, client TEXT, token_name TEXT, site_id TEXT, request_id TEXT,
    voice TEXT, text_sha256 TEXT, text TEXT, reason TEXT, engine TEXT, audio_sha256 TEXT, audio_ms INTEGER)"""


def _old_trail(state_dir: Path) -> StateDb:
    db = StateDb.in_dir(state_dir)
    with db.transaction() as conn:
        conn.execute(TOKEN_NAME_SCHEMA)
        conn.execute("INSERT INTO audit (ts, outcome, protocol, token_name, request_id) "
                     "VALUES (?, 'done', 'http', 'kiosk', 'old')", (time.time(),))
    return db


def test_an_older_trail_is_read_before_and_written_after_it_gains_the_change_columns(tmp_path: Path) -> None:
    db = _old_trail(tmp_path)
    [before] = read_records(tmp_path)  # gsv-edge audit beside a daemon of the older version
    assert (before["request_id"], before["os_user"], before["subject"]) == ("old", None, None)
    audit = AuditLog(db, AuditSettings())
    audit.changed("token_added", Actor.cli(), subject="door", reason="scopes speak")
    audit.changed("voice_removed", Actor.http("boss", "10.0.0.5:4242"), subject="carol", voice="carol")
    db.close()
    old, token, voice = read_records(tmp_path)
    assert (old["outcome"], old["token_name"], old["os_user"]) == ("done", "kiosk", None)
    assert (token["outcome"], token["protocol"], token["os_user"], token["subject"], token["token_name"]) == (
        "token_added", "cli", local_user(), "door", None)
    assert (voice["protocol"], voice["token_name"], voice["client"], voice["voice"]) == (
        "http", "boss", "10.0.0.5:4242", "carol")


def test_kind_parts_changes_from_requests_and_the_os_user_filters(tmp_path: Path) -> None:
    db = _old_trail(tmp_path)
    audit = AuditLog(db, AuditSettings())
    for outcome in CHANGE_OUTCOMES:
        audit.changed(outcome, Actor("cli", os_user="alice"), subject="x")
    audit.changed("reloaded", Actor("signal"))
    db.close()
    changes, total = read_page(tmp_path, AuditQuery(kind="change"), limit=100)
    assert total == len(CHANGE_OUTCOMES) + 1 and {row["outcome"] for row in changes} == set(CHANGE_OUTCOMES)
    requests, total = read_page(tmp_path, AuditQuery(kind="request"), limit=100)
    assert total == 1 and requests[0]["request_id"] == "old"
    assert read_page(tmp_path, AuditQuery(os_user="alice"), limit=100)[1] == len(CHANGE_OUTCOMES)
    [signal] = read_page(tmp_path, AuditQuery(protocol="signal"), limit=100)[0]
    assert (signal["outcome"], signal["os_user"], signal["token_name"]) == ("reloaded", None, None)


def test_the_local_user_is_the_effective_uid_not_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("USER", "someone-else")
    monkeypatch.setenv("LOGNAME", "someone-else")
    assert local_user() == pwd.getpwuid(os.geteuid()).pw_name != "someone-else"
