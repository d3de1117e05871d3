"""The Status page's memory of the last hours: a point per request done, bounded in time and count, and the audio
device judged by the pipeline's own events."""

from __future__ import annotations

import time

from daemon.core import status_history
from daemon.core.events import Event, EventKind
from daemon.core.request_queue import Request
from daemon.core.status_history import WINDOW_S, StatusHistory


def _request(request_id: str, output: str = "publish") -> Request:
    return Request(id=request_id, text="Hello.", expires_at=time.time() + 60, output=output)  # type: ignore[arg-type]


def _speak(history: StatusHistory, request: Request, latency_ms: int, rtf: float | None,
           end: EventKind = EventKind.DONE) -> None:
    history.on_event(Event(EventKind.FIRST_AUDIO, {"latency_ms": latency_ms}, request=request))
    history.on_event(Event(end, {"rtf": rtf, "engine": "tone"} if end is EventKind.DONE else {"reason": "cut"},
                           request=request))


def test_a_point_per_request_done_with_its_first_audio_and_rtf() -> None:
    history = StatusHistory()
    _speak(history, _request("a"), 120, 0.25)
    _speak(history, _request("cut"), 90, None, end=EventKind.FAILED)  # failed: no point
    _speak(history, _request("b"), 80, None)
    now = time.time()
    points = history.points(now)
    assert [(p["first_audio_ms"], p["rtf"], p["engine"]) for p in points] == [(120, 0.25, "tone"), (80, None, "tone")]
    assert history.points(now, since=points[0]["ts"] - 1e-3)[-1] == points[-1]
    assert history.points(now + WINDOW_S + 1) == []  # older than the window: gone
    assert history.points(now) == []


def test_the_newest_points_are_kept_when_there_are_too_many(monkeypatch) -> None:
    monkeypatch.setattr(status_history, "MAX_POINTS", 3)
    history = StatusHistory()
    for n in range(5):
        _speak(history, _request(f"r{n}"), n, 0.1)
    assert [p["first_audio_ms"] for p in history.points(time.time())] == [2, 3, 4]


def test_the_audio_device_fails_until_a_request_plays_on_it_again() -> None:
    history = StatusHistory()
    played = _request("p", output="play")
    for attempt in (1, 2):
        history.on_event(Event(EventKind.FAILED, {"reason": "audio device error: I/O", "retrying": True,
                                                  "attempt": attempt}, request=played))
    device = history.audio_device()
    assert (device.errors, device.failing, device.last_error) == (2, True, "audio device error: I/O")
    _speak(history, _request("published"), 10, 0.1)  # sent back over MQTT: says nothing about the device
    assert history.audio_device().failing is True
    _speak(history, played, 10, 0.1)
    assert history.audio_device().failing is False and history.audio_device().errors == 2
