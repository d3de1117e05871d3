"""The audit trail: one row per request in the state database, written when the request ends.

Rows are only ever inserted (a trigger refuses updates); the oldest are deleted to keep the table
within ``audit.max_rows`` and ``audit.max_age_days``. A row records where the request came from
(protocol, topic, Wyoming or HTTP peer and the HTTP token's name; MQTT 3.1.1 does not tell a subscriber
who published, so ``client`` is empty for MQTT), what was asked (site, id, voice, SHA-256 of the text; the
text itself only with ``audit.store_text``) and what happened (outcome, reason, engine, SHA-256 of the audio
produced, and the rendered-audio cache entry that holds that audio while the cache keeps it). The ``done`` row is
committed before the ``done`` event is published, so it survives a crash.

Changes to the box are rows too (:data:`CHANGE_OUTCOMES`): a voice registered or removed, a reload's outcome, a
token added or revoked, a schedule added or removed, each with who did it (:class:`Actor`): the HTTP token's name,
the OS user who ran the command line (``protocol`` ``cli``), or for MQTT only the topic. ``subject`` names what
changed (the voice, the token, the schedule) and ``reason`` says it in words (a reload's message, a token's
scopes, a schedule's timing). A reload sent as a bare SIGHUP has no sender to name: its row says ``signal`` and
nothing more (``gsv-edge reload`` leaves its user for the daemon to find, :mod:`daemon.app.reload`).

``gsv-edge audit [--since WHEN] [--json]`` prints it; ``GET /v1/audit`` pages through it (:func:`read_page`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import pwd
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from daemon.config import AuditSettings
from daemon.core.events import Event, EventKind, is_terminal
from daemon.core.state_db import StateDb, StateDbError, open_read_only
from daemon.vocabulary import Source

log = logging.getLogger(__name__)

PRUNE_EVERY = 1000  # rows written between enforcements of the caps
COLUMNS = (
    "ts",
    "outcome",
    "protocol",
    "topic",
    "client",
    "token_name",
    "site_id",
    "request_id",
    "voice",
    "text_sha256",
    "text",
    "reason",
    "engine",
    "audio_sha256",
    "audio_ms",
    "cache_entry",
    "os_user",
    "subject",
)

ADDED_COLUMNS = ("token_name", "cache_entry", "os_user", "subject")  # newer than the first schema, added if missing

RequestOutcome = Literal["done", "failed", "expired", "rejected"]
ChangeOutcome = Literal["voice_added", "voice_removed", "reloaded", "reload_refused", "token_added", "token_revoked",
                        "schedule_added", "schedule_removed"]
CHANGE_OUTCOMES: tuple[str, ...] = get_args(ChangeOutcome)
Outcome = Literal[RequestOutcome, ChangeOutcome]
AuditProtocol = Literal[Source, "cli", "signal"]  # the request protocols and a change's others
Kind = Literal["request", "change"]  # what ``AuditQuery.kind`` selects: requests' rows, or changes'

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        outcome TEXT NOT NULL,
        protocol TEXT,
        topic TEXT,
        client TEXT,
        token_name TEXT,
        site_id TEXT,
        request_id TEXT,
        voice TEXT,
        text_sha256 TEXT,
        text TEXT,
        reason TEXT,
        engine TEXT,
        audio_sha256 TEXT,
        audio_ms INTEGER,
        cache_entry TEXT,
        os_user TEXT,
        subject TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS audit_ts ON audit(ts)",
    """CREATE TRIGGER IF NOT EXISTS audit_append_only BEFORE UPDATE ON audit
       BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END""",
)


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def local_user() -> str:
    """Who runs this process, from its effective uid (not ``$USER``, which the caller sets as they like)."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # a uid with no passwd entry (a container)
        return f"uid {os.geteuid()}"


@dataclass(frozen=True)
class Actor:
    """Who made a change: a protocol, and the token's name (HTTP), the OS user (command line) or the topic and
    client (MQTT, which names no publisher); all None but the protocol where unknown."""

    protocol: str
    token_name: str | None = None
    os_user: str | None = None
    topic: str | None = None
    client: str | None = None

    @classmethod
    def http(cls, token_name: str | None, client: str | None = None) -> Actor:
        return cls("http", token_name=token_name, client=client)

    @classmethod
    def cli(cls) -> Actor:
        return cls("cli", os_user=local_user())

    def name(self) -> str:
        """The who in one word, for a voice's record: the token or the OS user; empty when not known (MQTT)."""
        return self.token_name or self.os_user or ""


class AuditLog:
    """Writes the trail; a write failure (disk full) is logged and counted, never raised."""

    def __init__(self, db: StateDb, settings: AuditSettings) -> None:
        self._db = db
        self.settings = settings
        self._written = 0
        self.write_errors = 0
        with db.transaction() as conn:
            for statement in SCHEMA:
                conn.execute(statement)
            present = {row[1] for row in conn.execute("PRAGMA table_info(audit)")}
            for column in ADDED_COLUMNS:
                if column not in present:  # a trail written by an older version keeps its rows
                    conn.execute(f"ALTER TABLE audit ADD COLUMN {column} TEXT")
        self.prune()

    def on_event(self, event: Event) -> None:
        """Record a request's terminal event (heard before it is published)."""
        request, kind, fields = event.request, event.kind, event.fields
        if event.refused is not None:
            origin = event.refused
            self.write(outcome="rejected", protocol=origin.protocol, topic=origin.topic, client=origin.client,
                       token_name=origin.token_name, request_id=event.id, site_id=origin.site_id,
                       reason=str(fields.get("reason", "")))
            return
        if request is None or kind is EventKind.QUEUED or not is_terminal(kind, fields):
            return
        self.write(
            outcome=kind.value,
            protocol=request.source,
            topic=request.topic,
            client=request.client,
            token_name=request.token_name,
            site_id=request.site_id,
            request_id=request.id,
            voice=request.voice,
            text_sha256=text_sha256(request.text),
            text=request.text if self.settings.store_text else None,
            reason=fields.get("reason"),
            engine=fields.get("engine"),
            audio_sha256=fields.get("audio_sha256"),
            audio_ms=fields.get("audio_ms"),
            cache_entry=fields.get("cache_entry"),
        )

    def changed(self, outcome: ChangeOutcome, by: Actor | None, subject: str | None = None,
                reason: str | None = None, voice: str | None = None) -> None:
        """Record a change to the box and who made it (None: not known)."""
        by = by or Actor("")
        self.write(outcome=outcome, protocol=by.protocol or None, topic=by.topic, client=by.client,
                   token_name=by.token_name, os_user=by.os_user, subject=subject, reason=reason, voice=voice)

    def write(self, **row: Any) -> None:
        values = [row.get(column) for column in COLUMNS]
        values[0] = time.time()
        try:
            with self._db.transaction() as conn:
                conn.execute(
                    f"INSERT INTO audit ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})", values
                )
        except StateDbError as exc:
            self.write_errors += 1
            log.error("cannot write the audit record of %s: %s", row.get("request_id"), exc)
            return
        self._written += 1
        if self._written % PRUNE_EVERY == 0:
            self.prune()

    def prune(self) -> None:
        """Enforce the age and size caps, oldest rows first."""
        horizon = time.time() - self.settings.max_age_days * 86400
        try:
            with self._db.transaction() as conn:
                conn.execute("DELETE FROM audit WHERE ts < ?", (horizon,))
                conn.execute(
                    "DELETE FROM audit WHERE seq <= (SELECT MAX(seq) FROM audit) - ?", (self.settings.max_rows,)
                )
        except StateDbError as exc:
            log.warning("cannot prune the audit trail: %s", exc)


def _selected(conn: sqlite3.Connection) -> str:
    """COLUMNS as a select list, NULL for a column a trail written by an older daemon lacks (read-only readers
    cannot add it; the daemon does at its next start)."""
    present = {row[1] for row in conn.execute("PRAGMA table_info(audit)")}
    return ", ".join(column if column in present else f"NULL AS {column}" for column in COLUMNS)


def read_records(state_dir: Path, since: float | None = None) -> list[dict[str, Any]]:
    """Audit rows, oldest first, from ``since`` (Unix seconds) on."""
    conn = open_read_only(state_dir)
    try:
        rows = conn.execute(
            f"SELECT {_selected(conn)} FROM audit WHERE ts >= ? ORDER BY seq", (since or 0.0,)
        ).fetchall()
    except Exception as exc:  # sqlite3.Error: no audit table yet, a locked or damaged file
        raise StateDbError(f"cannot read the audit trail in {state_dir}: {exc}") from exc
    finally:
        conn.close()
    return [dict(zip(COLUMNS, row, strict=True)) for row in rows]



def read_row(state_dir: Path, seq: int) -> dict[str, Any] | None:
    """The row numbered ``seq``; None when there is none (never written, or pruned)."""
    conn = open_read_only(state_dir)
    try:
        row = conn.execute(f"SELECT seq, {_selected(conn)} FROM audit WHERE seq = ?", (seq,)).fetchone()
    except Exception as exc:  # sqlite3.Error: no audit table yet, a locked or damaged file
        raise StateDbError(f"cannot read the audit trail in {state_dir}: {exc}") from exc
    finally:
        conn.close()
    return None if row is None else dict(zip(("seq", *COLUMNS), row, strict=True))


@dataclass(frozen=True)
class AuditQuery:
    """Which rows: a time range (Unix seconds, ``until`` excluded) and exact values of columns; None: any."""

    since: float | None = None
    until: float | None = None
    outcome: str | None = None
    protocol: str | None = None
    voice: str | None = None
    token_name: str | None = None
    os_user: str | None = None
    kind: Kind | None = None

    def where(self) -> tuple[str, list[Any]]:
        clauses, params = ["1"], []
        if self.since is not None:
            clauses.append("ts >= ?")
            params.append(self.since)
        if self.until is not None:
            clauses.append("ts < ?")
            params.append(self.until)
        for column in ("outcome", "protocol", "voice", "token_name", "os_user"):
            if (value := getattr(self, column)) is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if self.kind is not None:
            clauses.append(f"outcome {'IN' if self.kind == 'change' else 'NOT IN'} "
                           f"({', '.join('?' * len(CHANGE_OUTCOMES))})")
            params.extend(CHANGE_OUTCOMES)
        return " AND ".join(clauses), params


def read_page(state_dir: Path, query: AuditQuery, limit: int, offset: int = 0,
              before_seq: int | None = None) -> tuple[list[dict[str, Any]], int]:
    """Matching rows newest first, each with its ``seq``: ``limit`` of them from ``offset`` on (or from the row
    before ``before_seq``, which new rows do not shift), and how many match in all."""
    where, params = query.where()
    conn = open_read_only(state_dir)
    try:
        total = conn.execute(f"SELECT COUNT(*) FROM audit WHERE {where}", params).fetchone()[0]
        if before_seq is not None:
            where, params = f"{where} AND seq < ?", [*params, before_seq]
        rows = conn.execute(f"SELECT seq, {_selected(conn)} FROM audit WHERE {where} ORDER BY seq DESC "
                            "LIMIT ? OFFSET ?", [*params, limit, offset]).fetchall()
    except Exception as exc:  # sqlite3.Error: no audit table yet, a locked or damaged file
        raise StateDbError(f"cannot read the audit trail in {state_dir}: {exc}") from exc
    finally:
        conn.close()
    return [dict(zip(("seq", *COLUMNS), row, strict=True)) for row in rows], total
