"""The schedule runner with a clock the test moves: a due run goes through the daemon's intake check into a real
pipeline (the tone doubles) with the stable id, once, and a run the daemon would refuse is reported, not spoken."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from daemon.app.scheduler import ScheduleRunner
from daemon.core.schedules import ScheduleStore, make
from daemon.core.state_db import StateDb
from daemon.protocols.payloads import IntakePolicy, RejectedPayload
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
