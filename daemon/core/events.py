"""Lifecycle events of a request, as published on ``<prefix>/<node_id>/events``.

Every request ends in exactly one terminal event (done, failed, expired or rejected); a
``failed`` event with ``retrying: true`` is the one exception: it reports a device error and
the request lives on. ``duplicate`` answers a repeat of a request already admitted (the same id
and content, e.g. a QoS 1 redelivery); it ends nothing, as the original has its own events.
"""

from __future__ import annotations

import time
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


class EventSink(Protocol):
    def emit(self, request: Request, kind: EventKind, **fields: Any) -> None: ...
