"""The pipeline on its own: in-memory queue, tone engines, a recording event sink and publisher, a sound card that
fails on demand. No broker, no daemon: each rule (preemption, fallback, device retry, drain, cache) in isolation.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon.audio.output import AudioDeviceError
from daemon.config import AudioSettings
from daemon.core.audio_cache import AudioCache
from daemon.core.events import EventKind, is_terminal
from daemon.core.pipeline import STOPPING, Pipeline
from daemon.core.request_queue import MemoryQueue, Request
from tests.doubles import ToneEngine, failing_engine

WAIT_S = 10.0


class Events:
    """Every event the pipeline emits, in order, and a way to wait for one."""

    def __init__(self) -> None:
        self.log: list[tuple[str, EventKind, dict[str, Any]]] = []
        self._cond = threading.Condition()

    def emit(self, request: Request, kind: EventKind, **fields: Any) -> None:
        with self._cond:
            self.log.append((request.id, kind, fields))
            self._cond.notify_all()

    def of(self, request_id: str) -> list[tuple[EventKind, dict[str, Any]]]:
        with self._cond:
            return [(kind, fields) for rid, kind, fields in self.log if rid == request_id]

    def kinds(self, request_id: str) -> list[str]:
        return [kind.value for kind, _ in self.of(request_id)]

    def wait(self, request_id: str, kind: EventKind | None = None) -> dict[str, Any]:
        """The request's terminal event (or its first ``kind``); fails the test after WAIT_S."""
        deadline = time.monotonic() + WAIT_S
        with self._cond:
            while time.monotonic() < deadline:
                for rid, k, fields in self.log:
                    if rid == request_id and (k is kind if kind is not None else is_terminal(k, fields)):
                        return {"event": k.value, **fields}
                self._cond.wait(0.05)
        raise AssertionError(f"no {kind or 'terminal'} event for {request_id}: {self.kinds(request_id)}")


class Published:
    """The publisher side (MQTT, Wyoming): each request's audio as delivered."""

    def __init__(self) -> None:
        self.audio: dict[str, list[np.ndarray]] = {}

    def open(self, request: Request, sample_rate: int) -> Any:
        chunks = self.audio.setdefault(request.id, [])

        class Stream:
            def write(self, audio: np.ndarray) -> None:
                chunks.append(audio.copy())

            def close(self, cancel: threading.Event) -> None:
                pass

        return Stream()


class SoundCard:
    """Plays instantly into a list; fails the next ``failures`` calls with a device error."""

    def __init__(self, failures: int = 0, pace: threading.Semaphore | None = None) -> None:
        self.failures = failures
        self.pace = pace
        self.played: list[np.ndarray] = []
        self.attempts = 0

    def play(self, chunks: Iterable[np.ndarray], sample_rate: int, cancel: threading.Event,
             on_start: Callable[[], None]) -> None:
        self.attempts += 1
        if self.failures:
            self.failures -= 1
            raise AudioDeviceError("hw:9: device unplugged")
        for chunk in chunks:
            if self.pace is not None:
                self.pace.acquire(timeout=WAIT_S)
            if cancel.is_set():
                return
            on_start()
            self.played.append(chunk)


def request(rid: str, text: str = "One. Two.", **fields: Any) -> Request:
    return Request(id=rid, text=text, expires_at=time.time() + 60, **fields)


class Rig:
    def __init__(self, engine: ToneEngine | None = None, fallback: ToneEngine | None = None,
                 card: SoundCard | None = None, cache: AudioCache | None = None, events: Events | None = None) -> None:
        self.queue = MemoryQueue(max_depth=8, dedup_window_s=0)
        self.engine = engine or ToneEngine(seconds=0.05)
        self.fallback = fallback or ToneEngine(seconds=0.05, name="fallback")
        self.events = events or Events()
        self.published = Published()
        self.card = card
        settings = AudioSettings(retry_initial_s=0.01, retry_max_s=0.02)
        self.pipeline = Pipeline(self.queue, self.engine, self.fallback, self.events, self.published,
                                 card, settings, cache)  # type: ignore[arg-type]

    def __enter__(self) -> Rig:
        self.pipeline.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.pipeline.stop()


def test_a_request_is_spoken_and_its_events_come_in_order() -> None:
    with Rig() as rig:
        rig.pipeline.submit(request("a"))
        done = rig.events.wait("a")
    assert rig.events.kinds("a") == ["queued", "started", "first_audio", "done"]
    assert done["engine"] == "tone" and not done["fallback"]
    delivered = np.concatenate(rig.published.audio["a"])
    assert done["speech_ms"] == round(delivered.size / ToneEngine.sample_rate * 1000)
    assert rig.engine.sentences == ["One", "Two"]


class SlowToQueue(Events):
    """Takes longer to hear ``queued`` than the synthesis thread waits between looks at the queue."""

    def emit(self, request: Request, kind: EventKind, **fields: Any) -> None:
        if kind is EventKind.QUEUED:
            time.sleep(1.5)
        super().emit(request, kind, **fields)


def test_queued_is_out_before_synthesis_can_start() -> None:
    with Rig(events=SlowToQueue()) as rig:
        rig.pipeline.submit(request("a"))
        rig.events.wait("a")
    assert rig.events.kinds("a") == ["queued", "started", "first_audio", "done"]


def test_an_emergency_cuts_what_plays_and_goes_before_what_waits() -> None:
    pace = threading.Semaphore(0)
    card = SoundCard(pace=pace)
    with Rig(card=card) as rig:
        rig.pipeline.submit(request("long", "A. B. C. D.", output="play"))
        pace.release()
        rig.events.wait("long", EventKind.FIRST_AUDIO)
        rig.pipeline.submit(request("next", output="play"))
        rig.events.wait("next", EventKind.STARTED)  # synthesised, waiting for the speaker
        rig.pipeline.submit(request("fire", "Evacuate.", priority="emergency", output="play"))
        for _ in range(40):
            pace.release()
        cut = rig.events.wait("long")
        fire = rig.events.wait("fire")
        later = rig.events.wait("next")
    assert cut["event"] == "failed" and cut["reason"] == "interrupted by fire"
    assert fire["event"] == "done" and later["event"] == "done"
    requeued = [f for k, f in rig.events.of("next") if k is EventKind.QUEUED and f.get("requeued")]
    assert [f["reason"] for f in requeued] == ["preempted by fire"]
    order = [rid for rid, kind, _ in rig.events.log if kind is EventKind.DONE]
    assert order == ["fire", "next"]


def test_a_failing_engine_falls_back_and_says_so() -> None:
    with Rig(engine=failing_engine()) as rig:
        rig.pipeline.submit(request("f"))
        done = rig.events.wait("f")
    assert done["event"] == "done" and done["engine"] == "fallback"
    assert done["fallback"] is True and "model exploded" in done["fallback_reason"]


def test_when_the_fallback_fails_too_the_request_fails_with_the_reason() -> None:
    with Rig(engine=failing_engine(), fallback=failing_engine("also-broken")) as rig:
        rig.pipeline.submit(request("ff"))
        failed = rig.events.wait("ff")
    assert failed["event"] == "failed" and "synthesis failed" in failed["reason"]


def test_a_voice_the_engine_lacks_is_spoken_by_the_fallback() -> None:
    with Rig() as rig:
        rig.pipeline.submit(request("v", voice="espeak-en"))
        done = rig.events.wait("v")
    assert done["engine"] == "fallback" and not done["fallback"]


def test_a_failing_sound_card_is_retried_until_it_plays() -> None:
    card = SoundCard(failures=2)
    with Rig(card=card) as rig:
        rig.pipeline.submit(request("p", output="play"))
        done = rig.events.wait("p")
    retries = [f for k, f in rig.events.of("p") if k is EventKind.FAILED]
    assert [f["attempt"] for f in retries] == [1, 2] and all(f["retrying"] for f in retries)
    assert all("hw:9" in f["reason"] for f in retries)
    assert done["event"] == "done" and card.attempts == 3 and card.played


def test_a_sound_card_that_stays_away_expires_the_request() -> None:
    card = SoundCard(failures=10**6)
    with Rig(card=card) as rig:
        req = request("gone", output="play")
        req.expires_at = time.time() + 0.3
        rig.pipeline.submit(req)
        end = rig.events.wait("gone")
    assert end["event"] == "expired" and "audio device" in end["reason"]


def test_drain_ends_what_plays_and_keeps_what_waits() -> None:
    pace = threading.Semaphore(0)
    with Rig(card=SoundCard(pace=pace)) as rig:
        rig.pipeline.submit(request("now", "A. B. C.", output="play"))
        pace.release()
        rig.events.wait("now", EventKind.FIRST_AUDIO)
        rig.pipeline.submit(request("then", output="play"))
        rig.events.wait("then", EventKind.STARTED)
        drained = threading.Thread(target=rig.pipeline.drain, args=(WAIT_S,))
        drained.start()
        for _ in range(20):
            pace.release()
        drained.join(WAIT_S)
        now = rig.events.wait("now")
        kept = [r.id for r in iter(rig.queue.pop, None)]
    assert now["event"] in ("done", "failed")
    if now["event"] == "failed":
        assert now["reason"] == STOPPING
    assert kept == ["then"], "the waiting request goes back to the queue for the next start"
    assert not [k for k in rig.events.kinds("then") if k in ("done", "failed")]


def test_expired_requests_are_never_spoken() -> None:
    with Rig() as rig:
        rig.pipeline.submit(Request(id="old", text="Late.", expires_at=time.time() - 1))
        end = rig.events.wait("old")
    assert end["event"] == "expired" and rig.engine.calls == []


class CachedTone(ToneEngine):
    identity = "tone v1"


def test_the_cache_serves_a_repeat_and_never_keeps_a_fallback(tmp_path: Path) -> None:
    cache = AudioCache(tmp_path / "cache", 1 << 20)
    with Rig(engine=CachedTone(seconds=0.05), cache=cache) as rig:
        rig.pipeline.submit(request("first"))
        first = rig.events.wait("first")
        rig.pipeline.submit(request("again"))
        again = rig.events.wait("again")
    assert "cached" not in first and again.get("cached") is True
    assert again["audio_sha256"] == first["audio_sha256"]
    assert rig.engine.calls == ["One. Two."], "the repeat was not synthesised again"

    broken = CachedTone(error=RuntimeError("flaky"))
    with Rig(engine=broken, cache=AudioCache(tmp_path / "c2", 1 << 20)) as rig:
        for rid in ("x", "y"):
            rig.pipeline.submit(request(rid, "Three."))
            assert rig.events.wait(rid)["fallback"] is True
    assert broken.calls == ["Three.", "Three."], "a fallback rendering is not cached as the engine's"


@pytest.mark.parametrize("output", ["publish", "both"])
def test_volume_and_chime_reach_the_published_audio(output: str) -> None:
    with Rig(card=SoundCard()) as rig:
        rig.pipeline.submit(request("loud", "One.", volume=0.5, chime=True, output=output))
        done = rig.events.wait("loud")
    published = np.concatenate(rig.published.audio["loud"])
    speech = ToneEngine(seconds=0.05)
    expected_speech = np.concatenate(list(speech.synthesize("One.", None, None))) * 0.5
    assert np.allclose(published[-expected_speech.size:], expected_speech, atol=1e-6)
    assert done["audio_ms"] > done["speech_ms"], "the chime is part of the delivered audio"


class HeldPublishing(ToneEngine):
    """An engine that batches (``concurrency`` 3) whose background calls, the publish lanes', wait for ``held``
    to be set, so a test sees them under way together while the speaker's requests go on."""

    def __init__(self) -> None:
        super().__init__(seconds=0.05, concurrency=3)
        self.held = threading.Event()
        self.under_way = threading.Semaphore(0)

    def synthesize(self, text: str, voice: str | None, lang: str | None, speed: float = 1.0,
                   sampling: Any = None, background: bool = False) -> Any:
        if background:
            self.under_way.release()
            self.held.wait(WAIT_S)
        return super().synthesize(text, voice, lang, speed, sampling, background)


def test_publish_only_requests_are_synthesised_side_by_side_without_holding_up_the_speaker() -> None:
    """With an engine that batches, three publish-only requests are synthesised at once (one per publish lane) and a
    fourth waits for a lane; the speaker's requests meanwhile go through in their order, an emergency still cutting
    what plays and overtaking what waits; the publish-only ones then end ``done`` with their audio."""
    engine = HeldPublishing()
    pace = threading.Semaphore(0)
    with Rig(engine=engine, card=SoundCard(pace=pace)) as rig:  # type: ignore[arg-type]
        for rid in ("p1", "p2", "p3", "p4"):
            rig.pipeline.submit(request(rid, "Published."))
        for _ in range(3):
            assert engine.under_way.acquire(timeout=WAIT_S)
        rig.pipeline.submit(request("long", "A. B. C. D.", output="play"))
        pace.release()
        rig.events.wait("long", EventKind.FIRST_AUDIO)
        rig.pipeline.submit(request("next", output="play"))
        rig.events.wait("next", EventKind.STARTED)
        rig.pipeline.submit(request("fire", "Evacuate.", priority="emergency", output="play"))
        for _ in range(40):
            pace.release()
        cut, fire, later = (rig.events.wait(rid) for rid in ("long", "fire", "next"))
        waiting = rig.events.kinds("p4")
        engine.held.set()
        published = [rig.events.wait(rid) for rid in ("p1", "p2", "p3", "p4")]
    assert cut["reason"] == "interrupted by fire" and fire["event"] == later["event"] == "done"
    assert [rid for rid, kind, _ in rig.events.log if kind is EventKind.DONE][:2] == ["fire", "next"]
    assert waiting == ["queued"]  # every publish lane was busy: it waited for one, not for the speaker's lane
    assert all(p["event"] == "done" for p in published) and set(rig.published.audio) >= {"p1", "p2", "p3", "p4"}
    asked = dict(zip(engine.calls, engine.background, strict=True))
    assert asked["Published."] and not asked["A. B. C. D."] and not asked["Evacuate."]


def test_registering_a_voice_waits_for_the_syntheses_under_way_and_holds_off_new_ones() -> None:
    """The engine lock: syntheses share it; an exclusive holder (voice registration) waits until they end, and a
    synthesis asking after it waits until the registration is done."""
    from daemon.core.pipeline import EngineLock

    lock = EngineLock()
    order: list[str] = []
    synthesis_ends = threading.Event()

    def synthesis(name: str, until: threading.Event | None = None) -> None:
        with lock.shared():
            order.append(f"{name} starts")
            if until is not None:
                until.wait(WAIT_S)
            order.append(f"{name} ends")

    def registration() -> None:
        with lock.exclusive():
            order.append("registration")

    first = threading.Thread(target=synthesis, args=("first", synthesis_ends))
    first.start()
    while "first starts" not in order:
        time.sleep(0.01)
    register = threading.Thread(target=registration)
    register.start()
    while not lock._queued:
        time.sleep(0.01)
    second = threading.Thread(target=synthesis, args=("second",))
    second.start()
    time.sleep(0.1)
    assert order == ["first starts"]
    synthesis_ends.set()
    for thread in (first, register, second):
        thread.join(WAIT_S)
    assert order == ["first starts", "first ends", "registration", "second starts", "second ends"]
