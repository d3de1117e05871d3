"""What the native REST API remembers of requests: states from events, and kept audio within its time and size."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from daemon.core.events import Event, EventKind
from daemon.core.request_queue import Request
from daemon.protocols.http import request_records
from daemon.protocols.http.request_records import SAY_ROUTE, RequestRecords, keeps_audio


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def say(request_id: str, output: str = "publish", fmt: str = "wav") -> Request:
    return Request(id=request_id, text="Hi.", expires_at=time.time() + 60, output=output, format=fmt,  # type: ignore[arg-type]
                   source="http", topic=SAY_ROUTE, token_name="kiosk")


def run(records: RequestRecords, request: Request, *kinds: EventKind, samples: int = 0) -> None:
    """Events in order; the audio (``samples`` of silence at 16 kHz) is delivered before the last one."""
    for index, kind in enumerate(kinds):
        if samples and index == len(kinds) - 1:
            stream = records.stream(request, 16000)
            stream.write(np.zeros(samples, np.float32))
            stream.close(threading.Event())
        records.on_event(Event(kind, {}, request=request), time.time())


def test_states_follow_events_and_a_duplicate_changes_nothing() -> None:
    records = RequestRecords(keep_s=60, max_audio_bytes=1 << 20)
    request = say("a")
    records.expect(request)
    run(records, request, EventKind.QUEUED, EventKind.STARTED)
    admission = records.admission(request)
    assert admission is not None and admission.kind is EventKind.QUEUED
    record = records.get("a")
    assert record is not None and record.state == "started" and record.ended_at is None
    repeat = say("a")
    records.expect(repeat)
    records.on_event(Event(EventKind.DUPLICATE, {"state": "started"}, request=repeat), time.time())
    duplicate = records.admission(repeat)
    assert duplicate is not None and duplicate.kind is EventKind.DUPLICATE
    retry = Event(EventKind.FAILED, {"retrying": True}, request=request)
    records.on_event(retry, time.time())
    assert [e["kind"] for e in record.events] == ["queued", "started"]  # a copy: it changes no more
    record = records.get("a")
    assert record is not None and record.state == "started"
    assert [e["kind"] for e in record.events] == ["queued", "started", "duplicate", "failed"]
    assert record.visible_to("kiosk", admin=False) and not record.visible_to("other", admin=False)
    assert not record.visible_to(None, admin=False) and record.visible_to(None, admin=True)


def test_kept_audio_is_encoded_as_asked() -> None:
    records = RequestRecords(keep_s=60, max_audio_bytes=1 << 20)
    wav, pcm = say("w"), say("p", fmt="pcm")
    run(records, wav, EventKind.QUEUED, EventKind.DONE, samples=1600)
    run(records, pcm, EventKind.QUEUED, EventKind.DONE, samples=1600)
    kept_wav, kept_pcm = records.get("w"), records.get("p")
    assert kept_wav is not None and kept_wav.audio is not None and kept_wav.audio[:4] == b"RIFF"
    assert kept_pcm is not None and kept_pcm.audio == bytes(3200) and kept_pcm.sample_rate == 16000
    assert records.audio_bytes == len(kept_wav.audio) + 3200 == 44 + 2 * 3200


def test_a_finished_request_is_forgotten_after_keep_s() -> None:
    clock = Clock()
    records = RequestRecords(keep_s=60, max_audio_bytes=1 << 20, clock=clock)
    run(records, say("old"), EventKind.QUEUED, EventKind.DONE, samples=1600)
    run(records, say("waiting"), EventKind.QUEUED)
    clock.now += 59
    assert records.get("old") is not None
    clock.now += 2
    assert records.get("old") is None and records.audio_bytes == 0
    assert records.get("waiting") is not None  # not finished: kept however long it waits


def test_kept_audio_stays_within_its_cap_the_oldest_going_first() -> None:
    records = RequestRecords(keep_s=60, max_audio_bytes=5000)
    for request_id in ("a", "b"):
        run(records, say(request_id, fmt="pcm"), EventKind.QUEUED, EventKind.DONE, samples=1500)  # 3000 bytes
    first, second = records.get("a"), records.get("b")
    assert first is not None and first.audio is None and "http.keep_audio_mb" in (first.audio_gone or "")
    assert second is not None and second.audio is not None and records.audio_bytes == 3000
    run(records, say("huge", fmt="pcm"), EventKind.QUEUED, EventKind.DONE, samples=3000)  # 6000 bytes: never fits
    huge = records.get("huge")
    assert huge is not None and huge.audio is None and "larger than" in (huge.audio_gone or "")
    assert records.audio_bytes == 3000


@pytest.mark.parametrize("kind", [EventKind.FAILED, EventKind.EXPIRED])
def test_a_request_that_does_not_end_done_keeps_no_audio(kind: EventKind) -> None:
    records = RequestRecords(keep_s=60, max_audio_bytes=1 << 20)
    run(records, say("cut"), EventKind.QUEUED, EventKind.STARTED, kind, samples=800)
    record = records.get("cut")
    assert record is not None and record.state == kind.value and record.audio is None
    assert record.audio_gone == f"the request ended {kind.value}" and records.audio_bytes == 0


def test_records_are_bounded_in_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(request_records, "MAX_RECORDS", 3)
    records = RequestRecords(keep_s=60, max_audio_bytes=1 << 20)
    for n in range(5):
        run(records, say(f"r{n}"), EventKind.QUEUED)
    assert [records.get(f"r{n}") is not None for n in range(5)] == [False, False, True, True, True]


def test_only_a_say_that_publishes_keeps_audio() -> None:
    assert keeps_audio(say("a")) and keeps_audio(say("b", output="both"))
    assert not keeps_audio(say("c", output="play"))
    speech = Request(id="d", text="Hi.", expires_at=0, source="http")  # OpenAI's and api_v2's: their response
    assert not keeps_audio(speech)
