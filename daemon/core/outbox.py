"""Messages on their way to the broker, kept in the state database until the broker has them.

The event that admits, starts, ends or repeats a request, and the Hermes ``error/tts`` and
``sayFinished`` that end a say, are inserted in the same transaction as the state change they report.
They are published (QoS 1) after the commit, and a row is deleted when the broker acknowledges it
(PUBACK). Whatever is left when the daemon starts (it died between a commit and an acknowledgement) is
published again first, byte for byte. Each such message carries ``seq``, its row's number: it only grows
over the life of the state database, so a client can tell a message told twice (same ``seq``) from a
request spoken twice.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass
from typing import Any

from daemon.core.state_db import StateDb, StateDbError

log = logging.getLogger(__name__)

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, also after deletions
        topic TEXT NOT NULL,
        payload TEXT NOT NULL  -- JSON, with "seq" in it
    )""",
)


def json_bytes(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True)
class Message:
    """An MQTT message to publish; ``seq`` is its outbox row, None when it is published without one."""

    topic: str
    payload: bytes
    seq: int | None = None


class Outbox:
    def __init__(self, db: StateDb) -> None:
        self._db = db
        with db.transaction() as conn:
            for statement in SCHEMA:
                conn.execute(statement)

    @staticmethod
    def add(conn: sqlite3.Connection, topic: str, body: dict[str, Any]) -> Message:
        """Insert a message as part of the caller's transaction; ``body`` gets its ``seq``."""
        seq = conn.execute("INSERT INTO outbox (topic, payload) VALUES (?, '')", (topic,)).lastrowid
        assert seq is not None
        payload = json.dumps({**body, "seq": seq}, ensure_ascii=False)
        conn.execute("UPDATE outbox SET payload = ? WHERE seq = ?", (payload, seq))
        return Message(topic, payload.encode("utf-8"), seq)

    def left(self) -> list[Message]:
        """What the broker never acknowledged, oldest first."""
        rows = self._db.query("SELECT seq, topic, payload FROM outbox ORDER BY seq")
        return [Message(topic, payload.encode("utf-8"), seq) for seq, topic, payload in rows]

    def delivered(self, seq: int) -> None:
        """The broker has message ``seq``. Losing this deletion (power cut) only sends the message again, so
        it does not wait for the disk; a failure is logged, never raised (it runs in paho's thread)."""
        try:
            with self._db.unsynced_transaction() as conn:
                conn.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
        except StateDbError as exc:
            log.warning("cannot delete delivered message %d from the outbox: %s", seq, exc)
