"""``gsv-edge serve``: wires configuration, engines, queue, playback and MQTT into the daemon.

The neural engine is built only when ``engine.bundle`` is set; without it, or when it cannot be
loaded, the daemon still speaks with the eSpeak NG fallback and says so in its status.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
import wave
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from daemon.audio_out import AudioOutput
from daemon.config import DEFAULT_CONFIG_PATH, ConfigError, Settings, load_settings
from daemon.events import EventKind
from daemon.fallback_voice import EspeakVoice
from daemon.mqtt_service import MqttService
from daemon.payloads import IntakePolicy
from daemon.pipeline import Pipeline
from daemon.request_queue import MemoryQueue, Request
from daemon.synthesizer import Synthesizer, UnknownVoice, VoiceInfo

log = logging.getLogger("gsv-edge")

EXIT_CONFIG = 2


def _version() -> str:
    try:
        return version("gsv-edge")
    except PackageNotFoundError:
        return "unknown"


class Service:
    """The running daemon. ``engine``/``fallback`` may be given (tests, embedding); else built from settings."""

    def __init__(
        self, settings: Settings, engine: Synthesizer | None = None, fallback: Synthesizer | None = None
    ) -> None:
        self.settings = settings
        try:
            self.fallback = fallback or EspeakVoice(settings.engine.fallback_voice)
        except UnknownVoice as exc:
            raise ConfigError(f"engine.fallback_voice: {exc}") from exc
        self.engine_error: str | None = None
        self.engine = engine or self._load_engine()
        audio = AudioOutput(settings.audio) if settings.audio.output_device else None
        self._has_audio_device = audio is not None
        self.mqtt = MqttService(settings, self, _version())
        try:
            self.pipeline = Pipeline(
                MemoryQueue(settings.queue.max_depth, settings.queue.dedup_window_s),
                self.engine,
                self.fallback,
                events=self,
                publisher=self.mqtt,
                audio=audio,
                audio_settings=settings.audio,
            )
        except (OSError, ValueError, wave.Error) as exc:
            raise ConfigError(f"audio.chime_file: cannot use {settings.audio.chime_file}: {exc}") from exc

    def _load_engine(self) -> Synthesizer:
        bundle = self.settings.engine.bundle
        if bundle is None:
            return self.fallback
        try:
            from daemon.engine import load_engine
        except ImportError as exc:
            self.engine_error = f"GPT-SoVITS engine unavailable in this build: {exc}"
        else:
            try:
                return load_engine(self.settings)
            except Exception as exc:
                self.engine_error = f"cannot load bundle {bundle}: {exc}"
        log.error("%s; speaking with the %s", self.engine_error, self.fallback.name)
        return self.fallback

    # -- what the MQTT side asks for ------------------------------------------------------------

    def submit(self, request: Request) -> None:
        self.pipeline.submit(request)

    def intake_policy(self) -> IntakePolicy:
        """Built per message so voices added while running are accepted at once."""
        return IntakePolicy(
            max_text_chars=self.settings.queue.max_text_chars,
            default_ttl_s=self.settings.queue.default_ttl_s,
            voices=frozenset(v.name for v in self.engine.voices()),
            has_audio_device=self._has_audio_device,
            default_chime=self.settings.audio.chime_default,
        )

    def voices(self) -> list[VoiceInfo]:
        return self.engine.voices()

    def engine_state(self) -> str:
        if self.engine is not self.fallback:
            return "ready"
        return "degraded" if self.engine_error else "fallback-only"

    def status(self) -> dict[str, Any]:
        neural = self.engine is not self.fallback
        status: dict[str, Any] = {
            "state": "speaking" if self.pipeline.busy else "idle",
            "engine_state": self.engine_state(),
            "model": self.engine.name,
            # Facts the neural engine exposes (daemon.engine.Engine); eSpeak NG has neither.
            "precision": getattr(getattr(self.engine, "profile", None), "precision", None) if neural else None,
            "provider": getattr(self.engine, "provider", None) if neural else None,
            "fallback": self.fallback.name,
            "sample_rate": self.engine.sample_rate,
            "queue_depth": self.pipeline.depth(),
            "last_latency_ms": self.pipeline.last_latency_ms,
            "ts": round(time.time(), 3),
        }
        if self.engine_error:
            status["engine_error"] = self.engine_error
        return status

    def emit(self, request: Request, kind: EventKind, **fields: Any) -> None:
        self.mqtt.emit(request, kind, **fields)
        if kind not in (EventKind.STARTED, EventKind.FIRST_AUDIO):
            self.mqtt.publish_status(self.status())

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        log.info(
            "gsv-edge %s: node %s, engine %s (%s), broker %s:%d",
            _version(),
            self.settings.mqtt.node_id,
            self.engine.name,
            self.engine_state(),
            self.settings.mqtt.host,
            self.settings.mqtt.port,
        )
        self.pipeline.start()
        self.mqtt.start()

    def stop(self) -> None:
        self.pipeline.stop()
        self.mqtt.stop()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"TOML configuration (default {DEFAULT_CONFIG_PATH}, if present); GSV_EDGE_* variables override it",
    )


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"gsv-edge serve: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        service = Service(settings)
    except ConfigError as exc:
        print(f"gsv-edge serve: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    service.start()
    stopping.wait()
    log.info("stopping")
    service.stop()
    return 0
