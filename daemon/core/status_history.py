"""The last hours of timings and the audio device's health, kept in memory for the console's Status page.

Fed by the event bus like the audit log and the metrics, so the plot shows exactly what the events said: each
request that ended ``done`` is one point with its time to first audio (its ``first_audio`` event) and its
real-time factor (its ``done`` event). Points older than :data:`WINDOW_S`, or beyond the newest
:data:`MAX_POINTS`, are dropped; a restart starts an empty plot (the audit trail keeps the long history).

The audio device is judged by the pipeline's own reports: a ``failed`` event with ``retrying`` is a device
error, and the device counts as failing until a request that plays on it starts playing again.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from daemon.core.events import Event, EventKind, is_terminal

WINDOW_S = 6 * 3600  # how far back the plot reaches
MAX_POINTS = 2000  # a busy box's newest requests within the window; memory stays bounded


@dataclass(frozen=True)
class Point:
    ts: float  # when the request ended (its done event)
    first_audio_ms: int | None
    rtf: float | None
    engine: str | None
    cached: bool


@dataclass(frozen=True)
class DeviceHealth:
    errors: int  # device errors (each retry) since start
    failing: bool  # the last attempt to play failed, and none has played since
    last_error: str | None
    last_error_ts: float | None


class StatusHistory:
    """A bus subscriber; safe to read from any thread."""

    def __init__(self) -> None:
        self._points: deque[Point] = deque(maxlen=MAX_POINTS)
        self._first_audio: dict[int, int] = {}  # id(request) -> latency_ms, until the request ends
        self._device = DeviceHealth(0, False, None, None)
        self._lock = threading.Lock()

    def on_event(self, event: Event) -> None:
        request = event.request
        if request is None:
            return
        fields = event.fields
        key = id(request)
        with self._lock:
            if event.kind is EventKind.FIRST_AUDIO and "latency_ms" in fields:
                self._first_audio[key] = int(fields["latency_ms"])
                if request.output in ("play", "both") and self._device.failing:
                    self._device = DeviceHealth(self._device.errors, False, self._device.last_error,
                                                self._device.last_error_ts)
            elif event.kind is EventKind.FAILED and fields.get("retrying"):
                self._device = DeviceHealth(self._device.errors + 1, True, str(fields.get("reason", "")),
                                            round(time.time(), 3))
            if not is_terminal(event.kind, fields):
                return
            latency = self._first_audio.pop(key, None)
            if event.kind is EventKind.DONE:
                self._points.append(Point(round(time.time(), 3), latency, fields.get("rtf"), fields.get("engine"),
                                          bool(fields.get("cached"))))

    def points(self, now: float, since: float | None = None) -> list[dict[str, Any]]:
        """The points within :data:`WINDOW_S` of ``now`` (wall clock), only those after ``since`` when given."""
        start = max(now - WINDOW_S, since if since is not None else float("-inf"))
        with self._lock:
            while self._points and self._points[0].ts < now - WINDOW_S:
                self._points.popleft()
            return [asdict(point) for point in self._points if point.ts > start]

    def audio_device(self) -> DeviceHealth:
        with self._lock:
            return self._device
