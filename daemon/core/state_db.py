"""The daemon's state database: one SQLite file in WAL mode in the state directory.

The durable queue, the audit trail, reload outcomes and the HTTP API's tokens share it, so one ``fsync`` policy
and one lock cover everything. ``synchronous=FULL`` makes a commit survive power loss, not only a killed process: a
request acknowledged as ``queued`` or recorded as ``done`` is on the disk before anyone hears about it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DB_NAME = "state.db"


class StateDbError(RuntimeError):
    """The state database cannot be written (disk full, read-only, corrupt); the message says which file."""


class StateDb:
    """A connection shared by the daemon's threads; every write is its own short transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.parent.exists() and not path.parent.is_dir():
            raise StateDbError(f"{path.parent} is not a directory")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as exc:
            raise StateDbError(f"cannot open the state database {path}: {exc}") from exc
        self.lock = threading.RLock()

    @classmethod
    def in_dir(cls, state_dir: Path) -> StateDb:
        return cls(state_dir / DB_NAME)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` .. ``COMMIT``; any SQLite failure becomes a :class:`StateDbError`."""
        with self.lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StateDbError(f"{self.path}: {exc}") from exc
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException as exc:
                try:
                    self._conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # a failed COMMIT may already have rolled back
                if isinstance(exc, sqlite3.Error):
                    raise StateDbError(f"{self.path}: {exc}") from exc
                raise

    @contextmanager
    def unsynced_transaction(self) -> Iterator[sqlite3.Connection]:
        """A transaction whose commit does not wait for the disk (``synchronous=NORMAL``): it survives a killed
        process but may be lost with the power. Only for writes that are safe to lose."""
        with self.lock:
            self._pragma("synchronous=NORMAL")
            try:
                with self.transaction() as conn:
                    yield conn
            finally:
                self._pragma("synchronous=FULL")

    def _pragma(self, setting: str) -> None:
        try:
            self._conn.execute(f"PRAGMA {setting}")
        except sqlite3.Error as exc:
            raise StateDbError(f"{self.path}: {exc}") from exc

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple]:
        with self.lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StateDbError(f"{self.path}: {exc}") from exc

    def close(self) -> None:
        with self.lock:
            self._conn.close()


def open_read_only(state_dir: Path) -> sqlite3.Connection:
    """For ``gsv-edge audit`` beside a running daemon: WAL lets it read while the daemon writes."""
    path = state_dir / DB_NAME
    if not path.exists():
        raise StateDbError(f"no state database at {path} (has the daemon run with this state_dir?)")
    try:
        return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error as exc:
        raise StateDbError(f"cannot open {path}: {exc}") from exc
