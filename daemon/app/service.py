"""The daemon: wires configuration, engines, queue, playback and the protocols into one :class:`Service`.

The neural engine is built only when ``engine.bundle`` is set; without it, or when it cannot be
loaded, the daemon still speaks with the eSpeak NG fallback and says so in its status.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import wave
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

from daemon.app.engines import Engines, build_engines, fallback_voice
from daemon.app.scheduler import ScheduleRunner
from daemon.app.systemd_notify import SILENCE_S
from daemon.audio.output import AudioOutput
from daemon.config import ConfigError, Settings, ZoneSettings
from daemon.core.audio_cache import AudioCache
from daemon.core.audit import Actor, AuditLog
from daemon.core.bus import EventBus, OutputRouter
from daemon.core.durable_queue import DurableQueue
from daemon.core.events import Event, EventKind, PayloadOrigin
from daemon.core.pipeline import Pipeline, ZoneOutput
from daemon.core.request_queue import Request
from daemon.core.resources import disk_space, memory_available, resident_bytes
from daemon.core.schedules import FIELDS, Schedule, ScheduleError, ScheduleStore
from daemon.core.state_db import StateDb, StateDbError
from daemon.core.status_history import StatusHistory
from daemon.model.bundle import Bundle
from daemon.model.manifest import MANIFEST, Manifest
from daemon.protocols.mqtt import MqttService, ZonePublisher
from daemon.protocols.payloads import IntakePolicy, RejectedPayload
from daemon.protocols.schedule_requests import ScheduleRejected, json_object, parse_addition, parse_removal
from daemon.protocols.voice_registration import (
    RegistrationRejected,
    VoiceRegistration,
    parse_registration,
)
from daemon.protocols.wyoming import WyomingServer
from daemon.speech.synthesizer import SynthesisError, Synthesizer, UnknownVoice, VoiceInfo

if TYPE_CHECKING:
    from daemon.core.metrics import Metrics
    from daemon.protocols.http.server import HttpServer

log = logging.getLogger("gsv-edge")

VOICES_RELIST_S = 30.0  # voices added or removed with the CLI while the daemon runs show up this soon


@functools.cache
def _unspoken_languages() -> dict[str, str]:
    """The neural engine's languages whose extra is not installed, and why (looked up once: installing one takes a
    restart). Imported here, not with the module: the front end loads with a neural engine, whose failure to load
    (a damaged installation) leaves the daemon speaking with eSpeak NG."""
    from daemon.frontend.languages import OPTIONAL_LANGUAGES, missing_extra

    return {language: reason for language in OPTIONAL_LANGUAGES if (reason := missing_extra(language)) is not None}


def _version() -> str:
    try:
        return version("gsv-edge")
    except PackageNotFoundError:
        return "unknown"


class StartFault(Exception):
    """The box, not its configuration, stops the daemon starting (a full or failing disk): it exits FAILED, which
    systemd retries, where a configuration error (SETUP) waits for someone to edit the file."""


class Service:
    """The running daemon. ``engine``/``fallback`` may be given (tests, embedding); else built from settings."""

    def __init__(
        self, settings: Settings, engine: Synthesizer | None = None, fallback: Synthesizer | None = None,
        shared_threads: bool = False,
    ) -> None:
        """``shared_threads``: this process is the daemon, its onnxruntime sessions all the engine's, so they
        share one thread pool (``gsv-edge serve``)."""
        self.settings = settings
        self.shared_threads = shared_threads
        self.engines = build_engines(settings, shared_threads) if engine is None else Engines(
            engine, fallback or fallback_voice(settings))
        self.mqtt = MqttService(settings, self, _version())
        self.wyoming = WyomingServer(settings, self, _version()) if settings.wyoming.uri else None
        self.state, self.queue, self.audit = self._open_state(settings)
        self.http = self._http_server() if settings.http.port is not None else None
        self.metrics = self._metrics() if settings.metrics.port is not None else None
        self.history = StatusHistory()
        self.bus = self._event_bus()
        self.outputs = self._output_router()
        self.pipeline = self._pipeline(settings)
        self.schedule_store = self._schedule_store()
        self.schedule_runner = ScheduleRunner(self.schedule_store, self.intake_policy, self.submit,
                                              lambda topic, rejection: self.rejected("native", topic, rejection),
                                              changed=self._relist_schedules, prerender=self.pipeline.prerender,
                                              ahead_s=lambda: self.settings.cache.prerender_s)
        # set by gsv-edge serve: the safe reload, and what ends the process (a signal, or an admin over HTTP)
        self.reload_hook: Callable[[Path | None, Actor | None], tuple[bool, str]] | None = None
        self.reload_busy: Callable[[], bool] = lambda: False
        self.stopping = threading.Event()
        self._voice_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gsv-voice-register")
        self._relist_stop = threading.Event()
        self._relist = threading.Thread(target=self._relist_voices, name="gsv-voices", daemon=True)

    # -- wiring ---------------------------------------------------------------------------------

    @staticmethod
    def _open_state(settings: Settings) -> tuple[StateDb, DurableQueue, AuditLog]:
        try:
            state = StateDb.in_dir(settings.state_dir)
            queue = DurableQueue(state, settings.queue.max_depth, settings.queue.dedup_window_s)
            return state, queue, AuditLog(state, settings.audit)
        except (StateDbError, OSError) as exc:
            raise StartFault(f"state_dir {settings.state_dir}: {exc}") from exc

    def _schedule_store(self) -> ScheduleStore:
        try:
            return ScheduleStore(self.state)
        except StateDbError as exc:
            raise StartFault(f"state_dir {self.settings.state_dir}: {exc}") from exc

    def _http_server(self) -> HttpServer:
        from daemon.core.tokens import TokenStore
        from daemon.protocols.http.app import build_app  # FastAPI and uvicorn load only when it is on
        from daemon.protocols.http.server import HttpServer

        return HttpServer(self.settings, self, TokenStore(self.state), _version(), build_app)

    def _metrics(self) -> Metrics:
        from daemon.core.metrics import Metrics  # prometheus_client is an optional package

        return Metrics(
            queue_depth=lambda: self.pipeline.depth(),
            broker_connected=lambda: float(self.mqtt.connected),
            state_errors=lambda: self.queue.write_errors + self.audit.write_errors,
        )

    def _event_bus(self) -> EventBus:
        """Every event is recorded in the queue's database with its MQTT messages, heard by these subscribers,
        then published over MQTT."""
        bus = EventBus(journal=self.queue, announcer=self.mqtt)
        for subscriber in (self.audit, self.metrics, self.history, self.wyoming, self.http):
            if subscriber is not None:
                bus.subscribe(subscriber)
        return bus

    def _output_router(self) -> OutputRouter:
        """A request's audio goes back the way it came: Wyoming to its client, HTTP to its response, everything
        else over MQTT."""
        router = OutputRouter(default=self.mqtt)
        if self.wyoming is not None:
            router.route("wyoming", self.wyoming)
        if self.http is not None:
            router.route("http", self.http)
        return router

    def _pipeline(self, settings: Settings) -> Pipeline:
        audio = AudioOutput(settings.audio) if settings.audio.output_device else None
        self._has_audio_device = audio is not None
        try:
            cache_dir = settings.state_dir / "cache" / "audio"
            cache = AudioCache(cache_dir, settings.cache.max_mb << 20) if settings.cache.max_mb else None
        except OSError as exc:
            raise StartFault(f"cache.max_mb: cannot use {cache_dir}: {exc}") from exc
        try:
            return Pipeline(self.queue, self.engine, self.fallback, events=self.bus, publisher=self.outputs,
                            audio=audio, audio_settings=settings.audio, cache=cache,
                            zones=[self._zone_output(zone) for zone in settings.zones])
        except (OSError, ValueError, wave.Error) as exc:
            raise ConfigError(f"audio.chime_file: cannot use {settings.audio.chime_file}: {exc}") from exc

    def _zone_output(self, zone: ZoneSettings) -> ZoneOutput:
        """A zone's sound card plays as the ``[audio]`` one does, with the zone's device, volume and lead-in."""
        lead_in_ms = round(zone.lead_in_s * 1000)
        if zone.output_device is not None:
            audio = self.settings.audio.model_copy(
                update={"output_device": zone.output_device, "volume": zone.volume, "lead_in_ms": lead_in_ms})
            return ZoneOutput(zone.name, audio=AudioOutput(audio), volume=zone.volume, lead_in_ms=lead_in_ms,
                              quiet=zone.quiet_span, volumes=zone.volume_steps)
        assert zone.topic is not None
        return ZoneOutput(zone.name, publisher=ZonePublisher(self.mqtt, zone.topic), volume=zone.volume,
                          lead_in_ms=lead_in_ms, quiet=zone.quiet_span, volumes=zone.volume_steps)

    @property
    def engine(self) -> Synthesizer:
        return self.engines.engine

    @property
    def fallback(self) -> Synthesizer:
        return self.engines.fallback

    @property
    def engine_error(self) -> str | None:
        return self.engines.error

    # -- what the MQTT side asks for ------------------------------------------------------------

    def submit(self, request: Request) -> None:
        try:
            self.pipeline.submit(request)
        except StateDbError as exc:  # not on disk, so not acknowledged
            log.error("cannot accept %s: %s", request.id, exc)
            self.bus.emit(request, EventKind.REJECTED, cause="state_write",
                          reason=f"cannot record the request (state directory full?): {exc}")

    def cancel(self, request: Request, reason: str) -> None:
        self.pipeline.cancel(request, reason)

    def rejected(self, protocol: str, topic: str, rejection: RejectedPayload) -> None:
        origin = PayloadOrigin(protocol, topic, rejection.site_id, rejection.session_id)
        self.refused(origin, rejection.reason, rejection.request_id)

    def refused(self, origin: PayloadOrigin, reason: str, request_id: str | None = None) -> None:
        self.bus.publish(Event(EventKind.REJECTED, {"reason": reason}, id=request_id, refused=origin))

    def delivered(self, seq: int) -> None:
        self.queue.outbox.delivered(seq)

    def intake_policy(self) -> IntakePolicy:
        """Built per message so voices added while running are accepted at once."""
        return IntakePolicy(
            max_text_chars=self.settings.queue.max_text_chars,
            default_ttl_s=self.settings.queue.default_ttl_s,
            voices=frozenset(v.name for v in self.voices()),
            has_audio_device=self._has_audio_device,
            default_chime=self.settings.audio.chime_default,
            zones=tuple(zone.name for zone in self.settings.zones),
            unspoken=_unspoken_languages() if self.engines.neural else {},  # eSpeak NG speaks them all
        )

    def voices(self) -> list[VoiceInfo]:
        """The one voice list: what MQTT accepts and lists, Hermes lists and Wyoming describes."""
        return [voice for voice, _ in self.offered_voices()]

    def offered_voices(self) -> list[tuple[VoiceInfo, bool]]:
        """Every voice a request may name, and whether eSpeak NG speaks it: the engine's voices and, beside a
        neural engine, the configured fallback voice (the pipeline hands a request naming it to the fallback).
        Read per call: voices come and go."""
        engines = self.engines  # one snapshot: a reload may swap them meanwhile
        voices = [(voice, not engines.neural) for voice in engines.engine.voices()]
        name = self.settings.engine.fallback_voice
        if engines.neural and all(voice.name != name for voice, _ in voices):
            voices.append((VoiceInfo(name, [name], f"{engines.fallback.name} ({name})"), True))
        return voices

    def register_voice(self, payload: bytes) -> None:
        """Read the payload here (cheap); clone on a worker thread, as the engine needs seconds for it."""
        try:
            registration = parse_registration(payload)
            if not self.engine.can_register_voices:
                raise RegistrationRejected(
                    f"voice registration needs the GPT-SoVITS engine (engine_state {self.engine_state()})",
                    registration.id,
                )
        except RegistrationRejected as exc:
            log.info("voice registration %s rejected: %s", exc.request_id, exc.reason)
            self.bus.publish(Event(EventKind.REJECTED, {"reason": exc.reason}, id=exc.request_id))
            return
        self._voice_worker.submit(self._register_voice, registration)

    def _register_voice(self, reg: VoiceRegistration) -> None:
        try:
            by = Actor("native", topic=self.mqtt.topics.voice_register)  # MQTT 3.1.1 names no publisher
            self.add_voice(reg.name, reg.wav, reg.text, reg.lang, f"mqtt:{reg.id}", reg.description, reg.id, by=by)
        except (ValueError, SynthesisError) as exc:  # the clip, the transcript, an engine that cannot
            log.info("voice registration %s rejected: %s", reg.id, exc)
            self.bus.publish(Event(EventKind.REJECTED, {"reason": str(exc), "voice": reg.name}, id=reg.id))
        except Exception as exc:
            log.exception("registering voice %s failed", reg.name)
            reason = f"internal error: {type(exc).__name__}: {exc}"
            self.bus.publish(Event(EventKind.REJECTED, {"reason": reason, "voice": reg.name}, id=reg.id))

    def add_voice(self, name: str, wav: bytes, text: str, lang: str, clip_name: str, description: str = "",
                  registration_id: str | None = None, *, by: Actor | None = None) -> None:
        """Register a voice with the engine (seconds of work, between syntheses), record who did (``by``) in the
        voice and the audit trail, and announce it. ValueError says what is wrong with the clip or the
        transcript, SynthesisError that the engine cannot clone voices."""
        engine = self.engine
        if not engine.can_register_voices:
            raise SynthesisError(f"voice registration needs the GPT-SoVITS engine (engine_state {self.engine_state()})")
        with self.pipeline.engine_lock.exclusive():
            voice = engine.register_voice(name, wav, text, lang, clip_name, description,
                                          created_by=by.name() if by else "", created_via=by.protocol if by else "")
        log.info("voice %s registered (%s, %.1f s clip)", voice.name, clip_name, voice.seconds)
        self.audit.changed("voice_added", by, subject=voice.name, voice=voice.name,
                           reason=f"{lang}, {voice.seconds:.1f} s clip {clip_name}")
        fields = {"voice": voice.name, "lang": lang, "seconds": voice.seconds}
        self.bus.publish(Event(EventKind.VOICE_REGISTERED, fields, id=registration_id))
        if self.mqtt.connected:
            self.mqtt.publish_voices(only_if_changed=True)

    def remove_voice(self, name: str, *, by: Actor | None = None) -> None:
        """Delete a registered voice (between syntheses), record who did (``by``) and list the voices again;
        UnknownVoice when none has that name, SynthesisError for a voice built into its engine (eSpeak NG's)."""
        engines = self.engines
        offered = {info.name: espeak for info, espeak in self.offered_voices()}
        if offered.get(name):
            engines.fallback.remove_voice(name)  # eSpeak NG's own: it says why not
        if not engines.engine.can_register_voices and name not in offered:
            raise UnknownVoice(f"unknown voice {name!r}")
        with self.pipeline.engine_lock.exclusive():
            engines.engine.remove_voice(name)
        log.info("voice %s removed", name)
        self.audit.changed("voice_removed", by, subject=name, voice=name)
        if self.mqtt.connected:
            self.mqtt.publish_voices(only_if_changed=True)

    def _relist_voices(self) -> None:
        while not self._relist_stop.wait(VOICES_RELIST_S):
            if self.mqtt.connected:
                self.mqtt.publish_voices(only_if_changed=True)

    # -- schedules ------------------------------------------------------------------------------

    def schedules(self) -> list[dict[str, Any]]:
        """Every schedule as listed: its definition, next due time and that run's id, by name."""
        now = datetime.now(timezone.utc)
        return [schedule.listed(now) for schedule in self.schedule_store.list()]

    def add_schedule(self, schedule: Schedule, *, by: Actor | None = None) -> None:
        """Store a checked schedule (:class:`ScheduleExists` when the name is taken), record who did (``by``) and
        list the schedules again; the runner picks it up at its next look."""
        self.schedule_store.add(schedule, FIELDS)
        log.info("schedule %s added (%s)", schedule.name, schedule.timing())
        self.audit.changed("schedule_added", by, subject=schedule.name, reason=schedule.timing())
        self._relist_schedules()

    def remove_schedule(self, name: str, *, by: Actor | None = None) -> None:
        """Delete a schedule (:class:`NoSuchSchedule` when there is none of that name): its future runs do not
        happen; record who did (``by``) and list the schedules again."""
        self.schedule_store.remove(name, FIELDS)
        log.info("schedule %s removed", name)
        self.audit.changed("schedule_removed", by, subject=name)
        self._relist_schedules()

    def change_schedule(self, topic: str, payload: bytes) -> None:
        """An MQTT ``schedules/add`` or ``schedules/remove``, made as the topic (MQTT 3.1.1 names no publisher);
        answered with ``schedule_added`` / ``schedule_removed`` (``schedule``, and an addition's ``next``) or
        ``rejected`` with the reason, under the change's ``id``."""
        by = Actor("native", topic=topic)
        request_id = None
        try:
            limit = self.settings.queue.max_payload_bytes
            if len(payload) > limit:
                raise ScheduleRejected(f"payload too large ({len(payload)} > {limit} bytes)")
            data = json_object(payload)
            if topic == self.mqtt.topics.schedule_add:
                schedule, request_id = parse_addition(data, self.intake_policy().zones)
                self.add_schedule(schedule, by=by)
                listed = schedule.listed(datetime.now(timezone.utc))
                event = Event(EventKind.SCHEDULE_ADDED, {"schedule": schedule.name, "next": listed["next"],
                                                         "next_id": listed["next_id"]}, id=request_id)
            else:
                removal = parse_removal(data)
                request_id = removal.id
                self.remove_schedule(removal.name, by=by)
                event = Event(EventKind.SCHEDULE_REMOVED, {"schedule": removal.name}, id=request_id)
        except (ScheduleRejected, ScheduleError) as exc:
            request_id = exc.request_id if isinstance(exc, ScheduleRejected) else request_id
            log.info("schedule change %s on %s rejected: %s", request_id, topic, exc)
            event = Event(EventKind.REJECTED, {"reason": str(exc)}, id=request_id)
        except StateDbError as exc:  # the box is at fault, not the change
            log.error("cannot record schedule change %s: %s", request_id, exc)
            event = Event(EventKind.REJECTED, {"reason": f"cannot record the change (state directory full?): {exc}",
                                               "cause": "state_write"}, id=request_id)
        self.bus.publish(event)

    def _relist_schedules(self) -> None:
        if self.mqtt.connected:
            self.mqtt.publish_schedules(only_if_changed=True)

    # -- reload ---------------------------------------------------------------------------------

    def apply(self, settings: Settings, engines: Engines) -> None:
        """Switch to checked settings and engines (reload): the parts that read live settings get them, a
        request already being synthesised finishes on the old engine, the queue is untouched."""
        self.settings = settings
        self.mqtt.settings = settings
        self.audit.settings = settings.audit
        logging.getLogger().setLevel(settings.log_level)
        if engines.engine is not self.engine or engines.fallback is not self.fallback:
            self.engines = engines
            self.pipeline.set_engine(engines.engine, engines.fallback)
            self.schedule_runner.forget_rendered()
            self.mqtt.publish_voices()
        self.mqtt.publish_status(self.status())

    def reload(self, bundle: Path | None = None, *, by: Actor | None = None) -> tuple[bool, str]:
        """Re-read the config and bundle (``bundle`` in place of ``engine.bundle`` when given) through the safe
        reload; (switched in, what happened). ``by``: who asked (the audit trail records the outcome with it)."""
        if self.reload_hook is None:
            message = "reload refused: this daemon was not started by gsv-edge serve"
            self.audit.changed("reload_refused", by, reason=message)
            return False, message
        return self.reload_hook(bundle, by)

    def current_bundle(self) -> Path | None:
        return self.settings.engine.bundle

    def loaded_bundle(self) -> dict[str, Any] | None:
        """The bundle the speaking engine was loaded from: its directory, digest and manifest as the file has it;
        None when no bundle's engine speaks (the eSpeak NG fallback)."""
        bundle = getattr(self.engines.engine, "bundle", None)  # the GPT-SoVITS engine's; no other engine has one
        if not isinstance(bundle, Bundle):
            return None
        return {"path": str(bundle.path), "digest": bundle.digest, "manifest": bundle.manifest.to_dict()}

    def installed_bundles(self) -> list[tuple[Path, dict[str, str]]]:
        """Bundles beside ``engine.bundle`` (its directory's siblings, itself included), each with the file names
        of the checkpoints it was converted from (``gpt``, ``sovits``): what ``/set_*_weights`` may switch to."""
        current = self.settings.engine.bundle
        if current is None or not current.parent.is_dir():
            return []
        found = []
        for path in sorted(current.parent.iterdir()):
            try:
                sources = Manifest.read(path / MANIFEST).provenance.sources
            except (OSError, ValueError):  # not a bundle, or one this version cannot read
                continue
            found.append((path, {kind: PurePath(source.file).name for kind, source in sources.items()}))
        return found

    # -- health, for systemd --------------------------------------------------------------------

    def problems(self, max_silence_s: float) -> list[str]:
        """What keeps the daemon from working; the systemd watchdog withholds its ping while there is any."""
        stale = self.pipeline.heartbeat.stale(max_silence_s)
        found = [f"{loop} loop silent for over {max_silence_s:g} s" for loop in stale]
        if not self.mqtt.network_alive():
            found.append("MQTT network thread died")
        return found

    def status_line(self) -> str:
        """One line for ``systemctl status`` (``STATUS=``)."""
        cfg = self.settings.mqtt
        broker = "connected" if self.mqtt.connected else "not connected"
        return (
            f"{'speaking' if self.pipeline.busy else 'idle'}, queue {self.pipeline.depth()}; "
            f"engine {self.engine_state()} ({self.engine.name}); broker {cfg.host}:{cfg.port} {broker}"
        )

    def engine_state(self) -> str:
        if self.engines.neural:
            return "ready"
        return "degraded" if self.engine_error else "fallback-only"

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "state": "speaking" if self.pipeline.busy else "idle",
            "engine_state": self.engine_state(),
            "model": self.engine.name,
            "precision": self.engine.precision,
            "provider": self.engine.provider,
            "fallback": self.fallback.name,
            "sample_rate": self.engine.sample_rate,
            "queue_depth": self.pipeline.depth(),
            "last_latency_ms": self.pipeline.last_latency_ms,
            "ts": round(time.time(), 3),
        }
        if self.engine_error:
            status["engine_error"] = self.engine_error
        return status

    def lineup(self) -> list[tuple[str, Request]]:
        """The request being spoken, the next one and those waiting, in order, each with where it is."""
        return self.pipeline.lineup()

    def resources(self) -> dict[str, Any]:
        """Disk (the state directory's filesystem, the rendered-audio cache) and memory (this process, the
        system); a value the OS does not tell is None."""
        disk = disk_space(self.settings.state_dir)
        memory = memory_available()
        cache = self.pipeline.cache
        return {
            "disk": {"free_bytes": disk[0] if disk else None, "total_bytes": disk[1] if disk else None,
                     "audio_cache_bytes": cache.total_bytes if cache is not None else None},
            "memory": {"rss_bytes": resident_bytes(), "available_bytes": memory[0] if memory else None,
                       "total_bytes": memory[1] if memory else None},
        }

    def health(self) -> dict[str, Any]:
        """What the daemon already watches that an operator must hear about: the watchdog's problems (a stuck
        loop, a dead network thread), failed writes to the state database (a full or failing disk), and the
        audio device's errors."""
        device = self.history.audio_device()
        return {
            "problems": self.problems(SILENCE_S),
            "state_write_errors": self.queue.write_errors + self.audit.write_errors,
            "audio_device": {"errors": device.errors, "failing": device.failing, "last_error": device.last_error,
                             "last_error_ts": device.last_error_ts},
        }

    def listeners(self) -> dict[str, Any]:
        """Where the daemon listens and whether its broker connection is up."""
        mqtt = self.settings.mqtt
        return {
            "mqtt": {"broker": f"{mqtt.host}:{mqtt.port}", "connected": self.mqtt.connected},
            "http": self.http.url if self.http is not None else None,
            "wyoming": self.settings.wyoming.uri,
        }

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
        log.info("MQTT: publish a say ({\"text\": ...}) to %s; events on %s", self.mqtt.topics.say,
                 self.mqtt.topics.events)
        if self.wyoming is not None:
            self.wyoming.start()  # first: a port that cannot be served stops start-up before anything runs
        if self.http is not None:
            self.http.start()
        if self.metrics is not None:
            self.metrics.serve(self.settings.metrics)
        self.mqtt.send(self.queue.outbox.left())  # committed by the last run, never acknowledged: first
        for request in self.queue.expired_while_down:
            self.bus.emit(request, EventKind.EXPIRED, reason="ttl elapsed while the daemon was down")
        for request in self.queue.resumed:
            self.bus.emit(request, EventKind.QUEUED, resumed=True, queue_depth=len(self.queue),
                          priority=request.priority)
        self.pipeline.start()
        self.schedule_runner.start()
        self._publish_engine_down()
        self.mqtt.start()
        self._relist.start()

    def _publish_engine_down(self) -> None:
        """A configured bundle the daemon cannot use is news for whoever watches the events, not only the log."""
        if self.engine_error:
            self.bus.publish(Event(EventKind.ENGINE_DOWN, {"reason": self.engine_error}))

    def drain(self, timeout_s: float) -> None:
        """Graceful stop (SIGTERM): fleet requests go to the other boxes, HTTP calls are refused (503), nothing more
        is synthesised, the
        announcement in progress may play out what is synthesised for ``timeout_s``; queued requests stay in
        the durable queue."""
        self.mqtt.leave_share_group()
        self.schedule_runner.stop()  # a run due from now on is decided at the next start, by its missed-run policy
        if self.http is not None:
            self.http.draining = True
        if not self.pipeline.drain(timeout_s):
            log.warning("the announcement in progress did not finish within queue.drain_s (%g s): cut", timeout_s)

    def stop(self) -> None:
        self._relist_stop.set()
        self._voice_worker.shutdown(wait=True, cancel_futures=True)
        if self.http is not None:
            self.http.stop()
        if self.wyoming is not None:
            self.wyoming.stop()
        self.schedule_runner.stop()
        self.pipeline.stop()
        self.mqtt.stop()
        if self.metrics is not None:
            self.metrics.close()
        self.state.close()
