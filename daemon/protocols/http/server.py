"""The HTTP server thread, and the pipeline's way back to a response that is waiting for its audio.

An HTTP request is not spoken here: it becomes a :class:`~daemon.core.request_queue.Request` in the daemon's
one queue (the same engine, voices, priorities, audit trail and metrics as MQTT), and the pipeline hands its
audio to :meth:`HttpServer.open` and its end to :meth:`HttpServer.on_event`, which pass them to the
:class:`Speech` the handler awaits, or, for ``POST /v1/say``, keep the audio in its
:class:`~daemon.protocols.http.request_records.RequestRecords`. Every event also goes to the records and to the
clients of ``GET /v1/events``. uvicorn runs in its own thread with its own event loop, like the Wyoming
server; the socket is bound before it starts, so a port that cannot be used stops start-up with its name.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from daemon.config import ConfigError, Settings
from daemon.core import events
from daemon.core.audit import Actor
from daemon.core.events import EventKind, PayloadOrigin, is_terminal
from daemon.core.pipeline import AudioStream, Discard
from daemon.core.request_queue import Request
from daemon.core.schedules import Schedule, ScheduleStore
from daemon.core.status_history import StatusHistory
from daemon.core.tokens import TokenStore
from daemon.protocols.http.access import Caller, Refusal
from daemon.protocols.http.event_feed import EventFeed
from daemon.protocols.http.request_records import RequestRecords, keeps_audio
from daemon.protocols.http.sessions import Sessions
from daemon.protocols.payloads import CLIENT_GONE, IntakePolicy, RejectedPayload, parse_native
from daemon.speech.synthesizer import Sampling, Synthesizer, VoiceInfo

log = logging.getLogger(__name__)


class SpeechService(Protocol):
    """What the HTTP side needs from the daemon (:class:`daemon.app.service.Service`)."""

    engine: Synthesizer
    fallback: Synthesizer
    settings: Settings  # as last applied: a reload replaces them
    history: StatusHistory  # the last hours' timings, for GET /v1/status/history

    def submit(self, request: Request) -> None: ...

    def cancel(self, request: Request, reason: str) -> None: ...

    def refused(self, origin: PayloadOrigin, reason: str, request_id: str | None = None) -> None:
        """Record and announce a call refused before it became a request (the audit trail keeps who asked)."""
        ...

    def intake_policy(self) -> IntakePolicy: ...

    def add_voice(self, name: str, wav: bytes, text: str, lang: str, clip_name: str, description: str = "",
                  registration_id: str | None = None, *, by: Actor | None = None) -> None:
        """Register a voice now (seconds), recorded as ``by``'s doing; ValueError says what is wrong with the clip
        or transcript, SynthesisError that the engine cannot clone voices."""
        ...

    def remove_voice(self, name: str, *, by: Actor | None = None) -> None:
        """Delete a registered voice, recorded as ``by``'s doing; UnknownVoice when none has that name,
        SynthesisError for a built-in one."""
        ...

    def offered_voices(self) -> list[tuple[VoiceInfo, bool]]: ...

    schedule_store: ScheduleStore

    def schedules(self) -> list[dict[str, Any]]:
        """Every schedule as listed: definition, next due time and that run's id."""
        ...

    def add_schedule(self, schedule: Schedule, *, by: Actor | None = None) -> None:
        """Store a checked schedule, recorded as ``by``'s doing; ScheduleExists when the name is taken."""
        ...

    def remove_schedule(self, name: str, *, by: Actor | None = None) -> None:
        """Delete a schedule, recorded as ``by``'s doing; NoSuchSchedule when there is none of that name."""
        ...

    def reload(self, bundle: Path | None = None, *, by: Actor | None = None) -> tuple[bool, str]:
        """The safe reload, with ``bundle`` in place of ``engine.bundle`` when given, asked for ``by`` someone
        (the audit trail records it): (switched in, why)."""
        ...

    def current_bundle(self) -> Path | None:
        """The bundle the engine was built from (``engine.bundle`` as last applied)."""
        ...

    def loaded_bundle(self) -> dict[str, Any] | None:
        """The speaking engine's bundle: ``path``, ``digest`` and ``manifest`` (its JSON); None without one."""
        ...

    def reload_busy(self) -> bool:
        """A reload is under way (another waits for it)."""
        ...

    def installed_bundles(self) -> list[tuple[Path, dict[str, str]]]:
        """Bundles that may be switched to, with the checkpoint file names they were converted from."""
        ...

    @property
    def stopping(self) -> threading.Event:
        """Set to end the daemon gracefully."""
        ...

    def engine_state(self) -> str: ...

    def status(self) -> dict[str, Any]: ...

    def listeners(self) -> dict[str, Any]: ...

    def lineup(self) -> list[tuple[str, Request]]:
        """The requests in hand and waiting, in order, each with where it is (``current``, ``next``, ``queued``)."""
        ...

    def resources(self) -> dict[str, Any]:
        """``disk`` and ``memory``, as the OS tells them (None where it does not)."""
        ...

    def health(self) -> dict[str, Any]:
        """The watchdog's ``problems``, ``state_write_errors`` and the ``audio_device``'s errors."""
        ...


@dataclass(frozen=True)
class Start:
    sample_rate: int


@dataclass(frozen=True)
class Ending:
    """The request's terminal event."""

    kind: EventKind
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        return str(self.fields.get("reason", self.kind.value))


Item = Start | np.ndarray | Ending


class Speech:
    """One request's audio on its way to a response: pipeline threads put, the handler awaits."""

    def __init__(self, request: Request, loop: asyncio.AbstractEventLoop) -> None:
        self.request = request
        self.ending: Ending | None = None
        self._loop = loop
        self._items: asyncio.Queue[Item] = asyncio.Queue()

    def put(self, item: Item) -> None:
        """From any thread."""
        try:
            self._loop.call_soon_threadsafe(self._items.put_nowait, item)
        except RuntimeError:  # the loop is closed: the server stopped and nobody is listening
            pass

    async def next(self) -> Item:
        item = await self._items.get()
        if isinstance(item, Ending):
            self.ending = item
        return item


class _ResponseStream:
    """The pipeline's :class:`~daemon.core.pipeline.AudioStream` for a waiting response."""

    def __init__(self, speech: Speech) -> None:
        self._speech = speech

    def write(self, audio: np.ndarray) -> None:
        self._speech.put(np.asarray(audio, dtype=np.float32))

    def close(self, cancel: threading.Event) -> None:
        """Nothing to wait for: the response ends with the request's terminal event."""


class HttpServer:
    """Serves the API on ``http.host:http.port`` (HTTPS with ``tls_cert_file``) until :meth:`stop`."""

    def __init__(self, settings: Settings, service: SpeechService, tokens: TokenStore, version: str,
                 app: Callable[[HttpServer], Any]) -> None:
        """``app`` builds the ASGI application serving this server (:func:`daemon.protocols.http.app.build_app`)."""
        assert settings.http.port is not None
        self._build_app = app
        self.settings = settings
        self.service = service
        self.tokens = tokens
        self.version = version
        self.draining = False  # the daemon is stopping: new calls are refused
        self._speeches: dict[str, Speech] = {}
        self.records = RequestRecords(settings.http.keep_requests_s, settings.http.keep_audio_mb << 20)
        self.feed = EventFeed()
        self.sessions = Sessions(settings.http.session_s)
        self.started_at = time.monotonic()  # the daemon's start-up: the uptime /v1/status gives
        self._lock = threading.Lock()
        self._server: Any = None  # uvicorn.Server
        self._thread: threading.Thread | None = None

    @property
    def http(self):  # noqa: ANN201 - HttpSettings; read live, as a reload may change it
        return self.settings.http

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Check who may call, bind the port, then serve; anything wrong stops start-up naming the key."""
        self._check_access_rule()
        import uvicorn

        sock = self._bind()
        config = uvicorn.Config(self._build_app(self), log_config=None, access_log=False, lifespan="off",
                                timeout_graceful_shutdown=2, **self._tls())
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, name="gsv-http",
                                        daemon=True)
        self._thread.start()
        while not self._server.started and self._thread.is_alive():
            self._thread.join(0.02)
        if not self._server.started:
            raise ConfigError(f"http: the server on {self.url} did not start (see the log)")
        log.info("HTTP API on %s; web console %s/", self.url, self.url)

    def _check_access_rule(self) -> None:
        http = self.http
        if not http.loopback and not http.allow_anonymous and not self.tokens.any_tokens():
            raise ConfigError(
                f"http.host {http.host} is reachable from other machines and no token exists: create one with "
                "'gsv-edge token add NAME --scope speak', or set http.allow_anonymous = true"
            )

    def _bind(self) -> socket.socket:
        http = self.http
        try:
            infos = socket.getaddrinfo(http.host, http.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            family, kind, proto, _, address = infos[0]
            sock = socket.socket(family, kind, proto)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(128)
        except OSError as exc:
            raise ConfigError(f"http.port: cannot listen on {http.host}:{http.port}: {exc.strerror or exc}") from exc
        sock.set_inheritable(True)
        return sock

    def _tls(self) -> dict[str, Any]:
        http = self.http
        if http.tls_cert_file is None:
            return {}
        try:  # read them now, so a bad file is named at start-up, not in the server thread
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(http.tls_cert_file, http.tls_key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"http.tls_cert_file / http.tls_key_file: cannot use {http.tls_cert_file} with "
                              f"{http.tls_key_file}: {exc}") from exc
        return {"ssl_certfile": str(http.tls_cert_file), "ssl_keyfile": str(http.tls_key_file)}

    @property
    def url(self) -> str:
        scheme = "https" if self.http.tls_cert_file else "http"
        return f"{scheme}://{self.http.host}:{self.http.port}"

    def stop(self) -> None:
        """Open responses end, then the server stops (their requests' synthesis is cancelled as clients go)."""
        if self._server is None or self._thread is None:
            return
        self.feed.close()
        self._server.should_exit = True
        self._thread.join(timeout=5)

    # -- what a handler asks for ----------------------------------------------------------------

    def request(self, caller: Caller, text: str, voice: str | None, lang: str | None, speed: float = 1.0,
                voice_param: str = "voice", text_param: str = "input", sampling: Sampling | None = None) -> Request:
        """The queued request, checked exactly as an MQTT ``say`` is (text limits, voice names, language);
        :class:`Refusal` 400 naming the client's field otherwise."""
        if voice is not None:
            if all(info.name != voice for info, _ in self.service.offered_voices()):
                raise Refusal(400, f"unknown voice {voice!r}: GET /v1/audio/voices lists the voices",
                              "voice_not_found", param=voice_param)
        say: dict[str, Any] = {"text": text, "speed": speed, "priority": self.http.priority, "output": "publish",
                               "chime": False}
        if voice is not None:
            say["voice"] = voice
        if lang is not None:
            say["lang"] = lang
        try:
            request = parse_native(json.dumps(say).encode(), self.service.intake_policy())
        except RejectedPayload as rejection:
            param = text_param if "text" in rejection.reason else None
            raise Refusal(400, rejection.reason, "invalid_value", param=param) from rejection
        return dataclasses.replace(request, source="http", client=caller.client, token_name=caller.token_name,
                                   sampling=sampling)

    def check_open(self) -> None:
        """:class:`Refusal` 503 once the box is stopping: no new work is taken."""
        if self.draining:
            raise Refusal(503, "the box is shutting down", "shutting_down", headers={"Retry-After": "10"})

    async def speak(self, request: Request) -> Speech:
        """Queue ``request``; its audio and end arrive on the returned :class:`Speech`."""
        self.check_open()
        speech = Speech(request, asyncio.get_running_loop())
        with self._lock:
            self._speeches[request.id] = speech
        await asyncio.to_thread(self.service.submit, request)  # SQLite: off the event loop
        return speech

    def forget(self, speech: Speech) -> None:
        """The client is gone before the end: its request leaves the queue or its synthesis stops (a request
        for the box's speaker plays on)."""
        with self._lock:
            self._speeches.pop(speech.request.id, None)
        if speech.ending is None and speech.request.output == "publish":
            self.service.cancel(speech.request, CLIENT_GONE)

    # -- what the pipeline hands back (its threads) ---------------------------------------------

    def open(self, request: Request, sample_rate: int) -> AudioStream:
        with self._lock:
            speech = self._speeches.get(request.id)
        if speech is None:
            return self.records.stream(request, sample_rate) if keeps_audio(request) else Discard()
        speech.put(Start(sample_rate))
        return _ResponseStream(speech)

    def on_event(self, event: events.Event) -> None:
        payload = event.payload()
        self.records.on_event(event, payload["ts"])
        self.feed.publish(payload)
        request = event.request
        if request is None or request.source != "http" or not is_terminal(event.kind, event.fields):
            return
        with self._lock:
            speech = self._speeches.pop(request.id, None)
        if speech is not None:
            speech.put(Ending(event.kind, dict(event.fields)))
