"""An audit trail written before a column existed gains it and keeps its rows."""

from __future__ import annotations

import time
from pathlib import Path

from daemon.config import AuditSettings
from daemon.core.audit import AuditLog, read_records
from daemon.core.events import Event, EventKind, PayloadOrigin
from daemon.core.state_db import StateDb

OLD_SCHEMA = """CREATE TABLE audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, outcome TEXT NOT NULL,
    protocol TEXT, topic TEXT, client TEXT, site_id TEXT, request_id TEXT, voice TEXT, text_sha256 TEXT, text TEXT,
    reason TEXT, engine TEXT, audio_sha256 TEXT, audio_ms INTEGER)"""


def test_an_older_trail_gains_the_newer_columns_and_keeps_its_rows(tmp_path: Path) -> None:
    db = StateDb.in_dir(tmp_path)
    with db.transaction() as conn:
        conn.execute(OLD_SCHEMA)
        conn.execute("INSERT INTO audit (ts, outcome, protocol, request_id) VALUES (?, 'done', 'native', 'old')",
                     (time.time(),))
    audit = AuditLog(db, AuditSettings())
    origin = PayloadOrigin("http", "POST /v1/audio/speech", client="10.0.0.5:4242", token_name="kiosk")
    audit.on_event(Event(EventKind.REJECTED, {"reason": "403: token 'kiosk' lacks the 'voices' scope"},
                         refused=origin))
    db.close()
    old, new = read_records(tmp_path)
    assert (old["request_id"], old["token_name"], old["cache_entry"]) == ("old", None, None)
    assert (new["protocol"], new["client"], new["token_name"]) == ("http", "10.0.0.5:4242", "kiosk")
    assert new["reason"].startswith("403")
