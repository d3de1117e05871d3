"""The request queue, kept in the state database so an acknowledged request survives a crash.

Order and bounds are :class:`~daemon.core.request_queue.MemoryQueue`'s; every admission is also a row in
``requests`` committed before ``put`` returns, so the ``queued`` event is only ever sent for a request
that is on disk. Each row moves ``queued -> started -> done | failed | expired | rejected`` as the
daemon reports the request's events: :meth:`DurableQueue.record` writes the state and the messages
announcing it (the :mod:`~daemon.core.outbox`) in one transaction, before any of them is published.

On start, rows still ``queued`` or ``started`` are resumed (or reported ``expired`` if their time ran
out while the daemon was down). A request cut by a crash mid-playback is therefore spoken again from
the start: at least once before ``done``, never after ``done``. A finished row keeps its protocol, id
and a digest of its content, not its text: within the dedup window the same id with the same content
from the same protocol (e.g. a QoS 1 redelivery, also across restarts) is a duplicate, and anything
else a new request.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from typing import Any

from daemon.core.events import Event, EventKind, is_durable, is_terminal
from daemon.core.outbox import Message, Outbox, json_bytes
from daemon.core.request_queue import Admission, MemoryQueue, Part, Request
from daemon.core.state_db import StateDb, StateDbError
from daemon.speech.synthesizer import Sampling

log = logging.getLogger(__name__)

ACTIVE = ("queued", "started")
PRUNE_EVERY = 500  # admissions between deletions of finished rows older than the dedup window
_FIELDS = {f.name for f in dataclasses.fields(Request)} - {"received_at", "row"}
# What a request asks for: the same id with the same content is a repeat of it, with other content a new one.
CONTENT = ("text", "voice", "lang", "priority", "interrupt", "volume", "speed", "chime", "output", "format",
           "site_id", "session_id")

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS requests (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL,
        received REAL NOT NULL,  -- wall clock, for the dedup window
        state TEXT NOT NULL,  -- queued, started, done, failed, expired, rejected
        updated REAL NOT NULL,
        body TEXT NOT NULL,  -- the request as JSON while active, '' once finished
        source TEXT,  -- the protocol: ids are its own
        digest TEXT  -- SHA-256 of the CONTENT fields
    )""",
    "CREATE INDEX IF NOT EXISTS requests_id ON requests(id)",
    "CREATE INDEX IF NOT EXISTS requests_state ON requests(state)",
)
ADDED_COLUMNS = ("source", "digest")  # absent from databases made before them: rows without them match nothing


def _to_json(request: Request) -> str:
    return json.dumps({k: v for k, v in dataclasses.asdict(request).items() if k in _FIELDS}, ensure_ascii=False)


def _from_json(body: str) -> Request:
    data = {k: v for k, v in json.loads(body).items() if k in _FIELDS}
    if data.get("sampling") is not None:
        data["sampling"] = Sampling(**data["sampling"])
    data["parts"] = tuple(Part(**part) for part in data.get("parts") or ())
    data["zones"] = tuple(data.get("zones") or ())
    return Request(**data)


def content_digest(request: Request) -> str:
    content: dict[str, Any] = {name: getattr(request, name) for name in CONTENT}
    if request.sampling is not None:  # absent when unset, so digests recorded before it existed still match
        content["sampling"] = dataclasses.asdict(request.sampling)
    if request.parts:  # likewise: a plain request's digest is what it was before parts existed
        content.update(parts=[dataclasses.asdict(part) for part in request.parts], repeat=request.repeat,
                       repeat_gap_s=request.repeat_gap_s)
    if request.zones:  # likewise for a request without zones
        content["zones"] = list(request.zones)
    return hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


class DurableQueue:
    """A :class:`~daemon.core.request_queue.RequestQueue` whose admissions and outcomes are in SQLite.

    ``resumed`` and ``expired_while_down`` hold what the last run left unfinished; the service reports
    them once it starts. ``outbox`` holds the messages that announce what :meth:`record` wrote.
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
            columns = {row[1] for row in conn.execute("PRAGMA table_info(requests)")}
            for column in ADDED_COLUMNS:
                if column not in columns:
                    conn.execute(f"ALTER TABLE requests ADD COLUMN {column} TEXT")
        self.outbox = Outbox(db)
        self.resumed: list[Request] = []
        self.expired_while_down: list[Request] = []
        self._recover()
        self._prune()

    # -- RequestQueue ---------------------------------------------------------------------------

    def put(self, request: Request) -> Admission:
        """Admit and commit; raises :class:`StateDbError` (nothing admitted) when the disk refuses.

        A displaced request keeps its row until its ``rejected`` event is recorded, so that the event and
        the state change are committed together."""
        with self._db.lock:
            digest = content_digest(request)
            if (state := self._seen(request, digest)) is not None:
                return Admission("duplicate", state=state)
            admission = self._memory.put(request)
            if admission.status != "queued":
                return admission
            now = time.time()
            try:
                with self._db.transaction() as conn:
                    request.row = conn.execute(
                        "INSERT INTO requests (id, source, digest, received, state, updated, body)"
                        " VALUES (?, ?, ?, ?, 'queued', ?, ?)",
                        (request.id, request.source, digest, now, now, _to_json(request)),
                    ).lastrowid
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

    def remove(self, request: Request) -> bool:
        """Out of the memory queue; the row follows the terminal event the caller reports."""
        with self._db.lock:
            return self._memory.remove(request) and not self._is_void(request)

    def remove_expired(self, now: float | None = None) -> list[Request]:
        with self._db.lock:
            return [r for r in self._memory.remove_expired(now) if not self._is_void(r)]

    def waiting(self) -> list[Request]:
        with self._db.lock:
            return [r for r in self._memory.waiting() if not any(r is void for void in self._void)]

    def __len__(self) -> int:
        with self._db.lock:
            return len(self._memory) - len(self._void)

    # -- states ---------------------------------------------------------------------------------

    def record(self, event: Event, messages: list[tuple[str, dict[str, Any]]]) -> list[Message]:
        """Record the state an event reports and the messages (topic, JSON body) announcing it, in one
        transaction; returns the messages to publish, after this and only after this.

        Progress reports (``first_audio``, a retrying failure) and the daemon's own events change nothing and
        skip the outbox. A failure to write is logged, never raised: the messages then go out without it.
        """
        request, kind, fields = event.request, event.kind, event.fields
        if request is not None and is_durable(kind, fields):
            try:
                with self._db.transaction() as conn:
                    self._set_state(conn, request, kind, fields)
                    return [self.outbox.add(conn, topic, body) for topic, body in messages]
            except StateDbError as exc:
                self.write_errors += 1
                log.error("cannot record request %s as %s: %s", request.id, kind.value, exc)
        return [Message(topic, json_bytes(body)) for topic, body in messages]

    @staticmethod
    def _set_state(conn: Any, request: Request, kind: EventKind, fields: dict[str, Any]) -> None:
        if request.row is None:  # never admitted (refused, or expired before it was queued)
            return
        now = time.time()
        if kind is EventKind.STARTED:
            conn.execute(
                "UPDATE requests SET state = 'started', updated = ? WHERE seq = ? AND state = 'queued'",
                (now, request.row),
            )
        elif kind is not EventKind.QUEUED and is_terminal(kind, fields):
            conn.execute(
                "UPDATE requests SET state = ?, updated = ?, body = ''"
                " WHERE seq = ? AND state IN ('queued', 'started')",
                (kind.value, now, request.row),
            )

    def states(self, request_id: str) -> list[str]:
        """Every recorded state of ``request_id``, oldest first (for tests and diagnostics)."""
        return [row[0] for row in self._db.query("SELECT state FROM requests WHERE id = ? ORDER BY seq", (request_id,))]

    # -- internals ------------------------------------------------------------------------------

    def _seen(self, request: Request, digest: str) -> str | None:
        """The state of the latest request this one repeats within the dedup window, or None."""
        if self._dedup_window_s <= 0:
            return None
        rows = self._db.query(
            "SELECT state FROM requests WHERE id = ? AND source = ? AND digest = ? AND received >= ?"
            " ORDER BY seq DESC LIMIT 1",
            (request.id, request.source, digest, time.time() - self._dedup_window_s),
        )
        return rows[0][0] if rows else None

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
                request = dataclasses.replace(_from_json(body), row=seq)
            except (ValueError, TypeError) as exc:
                log.error("state database row %d is unreadable (%s); dropping it", seq, exc)
                with self._db.transaction() as conn:
                    conn.execute("UPDATE requests SET state = 'failed', body = '' WHERE seq = ?", (seq,))
                continue
            if request.expired(now) or request.answers_a_connection:
                self.expired_while_down.append(request)  # the row changes with its event's record
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
        """Drop finished rows once the dedup window has passed; they carry no text, only ids and digests."""
        horizon = time.time() - max(self._dedup_window_s, 60.0)
        try:
            with self._db.transaction() as conn:
                conn.execute(
                    "DELETE FROM requests WHERE state NOT IN ('queued', 'started') AND updated < ?", (horizon,)
                )
        except StateDbError as exc:
            log.warning("cannot prune the request table: %s", exc)
