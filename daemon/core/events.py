"""Events, as published on ``<prefix>/<node_id>/events``: a request's lifecycle, and the daemon's own news.

Every request ends in exactly one terminal event (done, failed, expired or rejected); a
``failed`` event with ``retrying: true`` is the one exception: it reports a device error and
the request lives on. ``duplicate`` answers a repeat of a request already admitted (the same id
and content, e.g. a QoS 1 redelivery); it ends nothing, as the original has its own events.

The daemon's own events carry no request: ``engine_down`` (a configured bundle cannot be used),
``reloaded`` / ``reload_refused``, a voice registration's ``voice_registered`` or ``rejected`` (with
the registration's id), and a schedule change's ``schedule_added`` / ``schedule_removed`` or ``rejected`` (with
the change's id). All of them go through one :class:`~daemon.core.bus.EventBus`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from daemon.core.request_queue import Request


class EventKind(str, Enum):
    QUEUED = "queued"
    STARTED = "started"
    FIRST_AUDIO = "first_audio"
    DONE = "done"
    FAILED = "failed"
    EXPIRED = "expired"
    REJECTED = "rejected"
    DUPLICATE = "duplicate"
    ENGINE_DOWN = "engine_down"
    RELOADED = "reloaded"
    RELOAD_REFUSED = "reload_refused"
    VOICE_REGISTERED = "voice_registered"
    SCHEDULE_ADDED = "schedule_added"
    SCHEDULE_REMOVED = "schedule_removed"


def is_terminal(kind: EventKind, fields: dict[str, Any]) -> bool:
    if kind is EventKind.FAILED:
        return not fields.get("retrying", False)
    return kind in (EventKind.DONE, EventKind.EXPIRED, EventKind.REJECTED)


def is_durable(kind: EventKind, fields: dict[str, Any]) -> bool:
    """Kept in the outbox until the broker has it: an event that admits, starts, ends or repeats a request.
    ``first_audio`` and a retrying failure only report progress; a crash loses them harmlessly."""
    return kind in (EventKind.QUEUED, EventKind.STARTED, EventKind.DUPLICATE) or is_terminal(kind, fields)


def event_payload(request_id: str | None, kind: EventKind, **fields: Any) -> dict[str, Any]:
    return {"id": request_id, "event": kind.value, "ts": round(time.time(), 3), **fields}


@dataclass(frozen=True)
class PayloadOrigin:
    """Where a payload refused before it became a request came from, as far as it could be read."""

    protocol: str
    topic: str | None = None
    site_id: str | None = None  # Hermes
    session_id: str | None = None  # Hermes
    client: str | None = None  # HTTP peer address
    token_name: str | None = None  # HTTP token


@dataclass(frozen=True)
class Event:
    """One event: about ``request``; or, without one, about the daemon, a voice registration (``id``) or a
    payload refused before it became a request (``refused``, with the id it carried)."""

    kind: EventKind
    fields: dict[str, Any] = field(default_factory=dict)
    request: Request | None = None
    id: str | None = None
    refused: PayloadOrigin | None = None

    @property
    def request_id(self) -> str | None:
        return self.request.id if self.request is not None else self.id

    @property
    def terminal(self) -> bool:
        return self.request is not None and is_terminal(self.kind, self.fields)

    def payload(self) -> dict[str, Any]:
        """The JSON body on the events topic; a request's event says which protocol the request came in on."""
        if self.request is None:
            source = {"source": self.refused.protocol} if self.refused is not None else {}
            return event_payload(self.id, self.kind, **source, **self.fields)
        return event_payload(self.request.id, self.kind, source=self.request.source, **self.fields)


class EventSink(Protocol):
    def emit(self, request: Request, kind: EventKind, **fields: Any) -> None: ...
