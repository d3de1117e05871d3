"""Safe updates: SIGHUP (or ``gsv-edge reload``) re-reads the config and bundle without dropping requests.

The new configuration is validated and a new engine is built and warmed up beside the old one; only
when all of that worked are they switched in. Anything wrong (bad TOML, a bad value, a bundle file that
fails its digest) is refused with a ``reload_refused`` event and a log line, and the old engine keeps
serving. The queue is never touched, so nothing waiting is lost.

Live: ``engine.*``, ``audit.*``, ``log_level`` and the per-message limits ``queue.max_text_chars``,
``queue.default_ttl_s`` and ``queue.max_payload_bytes``. Anything else that changed is reported as
``restart_needed`` and takes effect at the next start.

The daemon writes its pid to ``<state_dir>/gsv-edge.pid`` and records in the state database which config
file it re-reads and each reload's outcome; ``gsv-edge reload`` (:mod:`daemon.commands.reload`) reads them.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon.config import ConfigError, Settings, load_settings
from daemon.core.state_db import StateDbError

if TYPE_CHECKING:
    from daemon.app.service import Service
    from daemon.speech.synthesizer import Synthesizer

log = logging.getLogger(__name__)

PID_FILE = "gsv-edge.pid"
LIVE_SECTIONS = ("engine", "audit", "log_level")
LIVE_QUEUE_KEYS = ("max_text_chars", "default_ttl_s", "max_payload_bytes")
SCHEMA = "CREATE TABLE IF NOT EXISTS reloads (ts REAL NOT NULL, ok INTEGER NOT NULL, message TEXT NOT NULL)"
# The config file the running daemon re-reads (NULL: started without --config), for ``gsv-edge reload``.
RUNNING_SCHEMA = "CREATE TABLE IF NOT EXISTS running (pid INTEGER NOT NULL, config TEXT)"


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
        from daemon.speech.espeak import EspeakVoice
        from daemon.speech.synthesizer import UnknownVoice

        try:
            fallback = EspeakVoice(settings.engine.fallback_voice)
        except UnknownVoice as exc:
            raise RefusedReload(f"engine.fallback_voice: {exc}") from exc
        if settings.engine.bundle is None:
            return fallback, fallback
        try:
            from daemon.model.engine import load_engine

            return load_engine(settings), fallback
        except ConfigError as exc:  # engine.default_voice not registered for the bundle
            raise RefusedReload(str(exc)) from exc
        except Exception as exc:
            raise RefusedReload(f"cannot load bundle {settings.engine.bundle}: {exc}") from exc


def serve_with_reload(service: Service, config_file: Path | None) -> Reloader:
    """Install the SIGHUP handler and start the reload thread (called by ``gsv-edge serve``)."""
    reloader = Reloader(service, config_file)
    signal.signal(signal.SIGHUP, lambda *_: reloader.request())
    reloader.start()
    return reloader
