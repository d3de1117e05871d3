"""The one road every event travels, and the one that takes a request's audio back where it came from.

:class:`EventBus`: an event is first recorded with the messages announcing it (the request's state and the
MQTT outbox, in one transaction), then each subscriber hears it (audit log, metrics, Wyoming), then it is
announced (published over MQTT). So a ``done`` is on disk and audited before anyone hears of it, and a crash
between the two re-sends it from the outbox. :class:`OutputRouter`: the pipeline hands a request's audio to the
protocol the request arrived on.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from daemon.core.events import Event, EventKind
from daemon.core.outbox import Message
from daemon.core.pipeline import AudioPublisher, AudioStream
from daemon.core.request_queue import Request

Announcement = list[tuple[str, dict[str, Any]]]  # (topic, JSON body) messages that announce one event


class Journal(Protocol):
    def record(self, event: Event, messages: Announcement) -> list[Message]:
        """Record what ``event`` changes and the messages announcing it; returns the messages to send."""
        ...


class Announcer(Protocol):
    def messages(self, event: Event) -> Announcement: ...

    def announce(self, event: Event, messages: list[Message]) -> None: ...


class Subscriber(Protocol):
    def on_event(self, event: Event) -> None: ...


class EventBus:
    """Record, tell each subscriber, announce: for every event, in that order. Safe to call from any thread."""

    def __init__(self, journal: Journal, announcer: Announcer) -> None:
        self._journal = journal
        self._announcer = announcer
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    def subscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            self._subscribers.append(subscriber)

    def publish(self, event: Event) -> None:
        recorded = self._journal.record(event, self._announcer.messages(event))
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            subscriber.on_event(event)
        self._announcer.announce(event, recorded)

    def emit(self, request: Request, kind: EventKind, **fields: Any) -> None:
        """A request's event (the pipeline's :class:`~daemon.core.events.EventSink`)."""
        self.publish(Event(kind, fields, request=request))


class OutputRouter:
    """Sends a request's audio back over the protocol it came in on (``Request.source``), else the default."""

    def __init__(self, default: AudioPublisher) -> None:
        self._default = default
        self._routes: dict[str, AudioPublisher] = {}

    def route(self, source: str, publisher: AudioPublisher) -> None:
        self._routes[source] = publisher

    def open(self, request: Request, sample_rate: int) -> AudioStream:
        return self._routes.get(request.source, self._default).open(request, sample_rate)
