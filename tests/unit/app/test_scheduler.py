"""The schedule runner with a clock the test moves: a due run goes through the daemon's intake check into a real
pipeline (the tone doubles) with the stable id, once, and a run the daemon would refuse is reported, not spoken;
ahead of its due time a run is rendered into the rendered-audio cache, and played from it."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from daemon.app.scheduler import ScheduleRunner
from daemon.core.audio_cache import AudioCache
from daemon.core.schedules import ScheduleStore, make
from daemon.core.state_db import StateDb
from daemon.protocols.payloads import IntakePolicy, RejectedPayload
from tests.doubles import ToneEngine
from tests.unit.core.test_pipeline import Rig

BERLIN = ZoneInfo("Europe/Berlin")
POLICY = IntakePolicy(max_text_chars=500, default_ttl_s=60, voices=frozenset({"anna"}), has_audio_device=False)


class Clock:
    def __init__(self, at: datetime) -> None:
        self.now = at.timestamp()

    def __call__(self) -> float:
        return self.now


def test_a_due_run_is_submitted_once_with_its_stable_id(tmp_path: Path) -> None:
    db = StateDb.in_dir(tmp_path)
    store = ScheduleStore(db)
    clock = Clock(datetime(2026, 12, 5, 7, 59, tzinfo=BERLIN))
    store.add(make("bell", {"text": "Classes begin.", "priority": "high"}, "Europe/Berlin", cron="0 8 * * *",
                   now=clock.now))
    refused: list[tuple[str, RejectedPayload]] = []
    with Rig() as rig:
        runner = ScheduleRunner(store, lambda: POLICY, rig.pipeline.submit, lambda t, r: refused.append((t, r)),
                                clock=clock)
        assert runner.run_due() == datetime(2026, 12, 5, 8, tzinfo=BERLIN).timestamp()  # not yet: sleeps till 08:00
        clock.now = datetime(2026, 12, 5, 8, 0, 1, tzinfo=BERLIN).timestamp()
        runner.run_due()
        runner.run_due()  # the same second again: nothing more
        done = rig.events.wait("bell@2026-12-05T07:00:00Z")
    assert done["event"] == "done" and not refused
    ids = {rid for rid, _, _ in rig.events.log}
    assert ids == {"bell@2026-12-05T07:00:00Z"}
    assert rig.events.kinds("bell@2026-12-05T07:00:00Z").count("queued") == 1
    db.close()


def test_a_run_the_daemon_would_refuse_is_reported(tmp_path: Path) -> None:
    db = StateDb.in_dir(tmp_path)
    store = ScheduleStore(db)
    clock = Clock(datetime(2026, 12, 5, 7, 59, tzinfo=BERLIN))
    store.add(make("ward", {"text": "Rounds.", "voice": "gone"}, "Europe/Berlin", at="2026-12-05T08:00",
                   now=clock.now))
    submitted: list[object] = []
    refused: list[tuple[str, RejectedPayload]] = []
    runner = ScheduleRunner(store, lambda: POLICY, submitted.append, lambda t, r: refused.append((t, r)),
                            clock=clock)
    clock.now = datetime(2026, 12, 5, 8, tzinfo=BERLIN).timestamp()
    assert runner.run_due() is None  # a one-shot: nothing after it
    assert not submitted
    ((topic, rejection),) = refused
    assert topic == "schedule/ward" and rejection.request_id == "ward@2026-12-05T07:00:00Z"
    assert "gone" in rejection.reason
    db.close()


class CachedTone(ToneEngine):
    identity = "tone v1"  # the rendered-audio cache keeps what it says


def wait_until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true"
        time.sleep(0.01)


@pytest.mark.parametrize("payload", [
    {"text": "Classes begin. Go in.", "voice": "tone-a"},
    {"parts": [{"chime": True}, {"text": "Attention."}, {"pause_s": 0.1}, {"text": "Classes begin.", "speed": 1.5}],
     "voice": "tone-b"},
])
def test_a_run_is_rendered_ahead_and_then_played_from_the_cache(tmp_path: Path, payload: dict) -> None:
    db = StateDb.in_dir(tmp_path)
    store = ScheduleStore(db)
    clock = Clock(datetime(2026, 12, 5, 7, 50, tzinfo=BERLIN))
    store.add(make("bell", payload, "Europe/Berlin", cron="0 8 * * *", now=clock.now))
    engine = CachedTone(seconds=0.05)
    cache = AudioCache(tmp_path / "cache", 1 << 20)
    policy = IntakePolicy(max_text_chars=500, default_ttl_s=60, voices=frozenset({"tone-a", "tone-b"}),
                          has_audio_device=False)
    texts = [payload["text"]] if "text" in payload else ["Attention.", "Classes begin."]
    with Rig(engine=engine, cache=cache) as rig:
        runner = ScheduleRunner(store, lambda: policy, rig.pipeline.submit, lambda t, r: None, clock=clock,
                                prerender=rig.pipeline.prerender, ahead_s=lambda: 300.0)
        runner.run_due()  # ten minutes early: not yet
        clock.now = datetime(2026, 12, 5, 7, 56, tzinfo=BERLIN).timestamp()
        runner.run_due()
        wait_until(lambda: len(cache) == len(texts))
        runner.run_due()  # within the window again: rendered once is enough
        assert engine.calls == texts and rig.events.log == []  # rendered, nothing submitted or announced
        clock.now = datetime(2026, 12, 5, 8, 0, 0, tzinfo=BERLIN).timestamp()
        runner.run_due()
        done = rig.events.wait("bell@2026-12-05T07:00:00Z")
        runner.stop()
    assert done["event"] == "done" and done["cached"] is True
    assert engine.calls == texts, "played from the cache, not synthesised again"
    db.close()


def test_without_a_window_or_a_cache_nothing_is_rendered_ahead(tmp_path: Path) -> None:
    db = StateDb.in_dir(tmp_path)
    store = ScheduleStore(db)
    clock = Clock(datetime(2026, 12, 5, 7, 59, tzinfo=BERLIN))
    store.add(make("bell", {"text": "Classes begin."}, "Europe/Berlin", cron="0 8 * * *", now=clock.now))
    engine = CachedTone(seconds=0.05)
    with Rig(engine=engine) as rig:  # no cache: nowhere to keep it
        runner = ScheduleRunner(store, lambda: POLICY, rig.pipeline.submit, lambda t, r: None, clock=clock,
                                prerender=rig.pipeline.prerender, ahead_s=lambda: 300.0)
        runner.run_due()
        runner.stop()  # waits for the worker
    cache = AudioCache(tmp_path / "cache", 1 << 20)
    with Rig(engine=engine, cache=cache) as rig:  # a cache, but cache.prerender_s 0
        runner = ScheduleRunner(store, lambda: POLICY, rig.pipeline.submit, lambda t, r: None, clock=clock,
                                prerender=rig.pipeline.prerender, ahead_s=lambda: 0.0)
        runner.run_due()
        runner.stop()
    assert engine.calls == [] and len(cache) == 0
    db.close()


def test_a_switched_engine_renders_the_next_run_again(tmp_path: Path) -> None:
    """After a reload the entries rendered ahead are the old engine's: the runner renders the run again."""
    db = StateDb.in_dir(tmp_path)
    store = ScheduleStore(db)
    clock = Clock(datetime(2026, 12, 5, 7, 58, tzinfo=BERLIN))
    store.add(make("bell", {"text": "Classes begin."}, "Europe/Berlin", cron="0 8 * * *", now=clock.now))
    old, new = CachedTone(seconds=0.05), CachedTone(seconds=0.05)
    new.identity = "tone v2"
    cache = AudioCache(tmp_path / "cache", 1 << 20)
    with Rig(engine=old, cache=cache) as rig:
        runner = ScheduleRunner(store, lambda: POLICY, rig.pipeline.submit, lambda t, r: None, clock=clock,
                                prerender=rig.pipeline.prerender, ahead_s=lambda: 300.0)
        runner.run_due()
        wait_until(lambda: len(cache) == 1)
        rig.pipeline.set_engine(new, rig.fallback)
        runner.run_due()  # rendered for this due time already, as far as the runner knows
        runner.forget_rendered()
        runner.run_due()
        wait_until(lambda: len(cache) == 2)
        clock.now = datetime(2026, 12, 5, 8, tzinfo=BERLIN).timestamp()
        runner.run_due()
        done = rig.events.wait("bell@2026-12-05T07:00:00Z")
        runner.stop()
    assert old.calls == new.calls == ["Classes begin."] and done["cached"] is True
    db.close()
