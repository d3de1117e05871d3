"""Paging through the audit trail: filters, newest first, a total, and batches that new rows do not shift."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.config import AuditSettings
from daemon.core.audit import AuditLog, AuditQuery, read_page
from daemon.core.state_db import StateDb, StateDbError


def trail(tmp_path: Path, rows: list[dict]) -> StateDb:
    """A trail holding ``rows`` (each with its ``ts``), written in order."""
    db = StateDb.in_dir(tmp_path)
    AuditLog(db, AuditSettings())
    with db.transaction() as conn:
        for row in rows:
            conn.execute(f"INSERT INTO audit ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                         list(row.values()))
    return db


ROWS = [
    {"ts": 100.0, "outcome": "done", "protocol": "http", "voice": "alice", "token_name": "kiosk", "request_id": "a"},
    {"ts": 200.0, "outcome": "rejected", "protocol": "http", "token_name": None, "request_id": None},
    {"ts": 300.0, "outcome": "done", "protocol": "native", "voice": "bob", "request_id": "b"},
    {"ts": 400.0, "outcome": "failed", "protocol": "wyoming", "voice": "alice", "request_id": "c"},
    {"ts": 500.0, "outcome": "done", "protocol": "http", "voice": "alice", "token_name": "kiosk", "request_id": "d"},
]


def ids(rows: list[dict]) -> list[str | None]:
    return [row["request_id"] for row in rows]


@pytest.mark.parametrize(("query", "expected"), [
    (AuditQuery(), ["d", "c", "b", None, "a"]),
    (AuditQuery(outcome="done"), ["d", "b", "a"]),
    (AuditQuery(protocol="http"), ["d", None, "a"]),
    (AuditQuery(voice="alice"), ["d", "c", "a"]),
    (AuditQuery(token_name="kiosk"), ["d", "a"]),
    (AuditQuery(since=200, until=400), ["b", None]),  # since included, until not
    (AuditQuery(outcome="done", voice="alice", since=150), ["d"]),
    (AuditQuery(outcome="expired"), []),
])
def test_filters_are_exact_and_rows_come_newest_first(tmp_path: Path, query: AuditQuery,
                                                       expected: list[str | None]) -> None:
    trail(tmp_path, ROWS).close()
    rows, total = read_page(tmp_path, query, limit=10)
    assert ids(rows) == expected and total == len(expected)


def test_pages_and_batches(tmp_path: Path) -> None:
    db = trail(tmp_path, ROWS)
    first, total = read_page(tmp_path, AuditQuery(), limit=2)
    second, _ = read_page(tmp_path, AuditQuery(), limit=2, offset=2)
    assert (ids(first), ids(second), total) == (["d", "c"], ["b", None], 5)
    assert [row["seq"] for row in first] == [5, 4] and first[0]["ts"] == 500.0
    with db.transaction() as conn:  # a row written between two batches
        conn.execute("INSERT INTO audit (ts, outcome, request_id) VALUES (600, 'done', 'e')")
    after, total = read_page(tmp_path, AuditQuery(), limit=2, before_seq=first[-1]["seq"])
    assert ids(after) == ["b", None] and total == 6
    db.close()


def test_no_trail_is_an_error_that_says_where(tmp_path: Path) -> None:
    with pytest.raises(StateDbError, match="no state database"):
        read_page(tmp_path, AuditQuery(), limit=10)
