"""The daemon as a Wyoming TTS server, the way Home Assistant consumes local speech engines.

Built on the ``wyoming`` package (the protocol's reference implementation). A Wyoming request is not
spoken here: it becomes a :class:`~daemon.core.request_queue.Request` in the daemon's one queue (so it shares
the engine, voices and ordering with MQTT, and an emergency announcement still goes first), and the
pipeline hands its audio back through :meth:`WyomingServer.open` and :meth:`WyomingServer.emit`.
The asyncio server runs in its own thread; the rest of the daemon is threads and paho.

Per connection, everything the client is owed goes through one ordered outbox, so audio, errors and
``synthesize-stopped`` leave in the order the requests came in.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import threading
from collections.abc import Collection
from typing import Any, Protocol
from urllib.parse import urlparse

import numpy as np
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Attribution, Describe, Info, TtsProgram, TtsVoice
from wyoming.server import AsyncEventHandler, AsyncServer
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped, SynthesizeVoice

from daemon.audio.wav import to_pcm16
from daemon.config import ConfigError, Settings
from daemon.core import events
from daemon.core.events import EventKind, is_terminal
from daemon.core.pipeline import AudioStream, Discard
from daemon.core.request_queue import Request
from daemon.protocols.payloads import CLIENT_GONE, IntakePolicy, RejectedPayload, parse_native
from daemon.speech.synthesizer import Synthesizer, VoiceInfo
from daemon.vocabulary import LANGUAGE_MODES, SEGMENT_LANGUAGES, language_mode, mode_language

log = logging.getLogger(__name__)

WIDTH = 2  # 16-bit PCM
CHANNELS = 1
GSV_ATTRIBUTION = Attribution(name="RVC-Boss/GPT-SoVITS", url="https://github.com/RVC-Boss/GPT-SoVITS")
ESPEAK_ATTRIBUTION = Attribution(name="eSpeak NG", url="https://github.com/espeak-ng/espeak-ng")
# A streamed sentence ends at . ! ? ; followed by white space (so "3.5" is not cut), at a CJK sentence
# mark, or at a line break; closing quotes and brackets stay with their sentence. It decides when text still
# arriving may be queued, so it is not the engines' own cutting (daemon.frontend.sentences, the eSpeak NG voice).
_SENTENCE = re.compile(r".*?(?:[.!?;]+[\"'”’)\]]*\s+|[。！？；]+[”’」』）]*|\n)", re.DOTALL)


def complete_sentences(text: str) -> tuple[list[str], str]:
    """The finished sentences at the start of streamed ``text``, and the unfinished rest."""
    sentences, pos = [], 0
    while (match := _SENTENCE.match(text, pos)) is not None:
        if sentence := match.group().strip():
            sentences.append(sentence)
        pos = match.end()
    return sentences, text[pos:]


def wyoming_languages(languages: list[str], spoken: Collection[str] = SEGMENT_LANGUAGES) -> list[str]:
    """A voice's languages as codes: Home Assistant offers a voice under each language it lists. A language mode
    is its language (``all_ja`` is ``ja``); ``auto`` is every language in ``spoken``, those the box reads."""
    out: list[str] = []
    for language in languages:
        if language not in LANGUAGE_MODES:
            codes = [language]
        elif (base := mode_language(language)) is None:
            codes = [code for code in SEGMENT_LANGUAGES if code in spoken]
        else:
            codes = [base]
        out.extend(code for code in codes if code not in out)
    return out


class SpeechService(Protocol):
    """What the Wyoming side needs from the daemon (:class:`daemon.app.service.Service`)."""

    engine: Synthesizer
    fallback: Synthesizer

    def submit(self, request: Request) -> None: ...

    def cancel(self, request: Request, reason: str) -> None: ...

    def intake_policy(self) -> IntakePolicy: ...

    def offered_voices(self) -> list[tuple[VoiceInfo, bool]]:
        """Every voice a request may name, and whether eSpeak NG speaks it (the list MQTT uses too)."""
        ...


class Refusal(Exception):
    """A request answered with a Wyoming ``error`` event instead of audio."""

    def __init__(self, text: str, code: str) -> None:
        super().__init__(text)
        self.text = text
        self.code = code

    def event(self) -> Event:
        return Error(text=self.text, code=self.code).event()


class _Reply:
    """One queued request's way back to its connection: pipeline threads put events, the connection takes them."""

    def __init__(self, request: Request, loop: asyncio.AbstractEventLoop) -> None:
        self.request = request
        self.started = False  # audio-start sent: the answer must end with audio-stop
        self._loop = loop
        self._events: asyncio.Queue[Event | None] = asyncio.Queue()

    def put(self, event: Event | None) -> None:
        """From any thread; None ends the reply."""
        try:
            self._loop.call_soon_threadsafe(self._events.put_nowait, event)
        except RuntimeError:  # the loop is closed: the server stopped and nobody is listening
            pass

    async def next(self) -> Event | None:
        return await self._events.get()


class _ReplyStream:
    """The pipeline's :class:`~daemon.core.pipeline.AudioStream` for a Wyoming request: 16-bit PCM chunks.

    The pipeline writes one chunk per sentence, so the sentence silence goes after each write.
    """

    def __init__(self, reply: _Reply, sample_rate: int, samples_per_chunk: int, silence_s: float) -> None:
        self._reply = reply
        self._rate = sample_rate
        self._step = samples_per_chunk * WIDTH * CHANNELS
        self._silence = bytes(int(round(silence_s * sample_rate)) * WIDTH * CHANNELS)

    def write(self, audio: np.ndarray) -> None:
        pcm = to_pcm16(audio) + self._silence
        for start in range(0, len(pcm), self._step):
            self._reply.put(AudioChunk(self._rate, WIDTH, CHANNELS, pcm[start : start + self._step]).event())

    def close(self, cancel: threading.Event) -> None:
        """Nothing to wait for: the end of the answer follows the request's terminal event."""


@dataclasses.dataclass
class _TextStream:
    """An open ``synthesize-start``: text arrives in chunks and is queued sentence by sentence."""

    voice: str | None
    lang: str | None
    refused: bool  # its voice was refused: the text is dropped, but the stream still ends properly
    text: str = ""


class _Connection(AsyncEventHandler):
    """One client connection (Home Assistant opens one per request)."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: WyomingServer, admitted: bool
    ) -> None:
        super().__init__(reader, writer)
        self._server = server
        self._admitted = admitted
        peer = writer.get_extra_info("peername")
        self._peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "unix socket"
        self._stream: _TextStream | None = None
        self._pending: set[_Reply] = set()
        # Bounded: a long streamed text is queued a sentence or two ahead of what is being sent, not all at once.
        self._outbox: asyncio.Queue[Event | _Reply] = asyncio.Queue(maxsize=1)
        self._sender = asyncio.get_running_loop().create_task(self._send())

    async def handle_event(self, event: Event) -> bool:
        if not self._admitted:
            limit = self._server.settings.max_connections
            await self.write_event(Error(f"busy: already serving {limit} connections", "too-many-connections").event())
            return False
        try:
            await self._handle(event)
        except Refusal as refusal:
            await self._refuse(refusal)
        return True

    async def _handle(self, event: Event) -> None:
        if Describe.is_type(event.type):
            await self._outbox.put(self._server.info().event())
        elif Synthesize.is_type(event.type):
            if self._stream is None:  # inside a stream it is the client's backwards-compatible copy of the text
                synthesize = Synthesize.from_event(event)
                voice, lang = self._server.choose_voice(synthesize.voice)
                await self._speak(synthesize.text, voice, lang)
        elif SynthesizeStart.is_type(event.type):
            await self._start_stream(SynthesizeStart.from_event(event).voice)
        elif SynthesizeChunk.is_type(event.type):
            if self._stream is None:
                raise Refusal("synthesize-chunk without synthesize-start", "no-stream")
            await self._stream_text(self._stream, SynthesizeChunk.from_event(event).text)
        elif SynthesizeStop.is_type(event.type):
            stream, self._stream = self._stream, None
            if stream is not None and not stream.refused and stream.text.strip():
                await self._speak_or_refuse(stream.text, stream.voice, stream.lang)
            await self._outbox.put(SynthesizeStopped().event())

    async def _start_stream(self, voice: SynthesizeVoice | None) -> None:
        if self._stream is not None:
            raise Refusal("synthesize-start while a stream is open", "stream-open")
        try:
            name, lang = self._server.choose_voice(voice)
        except Refusal:
            self._stream = _TextStream(None, None, refused=True)
            raise
        self._stream = _TextStream(name, lang, refused=False)

    async def _stream_text(self, stream: _TextStream, text: str) -> None:
        if stream.refused:
            return
        sentences, stream.text = complete_sentences(stream.text + text)
        for sentence in sentences:
            await self._speak_or_refuse(sentence, stream.voice, stream.lang)
        limit = self._server.max_text_chars()
        if len(stream.text) > limit:
            stream.text = ""
            raise Refusal(f"text too long: no sentence end within {limit} characters", "text-too-long")

    async def _speak(self, text: str, voice: str | None, lang: str | None) -> None:
        request = self._server.request(text, voice, lang, self._peer)
        reply = self._server.expect(request)
        self._pending.add(reply)
        await self._outbox.put(reply)  # waits while earlier answers are still being sent
        self._server.submit(request)

    async def _speak_or_refuse(self, text: str, voice: str | None, lang: str | None) -> None:
        """For streamed sentences: a refused one is answered with an error and the stream goes on."""
        try:
            await self._speak(text, voice, lang)
        except Refusal as refusal:
            await self._refuse(refusal)

    async def _refuse(self, refusal: Refusal) -> None:
        log.info("Wyoming request from %s refused: %s", self._peer, refusal.text)
        await self._outbox.put(refusal.event())

    async def _send(self) -> None:
        try:
            while True:
                item = await self._outbox.get()
                if isinstance(item, Event):
                    await self.write_event(item)
                    continue
                while (event := await item.next()) is not None:
                    await self.write_event(event)
                self._pending.discard(item)
        except (ConnectionError, OSError) as exc:
            log.info("Wyoming client %s went away: %s", self._peer, exc)

    async def disconnect(self) -> None:
        self._sender.cancel()
        if self._admitted:
            self._server.connection_closed()
        for reply in self._pending:  # nobody will take their audio: stop synthesising it
            self._server.forget(reply.request)
        self._pending.clear()


class WyomingServer:
    """The Wyoming server thread, and the pipeline's way back to its clients."""

    def __init__(self, settings: Settings, service: SpeechService, version: str) -> None:
        assert settings.wyoming.uri is not None
        self.settings = settings.wyoming
        self._node_id = settings.mqtt.node_id
        self._service = service
        self._version = version
        self._replies: dict[str, _Reply] = {}
        self._lock = threading.Lock()
        self._connections = 0  # touched on the server's loop only
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: AsyncServer | None = None
        self._thread: threading.Thread | None = None
        self._error: Exception | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Listen (and announce, if configured); a port that cannot be used stops start-up."""
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="gsv-wyoming", daemon=True)
        self._thread.start()
        ready.wait()
        if self._error is not None:
            self._thread.join()
            if isinstance(self._error, ConfigError):
                raise self._error
            raise ConfigError(f"wyoming.uri: cannot serve {self.settings.uri}: {self._error}") from self._error
        log.info("Wyoming server on %s", self.settings.uri)

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._listen())
        except Exception as exc:  # the port is taken, the socket path unwritable, zeroconf missing...
            self._error = exc
            loop.run_until_complete(self._close())
            loop.close()
            ready.set()
            return
        self._loop = loop
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._close())
            loop.close()

    async def _listen(self) -> None:
        assert self.settings.uri is not None
        server = AsyncServer.from_uri(self.settings.uri)
        await server.start(self._connect)
        self._server = server
        if self.settings.zeroconf:
            await self._announce()

    async def _announce(self) -> None:
        try:
            from wyoming.zeroconf import HomeAssistantZeroconf
        except ImportError as exc:
            raise ConfigError("wyoming.zeroconf needs the zeroconf package: pip install 'gsv-edge[zeroconf]'") from exc
        address = urlparse(self.settings.uri)
        host = address.hostname if address.hostname not in ("0.0.0.0", "::") else None  # None: the LAN address
        assert address.port is not None
        await HomeAssistantZeroconf(port=address.port, name=self._node_id, host=host).register_server()
        log.info("announced _wyoming._tcp as %s", self._node_id)

    async def _close(self) -> None:
        if self._server is not None:
            await self._server.stop()
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> _Connection:
        admitted = self._connections < self.settings.max_connections
        if admitted:
            self._connections += 1
        else:
            log.warning("refusing a Wyoming connection: %d already open", self._connections)
        return _Connection(reader, writer, self, admitted)

    def connection_closed(self) -> None:
        self._connections -= 1

    # -- what a connection asks for -------------------------------------------------------------

    def info(self) -> Info:
        engine = self._service.engine
        neural = engine is not self._service.fallback
        spoken = self._spoken()
        voices = [
            TtsVoice(
                name=voice.name,
                attribution=ESPEAK_ATTRIBUTION if by_fallback else GSV_ATTRIBUTION,
                installed=True,
                description=voice.description or voice.name,
                version=None,
                languages=wyoming_languages(voice.languages, spoken),
            )
            for voice, by_fallback in self._service.offered_voices()
        ]
        program = TtsProgram(
            name="gsv-edge",
            attribution=GSV_ATTRIBUTION if neural else ESPEAK_ATTRIBUTION,
            installed=True,
            description=f"{engine.name} on the gsv-edge speech appliance",
            version=self._version,
            voices=voices,
            supports_synthesize_streaming=True,
        )
        return Info(tts=[program])

    def _spoken(self) -> list[str]:
        """The languages the engine reads here (the optional ones only with their extra installed)."""
        unspoken = self._service.intake_policy().unspoken
        return [language for language in SEGMENT_LANGUAGES if language not in unspoken]

    def choose_voice(self, voice: SynthesizeVoice | None) -> tuple[str | None, str | None]:
        """(voice, lang) for a request: a named voice must be offered; a language alone picks the first
        offered voice speaking it, else goes to the engine as the text's language."""
        offered = self._service.offered_voices()
        if voice is not None and voice.name is not None:
            if all(info.name != voice.name for info, _ in offered):
                raise Refusal(f"unknown voice {voice.name!r}: describe lists the voices", "unknown-voice")
            return voice.name, None
        if voice is not None and voice.language:
            wanted = voice.language.lower().replace("_", "-")
            spoken = self._spoken()
            for info, _ in offered:
                codes = [code.lower() for code in wyoming_languages(info.languages, spoken)]
                if wanted in codes or wanted.split("-")[0] in codes:  # read as that language, not the voice's
                    mode = language_mode(voice.language)
                    return info.name, None if mode == "auto" else mode
            return None, voice.language
        return None, None

    def max_text_chars(self) -> int:
        return self._service.intake_policy().max_text_chars

    def request(self, text: str, voice: str | None, lang: str | None, client: str) -> Request:
        """The queued request, checked exactly as an MQTT ``say`` is (text limits, names, language)."""
        policy = self._service.intake_policy()
        say: dict[str, Any] = {"text": text, "priority": self.settings.priority, "output": "publish", "chime": False}
        if voice is not None:
            say["voice"] = voice
        if lang is not None:
            say["lang"] = lang
        try:
            request = parse_native(json.dumps(say).encode(), policy)
        except RejectedPayload as rejection:
            raise Refusal(rejection.reason, "invalid-request") from rejection
        return dataclasses.replace(request, source="wyoming", client=client)

    def expect(self, request: Request) -> _Reply:
        reply = _Reply(request, asyncio.get_running_loop())
        with self._lock:
            self._replies[request.id] = reply
        return reply

    def submit(self, request: Request) -> None:
        self._service.submit(request)

    def forget(self, request: Request) -> None:
        """The client is gone: its request is taken out of the queue, or its synthesis stopped."""
        with self._lock:
            self._replies.pop(request.id, None)
        self._service.cancel(request, CLIENT_GONE)

    # -- what the pipeline hands back (its threads) ---------------------------------------------

    def open(self, request: Request, sample_rate: int) -> AudioStream:
        with self._lock:
            reply = self._replies.get(request.id)
        if reply is None:
            return Discard()
        reply.started = True
        reply.put(AudioStart(sample_rate, WIDTH, CHANNELS).event())
        return _ReplyStream(reply, sample_rate, self.settings.samples_per_chunk, self.settings.sentence_silence_s)

    def on_event(self, event: events.Event) -> None:
        """A Wyoming request's terminal event ends the answer: ``audio-stop`` after audio, an ``error`` naming
        what went wrong."""
        request, kind, fields = event.request, event.kind, event.fields
        if request is None or request.source != "wyoming" or not is_terminal(kind, fields):
            return
        with self._lock:
            reply = self._replies.pop(request.id, None)
        if reply is None:
            return
        if kind is not EventKind.DONE:
            reply.put(Error(str(fields.get("reason", kind.value)), kind.value).event())
        if reply.started:
            reply.put(AudioStop().event())
        reply.put(None)
