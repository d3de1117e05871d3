"""Safe updates: SIGHUP (or ``gsv-edge reload``) re-reads the config and bundle without dropping requests.

The new configuration is validated and a new engine is built and warmed up beside the old one; only
when all of that worked are they switched in. Anything wrong (bad TOML, a bad value, a bundle file that
fails its digest) is refused with a ``reload_refused`` event and a log line, and the old engine keeps
serving. The queue is never touched, so nothing waiting is lost.

Live: ``engine.*``, ``audit.*``, ``log_level`` and the per-message limits ``queue.max_text_chars``,
``queue.default_ttl_s`` and ``queue.max_payload_bytes``. Anything else that changed is reported as
``restart_needed`` and takes effect at the next start.

The daemon writes its pid to ``<state_dir>/gsv-edge.pid`` and records in the state database which config
file it re-reads. ``gsv-edge reload`` checks that file (a ``--config`` naming another one is refused: the
daemon would never read it) and the bundle's digests, signals the daemon, and waits for the outcome the
daemon records in the state database.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon import exit_codes
from daemon.bundle import Bundle
from daemon.config import DEFAULT_CONFIG_PATH, ConfigError, Settings, load_settings
from daemon.state_db import DB_NAME, StateDbError, open_read_only

if TYPE_CHECKING:
    from daemon.service import Service
    from daemon.synthesizer import Synthesizer

log = logging.getLogger(__name__)

PID_FILE = "gsv-edge.pid"
LIVE_SECTIONS = ("engine", "audit", "log_level")
LIVE_QUEUE_KEYS = ("max_text_chars", "default_ttl_s", "max_payload_bytes")
SCHEMA = "CREATE TABLE IF NOT EXISTS reloads (ts REAL NOT NULL, ok INTEGER NOT NULL, message TEXT NOT NULL)"
# The config file the running daemon re-reads (NULL: started without --config), for ``gsv-edge reload``.
RUNNING_SCHEMA = "CREATE TABLE IF NOT EXISTS running (pid INTEGER NOT NULL, config TEXT)"
WAIT_S = 300.0  # how long ``gsv-edge reload`` waits: loading and warming a large bundle takes a while


class RefusedReload(Exception):
    """The new configuration or bundle must not be used; the message says why."""


def changed_keys(old: Settings, new: Settings) -> list[str]:
    """Dotted keys whose values differ (secrets compared by value, never printed)."""
    changed = []
    for name in type(old).model_fields:
        before, after = getattr(old, name), getattr(new, name)
        if hasattr(before, "model_fields"):
            fields = type(before).model_fields
            changed += [f"{name}.{key}" for key in fields if getattr(before, key) != getattr(after, key)]
        elif before != after:
            changed.append(name)
    return changed


def _is_live(key: str) -> bool:
    section, _, field = key.partition(".")
    return section in LIVE_SECTIONS or (section == "queue" and field in LIVE_QUEUE_KEYS)


class Reloader:
    """Reloads on request in a thread of its own (a signal handler only sets a flag)."""

    def __init__(self, service: Service, config_file: Path | None) -> None:
        self._service = service
        self._config_file = config_file
        self._wanted = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="gsv-reload", daemon=True)
        with service.state.transaction() as conn:
            conn.execute(SCHEMA)
            conn.execute(RUNNING_SCHEMA)

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
            self.reload()

    def reload(self) -> tuple[bool, str]:
        """One reload attempt; returns (switched in, what happened)."""
        try:
            message, fields = self._switch()
            ok = True
        except RefusedReload as exc:
            message, fields, ok = f"reload refused, still serving the previous configuration: {exc}", {}, False
        except Exception as exc:  # a bug must not take the daemon down with it
            log.exception("reload failed")
            message, fields, ok = f"reload refused: internal error: {exc}", {}, False
        (log.info if ok else log.error)("%s", message)
        service = self._service
        if service.metrics is not None:
            service.metrics.reloads.labels("ok" if ok else "refused").inc()
        event = {"id": None, "event": "reloaded" if ok else "reload_refused", "ts": round(time.time(), 3)}
        event.update(fields if ok else {"reason": message})
        service.mqtt.publish(service.mqtt.topics.events, json.dumps(event).encode())
        try:
            with service.state.transaction() as conn:
                conn.execute("INSERT INTO reloads (ts, ok, message) VALUES (?, ?, ?)", (time.time(), ok, message))
        except StateDbError as exc:
            log.error("cannot record the reload outcome: %s", exc)
        return ok, message

    def _switch(self) -> tuple[str, dict[str, Any]]:
        service = self._service
        try:
            new = load_settings(self._config_file)
        except ConfigError as exc:
            raise RefusedReload(str(exc)) from exc
        old = service.settings
        changed = changed_keys(old, new)
        restart_needed = [key for key in changed if not _is_live(key)]
        engine, fallback = service.engine, service.fallback
        if new.engine != old.engine or new.engine.bundle is not None:  # a bundle's files may have been replaced
            engine, fallback = self._build_engines(new)
        queue = old.queue.model_copy(update={key: getattr(new.queue, key) for key in LIVE_QUEUE_KEYS})
        applied = old.model_copy(update={**{name: getattr(new, name) for name in LIVE_SECTIONS}, "queue": queue})
        service.settings = applied
        service.mqtt.settings = applied
        service.audit.settings = applied.audit
        logging.getLogger().setLevel(applied.log_level)
        if engine is not service.engine or fallback is not service.fallback:
            service.engine, service.fallback, service.engine_error = engine, fallback, None
            service.pipeline.set_engine(engine, fallback)
            service.mqtt.publish_voices()
        service.mqtt.publish_status(service.status())
        live = [key for key in changed if _is_live(key)]
        message = f"reloaded: engine {engine.name}; changed {', '.join(live) or 'nothing live'}"
        if restart_needed:
            message += f"; at the next restart: {', '.join(restart_needed)}"
        return message, {"engine": engine.name, "changed": live, "restart_needed": restart_needed}

    @staticmethod
    def _build_engines(settings: Settings) -> tuple[Synthesizer, Synthesizer]:
        from daemon.fallback_voice import EspeakVoice
        from daemon.synthesizer import UnknownVoice

        try:
            fallback = EspeakVoice(settings.engine.fallback_voice)
        except UnknownVoice as exc:
            raise RefusedReload(f"engine.fallback_voice: {exc}") from exc
        if settings.engine.bundle is None:
            return fallback, fallback
        try:
            from daemon.engine import load_engine

            return load_engine(settings), fallback
        except ConfigError as exc:  # engine.default_voice not registered for the bundle
            raise RefusedReload(str(exc)) from exc
        except Exception as exc:
            raise RefusedReload(f"cannot load bundle {settings.engine.bundle}: {exc}") from exc


# -- gsv-edge reload --------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help="the config file the running daemon re-reads (default: that file, found through "
                             f"the state directory; {DEFAULT_CONFIG_PATH} or GSV_EDGE_STATE_DIR locate the daemon); "
                             "checked with its bundle before anything is sent")


def _last_reload(state_dir: Path) -> tuple[float, bool, str] | None:
    try:
        conn = open_read_only(state_dir)
    except StateDbError:
        return None
    try:
        row = conn.execute("SELECT ts, ok, message FROM reloads ORDER BY rowid DESC LIMIT 1").fetchone()
    except Exception:  # sqlite3.Error: the table appears with the first reload
        return None
    finally:
        conn.close()
    return (row[0], bool(row[1]), row[2]) if row else None


def _daemon_config(state_dir: Path, pid: int) -> Path | None:
    """The config file the daemon with ``pid`` re-reads; None when it was started without ``--config``."""
    conn = open_read_only(state_dir)
    try:
        row = conn.execute("SELECT config FROM running WHERE pid = ?", (pid,)).fetchone()
    except sqlite3.Error:  # no such table: a daemon from before the record was kept
        row = None
    finally:
        conn.close()
    if row is None:
        raise StateDbError(f"the daemon (pid {pid}) recorded no config file in {state_dir / DB_NAME}; restart it")
    return Path(row[0]) if row[0] is not None else None


def _not_sent(reason: str, code: int = exit_codes.SETUP) -> int:
    print(f"gsv-edge reload: not sent, {reason}", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    """Check here what the daemon will load (its own config file and the bundle it names), so nothing wrong is
    signalled; then SIGHUP the daemon and report what it did."""
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        return _not_sent(f"the configuration is invalid: {exc}")
    state_dir = settings.state_dir
    pid_file = state_dir / PID_FILE
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)  # alive: before the checks, which may hash gigabytes
        daemon_config = _daemon_config(state_dir, pid)
    except (OSError, ValueError, StateDbError) as exc:
        print(f"gsv-edge reload: no running daemon found through {pid_file}: {exc}", file=sys.stderr)
        return exit_codes.FAILED
    runs_with = daemon_config or DEFAULT_CONFIG_PATH  # started without --config, it reads the default file
    if args.config is not None and args.config.resolve() != runs_with.resolve():
        what = daemon_config or f"none given, so {DEFAULT_CONFIG_PATH} when present"
        return _not_sent(f"{args.config} is not the config file the daemon (pid {pid}) re-reads ({what}); "
                         "edit that one", exit_codes.USAGE)
    if args.config is None and daemon_config is not None:
        try:
            settings = load_settings(daemon_config)
        except ConfigError as exc:
            return _not_sent(f"the configuration is invalid: {exc}")
    if settings.engine.bundle is not None:
        try:
            Bundle.load(settings.engine.bundle)  # every digest, as the daemon's load checks them
        except (OSError, ValueError, KeyError, TypeError) as exc:  # BundleError is a ValueError
            return _not_sent(f"the bundle fails its check: {exc}")
    try:
        sent = time.time()
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        print(f"gsv-edge reload: no running daemon found through {pid_file}: {exc}", file=sys.stderr)
        return exit_codes.FAILED
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        outcome = _last_reload(state_dir)
        if outcome is not None and outcome[0] >= sent:
            print(f"gsv-edge reload: {outcome[2]}", file=sys.stdout if outcome[1] else sys.stderr)
            return exit_codes.OK if outcome[1] else exit_codes.FAILED
        time.sleep(0.2)
    print(f"gsv-edge reload: sent SIGHUP to {pid}, no outcome within {WAIT_S:.0f} s; see the daemon's log",
          file=sys.stderr)
    return exit_codes.FAILED


def serve_with_reload(service: Service, config_file: Path | None) -> Reloader:
    """Install the SIGHUP handler and start the reload thread (called by ``gsv-edge serve``)."""
    reloader = Reloader(service, config_file)
    signal.signal(signal.SIGHUP, lambda *_: reloader.request())
    reloader.start()
    return reloader
