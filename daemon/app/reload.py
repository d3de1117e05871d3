"""Safe updates: SIGHUP (or ``gsv-edge reload``) re-reads the config and bundle without dropping requests.

The new configuration is validated and a new engine is built and warmed up beside the old one; only
when all of that worked are they switched in. Anything wrong (bad TOML, a bad value, a bundle file that
fails its digest) is refused with a ``reload_refused`` event and a log line, and the old engine keeps
serving. The queue is never touched, so nothing waiting is lost.

Live: ``engine.*``, ``audit.*``, ``log_level`` and the per-message limits ``queue.max_text_chars``,
``queue.default_ttl_s`` and ``queue.max_payload_bytes``. Anything else that changed is reported as
``restart_needed`` and takes effect at the next start; for ``[[zones]]`` the message (and so the audit row) says
which zones were added, removed or changed and in which keys.

The daemon writes its pid to ``<state_dir>/gsv-edge.pid`` and records in the state database which config
file it re-reads and each reload's outcome; ``gsv-edge reload`` (:mod:`daemon.commands.reload`) reads them.

Each outcome is also an audit row (``reloaded`` or ``reload_refused``) with who asked. A signal carries no
sender, so ``gsv-edge reload`` first leaves its OS user in the ``reload_requests`` table (:func:`leave_name`);
the reload a SIGHUP starts claims the names left in the last :data:`REQUEST_FRESH_S` seconds and is recorded as
``cli`` with them, or as ``signal`` with nobody when there are none (``kill -HUP``, systemd's ``reload``). A bare
signal landing between the command's note and its own signal is credited to that command's user.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from daemon.app.engines import EngineUnavailable, build_engines
from daemon.app.signals import SignalActions
from daemon.config import ConfigError, Settings, load_settings
from daemon.core.audit import Actor
from daemon.core.events import Event, EventKind
from daemon.core.state_db import StateDb, StateDbError

if TYPE_CHECKING:
    from daemon.app.service import Service

log = logging.getLogger(__name__)

PID_FILE = "gsv-edge.pid"
LIVE_SECTIONS = ("engine", "audit", "log_level")
LIVE_QUEUE_KEYS = ("max_text_chars", "default_ttl_s", "max_payload_bytes")
SCHEMA = "CREATE TABLE IF NOT EXISTS reloads (ts REAL NOT NULL, ok INTEGER NOT NULL, message TEXT NOT NULL)"
# The config file the running daemon re-reads (NULL: started without --config), for ``gsv-edge reload``.
RUNNING_SCHEMA = "CREATE TABLE IF NOT EXISTS running (pid INTEGER NOT NULL, config TEXT)"
# Who ran ``gsv-edge reload``, left before its SIGHUP for the daemon to claim.
REQUESTS_SCHEMA = "CREATE TABLE IF NOT EXISTS reload_requests (ts REAL NOT NULL, os_user TEXT NOT NULL)"
REQUEST_FRESH_S = 60.0  # an older note is a command that never signalled: it names nobody


def leave_name(db: StateDb, os_user: str) -> None:
    """Note who is about to SIGHUP the daemon (``gsv-edge reload``), for the reload's audit row."""
    with db.transaction() as conn:
        conn.execute(REQUESTS_SCHEMA)
        conn.execute("INSERT INTO reload_requests (ts, os_user) VALUES (?, ?)", (time.time(), os_user))


class RefusedReload(Exception):
    """The new configuration or bundle must not be used; the message says why."""


def changed_keys(old: Settings, new: Settings) -> list[str]:
    """Dotted keys whose values differ (secrets compared by value, never printed)."""
    changed = []
    for name in type(old).model_fields:
        before, after = getattr(old, name), getattr(new, name)
        if isinstance(before, BaseModel):
            fields = type(before).model_fields
            changed += [f"{name}.{key}" for key in fields if getattr(before, key) != getattr(after, key)]
        elif before != after:
            changed.append(name)
    return changed


def zone_changes(old: Settings, new: Settings) -> str:
    """What a new ``[[zones]]`` list changes, in words for the reload's message and audit row: zones added,
    removed, and the keys changed in each kept one."""
    before, after = {z.name: z for z in old.zones}, {z.name: z for z in new.zones}
    changes = [f"added {name}" for name in after if name not in before]
    changes += [f"removed {name}" for name in before if name not in after]
    for name, zone in after.items():
        if name in before and zone != before[name]:
            keys = [key for key in type(zone).model_fields if getattr(zone, key) != getattr(before[name], key)]
            changes.append(f"{name}: {', '.join(keys)}")
    return "; ".join(changes) or "order"


def _is_live(key: str) -> bool:
    section, _, field = key.partition(".")
    return section in LIVE_SECTIONS or (section == "queue" and field in LIVE_QUEUE_KEYS)


class Reloader:
    """Reloads on request in a thread of its own (a signal handler only sets a flag)."""

    def __init__(self, service: Service, config_file: Path | None) -> None:
        self._service = service
        self._config_file = config_file
        self._wanted = threading.Event()
        self._lock = threading.Lock()  # one reload at a time: the signal's thread and HTTP callers
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="gsv-reload", daemon=True)
        with service.state.transaction() as conn:
            conn.execute(SCHEMA)
            conn.execute(RUNNING_SCHEMA)
            conn.execute(REQUESTS_SCHEMA)

    @property
    def pid_file(self) -> Path:
        return self._service.settings.state_dir / PID_FILE

    def request(self) -> None:
        self._wanted.set()

    def start(self) -> None:
        self.pid_file.write_text(f"{os.getpid()}\n")
        config = os.path.abspath(self._config_file) if self._config_file is not None else None
        try:
            with self._service.state.transaction() as conn:
                conn.execute("DELETE FROM running")
                conn.execute("INSERT INTO running (pid, config) VALUES (?, ?)", (os.getpid(), config))
        except StateDbError as exc:
            log.error("cannot record the config file for gsv-edge reload (it will refuse to signal): %s", exc)
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._wanted.set()
        self.pid_file.unlink(missing_ok=True)

    def _loop(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self._stopping:
                return
            self.reload(by=self._signalled_by())

    def _signalled_by(self) -> Actor:
        """The users ``gsv-edge reload`` left for this signal (claimed, so never credited twice), else nobody."""
        try:
            with self._service.state.transaction() as conn:
                rows = conn.execute("SELECT os_user FROM reload_requests WHERE ts >= ? ORDER BY rowid",
                                    (time.time() - REQUEST_FRESH_S,)).fetchall()
                conn.execute("DELETE FROM reload_requests")
        except StateDbError as exc:
            log.warning("cannot read who asked for the reload: %s", exc)
            rows = []
        users = list(dict.fromkeys(row[0] for row in rows))
        return Actor("cli", os_user=", ".join(users)) if users else Actor("signal")

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    def reload(self, bundle: Path | None = None, by: Actor | None = None) -> tuple[bool, str]:
        """One reload attempt, with ``bundle`` in place of ``engine.bundle`` when given (the HTTP API's
        ``/set_*_weights``; the config file is the truth again at the next reload), asked for ``by`` someone
        (None: not known); returns (switched in, what happened)."""
        with self._lock:
            return self._reload(bundle, by)

    def _reload(self, bundle: Path | None, by: Actor | None) -> tuple[bool, str]:
        try:
            message, fields = self._switch(bundle)
            ok = True
        except RefusedReload as exc:
            message, fields, ok = f"reload refused, still serving the previous configuration: {exc}", {}, False
        except Exception as exc:  # a bug must not take the daemon down with it
            log.exception("reload failed")
            message, fields, ok = f"reload refused: internal error: {exc}", {}, False
        (log.info if ok else log.error)("%s", message)
        service = self._service
        kind = EventKind.RELOADED if ok else EventKind.RELOAD_REFUSED
        service.bus.publish(Event(kind, fields if ok else {"reason": message}))
        # before the reloads row, which gsv-edge reload waits for: once it has answered, the audit row is there
        service.audit.changed("reloaded" if ok else "reload_refused", by, reason=message,
                              subject=str(bundle) if bundle is not None else None)
        try:
            with service.state.transaction() as conn:
                conn.execute("INSERT INTO reloads (ts, ok, message) VALUES (?, ?, ?)", (time.time(), ok, message))
        except StateDbError as exc:
            log.error("cannot record the reload outcome: %s", exc)
        return ok, message

    def _switch(self, bundle: Path | None) -> tuple[str, dict[str, Any]]:
        service = self._service
        try:
            new = load_settings(self._config_file)
        except ConfigError as exc:
            raise RefusedReload(str(exc)) from exc
        if bundle is not None:
            new = new.with_value("engine.bundle", bundle)
        old = service.settings
        changed = changed_keys(old, new)
        restart_needed = [key for key in changed if not _is_live(key)]
        engines = service.engines
        if new.engine != old.engine or new.engine.bundle is not None:  # a bundle's files may have been replaced
            try:
                engines = build_engines(new, service.shared_threads, degrade=False)
            except (ConfigError, EngineUnavailable) as exc:
                raise RefusedReload(str(exc)) from exc
        queue = old.queue.model_copy(update={key: getattr(new.queue, key) for key in LIVE_QUEUE_KEYS})
        switched = old.model_copy(update={**{name: getattr(new, name) for name in LIVE_SECTIONS}, "queue": queue})
        service.apply(switched.sources_from(new), engines)
        live = [key for key in changed if _is_live(key)]
        message = f"reloaded: engine {engines.engine.name}; changed {', '.join(live) or 'nothing live'}"
        if restart_needed:
            named = [f"zones ({zone_changes(old, new)})" if key == "zones" else key for key in restart_needed]
            message += f"; at the next restart: {', '.join(named)}"
        return message, {"engine": engines.engine.name, "changed": live, "restart_needed": restart_needed}


def serve_with_reload(service: Service, config_file: Path | None, signals: SignalActions) -> Reloader:
    """Reload on SIGHUP and start the reload thread (called by ``gsv-edge serve``)."""
    reloader = Reloader(service, config_file)
    signals.on(signal.SIGHUP, reloader.request)
    service.reload_hook = reloader.reload
    service.reload_busy = lambda: reloader.busy
    reloader.start()
    return reloader
