"""The request queue, kept in the state database so an acknowledged request survives a crash.

Order and bounds are :class:`~daemon.request_queue.MemoryQueue`'s; every admission is also a row in
``requests`` committed before ``put`` returns, so the ``queued`` event is only ever sent for a request
that is on disk. Each row moves ``queued -> started -> done | failed | expired | rejected`` as the
daemon reports the request's events (:meth:`DurableQueue.observe` runs before the event is published).

On start, rows still ``queued`` or ``started`` are resumed (or marked ``expired`` if their time ran
out while the daemon was down). A request cut by a crash mid-playback is therefore spoken again from
the start: at least once before ``done``, never after ``done``. A finished row keeps only its id (for
duplicate suppression across restarts, e.g. a QoS 1 redelivery); its text is cleared.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any

from daemon.events import EventKind, is_terminal
from daemon.request_queue import Admission, MemoryQueue, Request
from daemon.state_db import StateDb, StateDbError

log = logging.getLogger(__name__)

ACTIVE = ("queued", "started")
PRUNE_EVERY = 500  # admissions between deletions of finished rows older than the dedup window
_FIELDS = {f.name for f in dataclasses.fields(Request)} - {"received_at"}

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS requests (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL,
        received REAL NOT NULL,  -- wall clock, for the dedup window
        state TEXT NOT NULL,  -- queued, started, done, failed, expired, rejected
        updated REAL NOT NULL,
        body TEXT NOT NULL  -- the request as JSON while active, '' once finished
    )""",
    "CREATE INDEX IF NOT EXISTS requests_id ON requests(id)",
    "CREATE INDEX IF NOT EXISTS requests_state ON requests(state)",
)


def _to_json(request: Request) -> str:
    return json.dumps({k: v for k, v in dataclasses.asdict(request).items() if k in _FIELDS}, ensure_ascii=False)


def _from_json(body: str) -> Request:
    data = json.loads(body)
    return Request(**{k: v for k, v in data.items() if k in _FIELDS})


class DurableQueue:
    """A :class:`~daemon.request_queue.RequestQueue` whose admissions and outcomes are in SQLite.

    ``resumed`` and ``expired_while_down`` hold what the last run left unfinished; the service reports
    them once it starts.
    """

    def __init__(self, db: StateDb, max_depth: int, dedup_window_s: float) -> None:
        self._db = db
        self._dedup_window_s = dedup_window_s
        self._memory = MemoryQueue(max_depth, dedup_window_s=0)  # dedup is done here, across restarts
        self._void: list[Request] = []  # admitted in memory, but the commit failed: never to be popped
        self._admissions = 0
        self.write_errors = 0
        with db.transaction() as conn:
            for statement in SCHEMA:
                conn.execute(statement)
        self.resumed: list[Request] = []
        self.expired_while_down: list[Request] = []
        self._recover()
        self._prune()

    # -- RequestQueue ---------------------------------------------------------------------------

    def put(self, request: Request) -> Admission:
        """Admit and commit; raises :class:`StateDbError` (nothing admitted) when the disk refuses."""
        with self._db.lock:
            if self._seen(request.id):
                return Admission("duplicate")
            admission = self._memory.put(request)
            if admission.status != "queued":
                return admission
            now = time.time()
            try:
                with self._db.transaction() as conn:
                    conn.execute(
                        "INSERT INTO requests (id, received, state, updated, body) VALUES (?, ?, 'queued', ?, ?)",
                        (request.id, now, now, _to_json(request)),
                    )
                    if admission.displaced is not None:
                        self._finish(conn, admission.displaced.id, "rejected", now)
            except StateDbError:
                self._void.append(request)
                if admission.displaced is not None:
                    self._memory.requeue(admission.displaced)
                self.write_errors += 1
                raise
            self._admissions += 1
            if self._admissions % PRUNE_EVERY == 0:
                self._prune()
            return admission

    def requeue(self, request: Request) -> None:
        self._memory.requeue(request)

    def pop(self) -> Request | None:
        with self._db.lock:
            while (request := self._memory.pop()) is not None:
                if not self._is_void(request):
                    return request
            return None

    def remove_expired(self, now: float | None = None) -> list[Request]:
        with self._db.lock:
            expired = [r for r in self._memory.remove_expired(now) if not self._is_void(r)]
            for request in expired:
                self.mark(request.id, "expired")
            return expired

    def __len__(self) -> int:
        with self._db.lock:
            return len(self._memory) - len(self._void)

    # -- states ---------------------------------------------------------------------------------

    def observe(self, request: Request, kind: EventKind, fields: dict[str, Any]) -> None:
        """Record the state an event reports; called before the event is published."""
        if kind is EventKind.STARTED:
            self.mark(request.id, "started")
        elif kind is not EventKind.QUEUED and is_terminal(kind, fields):
            self.mark(request.id, kind.value)

    def mark(self, request_id: str, state: str) -> None:
        """Move an active request to ``state``; a failure is logged, never raised (the event must go out)."""
        try:
            with self._db.transaction() as conn:
                if state == "started":
                    conn.execute(
                        "UPDATE requests SET state = 'started', updated = ? WHERE id = ? AND state = 'queued'",
                        (time.time(), request_id),
                    )
                else:
                    self._finish(conn, request_id, state, time.time())
        except StateDbError as exc:
            self.write_errors += 1
            log.error("cannot record request %s as %s: %s", request_id, state, exc)

    @staticmethod
    def _finish(conn: Any, request_id: str, state: str, now: float) -> None:
        conn.execute(
            "UPDATE requests SET state = ?, updated = ?, body = '' WHERE id = ? AND state IN ('queued', 'started')",
            (state, now, request_id),
        )

    def states(self, request_id: str) -> list[str]:
        """Every recorded state of ``request_id``, oldest first (for tests and diagnostics)."""
        return [row[0] for row in self._db.query("SELECT state FROM requests WHERE id = ? ORDER BY seq", (request_id,))]

    # -- internals ------------------------------------------------------------------------------

    def _seen(self, request_id: str) -> bool:
        if self._dedup_window_s <= 0:
            return False
        since = time.time() - self._dedup_window_s
        rows = self._db.query("SELECT 1 FROM requests WHERE id = ? AND received >= ? LIMIT 1", (request_id, since))
        return bool(rows)

    def _is_void(self, request: Request) -> bool:
        for index, voided in enumerate(self._void):
            if voided is request:
                del self._void[index]
                return True
        return False

    def _recover(self) -> None:
        rows = self._db.query(
            "SELECT seq, body FROM requests WHERE state IN ('queued', 'started') ORDER BY seq"
        )
        now = time.time()
        for seq, body in rows:
            try:
                request = _from_json(body)
            except (ValueError, TypeError) as exc:
                log.error("state database row %d is unreadable (%s); dropping it", seq, exc)
                with self._db.transaction() as conn:
                    conn.execute("UPDATE requests SET state = 'failed', body = '' WHERE seq = ?", (seq,))
                continue
            # a Wyoming client's connection died with the daemon: nobody is left to hear its audio
            if request.expired(now) or request.source == "wyoming":
                self.expired_while_down.append(request)
                self.mark(request.id, "expired")
            elif self._memory.put(request).status == "queued":
                self.resumed.append(request)
            else:  # the configured depth shrank below what was waiting
                self.requeue(request)
                self.resumed.append(request)
        if rows:
            log.info(
                "resuming %d unfinished request(s); %d expired while the daemon was down",
                len(self.resumed),
                len(self.expired_while_down),
            )

    def _prune(self) -> None:
        """Drop finished rows once the dedup window has passed; they carry no text, only ids."""
        horizon = time.time() - max(self._dedup_window_s, 60.0)
        try:
            with self._db.transaction() as conn:
                conn.execute(
                    "DELETE FROM requests WHERE state NOT IN ('queued', 'started') AND updated < ?", (horizon,)
                )
        except StateDbError as exc:
            log.warning("cannot prune the request table: %s", exc)
