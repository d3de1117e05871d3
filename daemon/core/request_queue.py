"""Speech requests and the queue that orders them.

The pipeline only talks to :class:`RequestQueue`, so a durable (SQLite) queue can replace the
in-memory one without touching the rest of the daemon.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal, Protocol

from daemon.speech.synthesizer import Sampling
from daemon.vocabulary import PRIORITY_RANK, AudioFormat, Output, Priority, Source


@dataclass(frozen=True)
class Part:
    """One step of a multi-part announcement: the chime, a pause, or a text in its own voice, language and
    speed (the request's where the part named none, settled at intake)."""

    chime: bool = False
    text: str | None = None
    voice: str | None = None
    lang: str | None = None
    speed: float = 1.0
    pause_s: float | None = None


@dataclass
class Request:
    """One announcement, whatever protocol it came in on.

    With ``parts`` it is a sequence played ``repeat`` times with ``repeat_gap_s`` of silence between: still one
    request (one set of events, one audit row); ``text`` then holds its texts, one a line, for the record.
    """

    id: str
    text: str
    expires_at: float  # wall-clock seconds (time.time())
    voice: str | None = None
    lang: str | None = None
    priority: Priority = "normal"
    interrupt: bool = False
    volume: float = 1.0
    speed: float = 1.0
    chime: bool = False
    output: Output = "publish"
    format: AudioFormat = "wav"
    source: Source = "native"
    site_id: str | None = None  # Hermes siteId
    session_id: str | None = None  # Hermes sessionId
    topic: str | None = None  # MQTT topic it arrived on (for the audit trail)
    client: str | None = None  # Wyoming or HTTP peer address; MQTT 3.1.1 does not say who published
    token_name: str | None = None  # the HTTP token that asked (its name, never the secret)
    sampling: Sampling | None = None  # its own token sampling (api_v2's fields); None: the engine's defaults
    row: int | None = None  # its row in the state database once admitted (ids may repeat, rows do not)
    parts: tuple[Part, ...] = ()
    repeat: int = 1
    repeat_gap_s: float = 0.0
    zones: tuple[str, ...] = ()  # the [[zones]] it plays in (each its own device or topic); none: the one output
    received_at: float = field(default_factory=time.monotonic)

    @property
    def rank(self) -> int:
        return PRIORITY_RANK[self.priority]

    @property
    def occupies_speaker(self) -> bool:
        """Local playback, or a Hermes site's audio server playing our playBytes; only these get cut."""
        return self.output != "publish" or self.source == "hermes"

    @property
    def answers_a_connection(self) -> bool:
        """Its audio goes back over a connection (Wyoming, an HTTP response): when the daemon restarts, that
        connection is gone and nobody is left to hear it."""
        return self.source == "wyoming" or (self.source == "http" and self.output == "publish")

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expires_at


@dataclass(frozen=True)
class Admission:
    """What :meth:`RequestQueue.put` did: queued, ignored as a duplicate, or refused as full.

    ``displaced`` is a lower-priority request pushed out to make room for this one; ``state`` is, for a
    duplicate, the state of the request it repeats where the queue knows it.
    """

    status: Literal["queued", "duplicate", "full"]
    displaced: Request | None = None
    state: str | None = None


class RequestQueue(Protocol):
    def put(self, request: Request) -> Admission: ...

    def requeue(self, request: Request) -> None:
        """Put a preempted request back at the front of its priority band (no dedup, no bound)."""
        ...

    def pop(self) -> Request | None:
        """The most urgent, oldest request, or None when empty; never blocks."""
        ...

    def remove(self, request: Request) -> bool:
        """Take ``request`` out of the queue; False if it is not there."""
        ...

    def remove_expired(self, now: float | None = None) -> list[Request]: ...

    def waiting(self) -> list[Request]:
        """The queued requests in the order they will be taken."""
        ...

    def __len__(self) -> int: ...


class MemoryQueue:
    """Bounded priority queue with duplicate-id suppression, safe to use from several threads.

    Order: priority, then interrupting requests first, then arrival.
    """

    def __init__(self, max_depth: int, dedup_window_s: float) -> None:
        self._max_depth = max_depth
        self._dedup_window_s = dedup_window_s
        self._heap: list[tuple[int, bool, int, Request]] = []  # (rank, not interrupt, seq, request)
        self._seq = itertools.count()
        self._front = itertools.count(-1, -1)
        self._seen: OrderedDict[str, float] = OrderedDict()  # id -> monotonic time first seen
        self._lock = threading.Lock()

    def put(self, request: Request) -> Admission:
        with self._lock:
            now = time.monotonic()
            while self._seen and next(iter(self._seen.values())) < now - self._dedup_window_s:
                self._seen.popitem(last=False)
            if self._dedup_window_s > 0 and request.id in self._seen:
                return Admission("duplicate")
            displaced = None
            if len(self._heap) >= self._max_depth:
                worst = max(self._heap, key=lambda entry: entry[:3])
                if worst[0] <= request.rank:
                    return Admission("full")
                self._heap.remove(worst)
                heapq.heapify(self._heap)
                displaced = worst[3]
            if self._dedup_window_s > 0:
                self._seen[request.id] = now
            heapq.heappush(self._heap, (request.rank, not request.interrupt, next(self._seq), request))
            return Admission("queued", displaced)

    def requeue(self, request: Request) -> None:
        with self._lock:
            heapq.heappush(self._heap, (request.rank, not request.interrupt, next(self._front), request))

    def pop(self) -> Request | None:
        with self._lock:
            return heapq.heappop(self._heap)[3] if self._heap else None

    def remove(self, request: Request) -> bool:
        with self._lock:
            kept = [entry for entry in self._heap if entry[3] is not request]
            if len(kept) == len(self._heap):
                return False
            self._heap = kept
            heapq.heapify(self._heap)
            return True

    def remove_expired(self, now: float | None = None) -> list[Request]:
        with self._lock:
            expired = [entry[3] for entry in self._heap if entry[3].expired(now)]
            if expired:
                self._heap = [entry for entry in self._heap if not entry[3].expired(now)]
                heapq.heapify(self._heap)
            return expired

    def waiting(self) -> list[Request]:
        with self._lock:
            return [entry[3] for entry in sorted(self._heap, key=lambda entry: entry[:3])]

    def __len__(self) -> int:
        with self._lock:
            return len(self._heap)
