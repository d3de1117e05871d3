"""What the native REST API remembers of requests: each one's state and events, and the audio kept for its caller.

Every request on the event bus gets a record (whatever protocol it came in on), so ``GET /v1/requests/{id}`` can
say where it is. A request of ``POST /v1/say`` whose output is ``publish`` (``response``) or ``both`` has its audio
kept, encoded as it asked (``format``), for ``GET /v1/requests/{id}/audio``: nobody waits on a connection for it;
while it is delivered, that route can also stream it as it comes (``stream=true``: the console plays it at once).
All of it is in memory: a finished request is forgotten ``http.keep_requests_s`` after its end, and the kept audio
of all requests together stays within ``http.keep_audio_mb`` (the oldest audio goes first). After a restart only
what the new run hears is known: a request resumed from the durable queue is known again from its ``queued``
event.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from daemon.audio.encoding import wav_header
from daemon.audio.wav import to_pcm16
from daemon.core.events import Event, EventKind, is_terminal
from daemon.core.pipeline import AudioStream
from daemon.core.request_queue import Request

SAY_ROUTE = "POST /v1/say"  # the topic of its requests (the audit trail's), which marks those that keep audio
MAX_EVENTS = 64  # per request, the latest: a failing audio device is retried for as long as the request lives
MAX_RECORDS = 1000  # the oldest record goes first beyond this


def keeps_audio(request: Request) -> bool:
    """Its audio is kept for its caller to fetch: a ``POST /v1/say`` that publishes (no response waits for it)."""
    return request.source == "http" and request.topic == SAY_ROUTE and request.output in ("publish", "both")


@dataclass
class Record:
    request: Request
    state: str = "queued"
    events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_EVENTS))
    ended_at: float | None = None  # the clock's time of its terminal event
    audio: bytes | None = None  # encoded as the request asked, once synthesised
    sample_rate: int | None = None
    audio_gone: str | None = None  # why there is no audio (any more)

    def visible_to(self, token_name: str | None, admin: bool) -> bool:
        return may_see(self.request, token_name, admin)


def may_see(request: Request, token_name: str | None, admin: bool) -> bool:
    """An admin sees every request; anyone else those they made over HTTP (anonymous callers are one)."""
    return admin or (request.source == "http" and request.token_name == token_name)


class RequestRecords:
    """Records by request id; safe to use from the pipeline's threads and the server's event loop."""

    def __init__(self, keep_s: float, max_audio_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.keep_s = keep_s
        self.max_audio_bytes = max_audio_bytes
        self._clock = clock
        self._records: OrderedDict[str, Record] = OrderedDict()
        self._audio_bytes = 0
        self._expected: dict[int, tuple[Request, Event | None]] = {}
        self._delivering: dict[str, KeptStream] = {}  # request id -> its audio while the pipeline delivers it
        self._lock = threading.Lock()

    # -- what a handler asks ----------------------------------------------------------------------

    def expect(self, request: Request) -> None:
        """Catch the first event about ``request`` (its admission: queued, duplicate, rejected or expired)."""
        with self._lock:
            self._expected[id(request)] = (request, None)

    def admission(self, request: Request) -> Event | None:
        """The first event about ``request`` since :meth:`expect` (None if none came)."""
        with self._lock:
            _, event = self._expected.pop(id(request), (request, None))
            return event

    def get(self, request_id: str) -> Record | None:
        """A copy of the request's record as it is now (the pipeline's threads go on changing the record)."""
        with self._lock:
            self._prune()
            record = self._records.get(request_id)
            return None if record is None else dataclasses.replace(record, events=deque(record.events))

    def delivering(self, request: Request) -> KeptStream | None:
        """The request's audio as it is delivered; None before delivery opens and once it has closed."""
        with self._lock:
            stream = self._delivering.get(request.id)
            return stream if stream is not None and stream.request is request else None

    @property
    def audio_bytes(self) -> int:
        with self._lock:
            return self._audio_bytes

    # -- what the bus and the pipeline hand over (their threads) ---------------------------------

    def on_event(self, event: Event, ts: float) -> None:
        """Record an event about a request; ``ts`` is the one its published payload carries."""
        request = event.request
        if request is None:
            return
        entry = {"kind": event.kind.value, "ts": ts, "fields": dict(event.fields)}
        with self._lock:
            expected = self._expected.get(id(request))
            if expected is not None and expected[0] is request and expected[1] is None:
                self._expected[id(request)] = (request, event)
            record = self._records.get(request.id)
            if event.kind is EventKind.DUPLICATE:  # about the original: it changes nothing
                if record is not None:
                    record.events.append(entry)
                return
            if record is None or record.request is not request:
                if record is not None:
                    self._drop_audio(record, "the request was replaced by another with its id")
                record = self._records[request.id] = Record(request)
                self._records.move_to_end(request.id)
            record.events.append(entry)
            self._advance(record, event)
            self._prune()

    def _advance(self, record: Record, event: Event) -> None:
        if event.kind is EventKind.QUEUED:
            record.state = "queued"
        elif event.kind is EventKind.STARTED:
            record.state = "started"
        elif is_terminal(event.kind, event.fields):
            record.state = event.kind.value
            record.ended_at = self._clock()
            if event.kind is not EventKind.DONE and record.audio is not None:
                self._drop_audio(record, f"the request ended {record.state}")

    def stream(self, request: Request, sample_rate: int) -> AudioStream:
        """Where the pipeline delivers the audio of a request whose audio is kept."""
        stream = KeptStream(self, request, sample_rate)
        with self._lock:
            self._delivering[request.id] = stream
        return stream

    def delivered(self, stream: KeptStream, pcm16: bytes, cancelled: bool) -> None:
        """Delivery ended: the audio is kept (unless cancelled) before the stream stops being found."""
        if not cancelled:
            self.keep(stream.request, pcm16, stream.sample_rate)
        with self._lock:
            if self._delivering.get(stream.request.id) is stream:
                del self._delivering[stream.request.id]

    def keep(self, request: Request, pcm16: bytes, sample_rate: int) -> None:
        """Keep a request's delivered audio, dropping the oldest kept audio to stay within the cap."""
        data = wav_header(sample_rate, len(pcm16)) + pcm16 if request.format == "wav" else pcm16
        with self._lock:
            record = self._records.get(request.id)
            if record is None or record.request is not request:
                return  # forgotten meanwhile
            if len(data) > self.max_audio_bytes:
                record.audio_gone = "the audio is larger than http.keep_audio_mb"
                return
            for other in list(self._records.values()):
                if self._audio_bytes + len(data) <= self.max_audio_bytes:
                    break
                if other.audio is not None:
                    self._drop_audio(other, "dropped to keep the kept audio within http.keep_audio_mb")
            record.audio, record.sample_rate = data, sample_rate
            self._audio_bytes += len(data)

    # -- internals ------------------------------------------------------------------------------

    def _drop_audio(self, record: Record, why: str) -> None:
        if record.audio is not None:
            self._audio_bytes -= len(record.audio)
            record.audio = None
        record.audio_gone = why

    def _prune(self) -> None:
        horizon = self._clock() - self.keep_s
        for request_id, record in list(self._records.items()):
            if len(self._records) > MAX_RECORDS or (record.ended_at is not None and record.ended_at < horizon):
                self._drop_audio(record, "forgotten")
                del self._records[request_id]


class KeptStream:
    """A kept request's audio as 16-bit PCM while it is delivered (readable meanwhile); kept once delivery ends."""

    def __init__(self, records: RequestRecords, request: Request, sample_rate: int) -> None:
        self._records = records
        self.request = request
        self.sample_rate = sample_rate
        self._pcm = bytearray()
        self._ended = False
        self._lock = threading.Lock()

    def write(self, audio: np.ndarray) -> None:
        pcm = to_pcm16(np.asarray(audio, dtype=np.float32))
        with self._lock:
            self._pcm += pcm

    def read(self, offset: int) -> tuple[bytes, bool]:
        """The PCM from byte ``offset`` on, and whether delivery has ended (nothing more will come)."""
        with self._lock:
            return bytes(self._pcm[offset:]), self._ended

    def close(self, cancel: threading.Event) -> None:
        with self._lock:
            self._ended = True
            pcm = bytes(self._pcm)
        self._records.delivered(self, pcm, cancel.is_set())
