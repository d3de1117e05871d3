"""Schedules' timing with a clock the test sets: one-shots, cron, daylight saving both ways in Berlin, start and
end dates, holidays, the missed-run policies, and no due time handled twice across a restart (a real state
database, closed and opened again)."""

from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from daemon.core.schedules import (
    ON_TIME_S,
    Schedule,
    ScheduleError,
    ScheduleStore,
    check_payload,
    decide,
    make,
    next_dues,
)
from daemon.core.state_db import StateDb

BERLIN = ZoneInfo("Europe/Berlin")
UTC = timezone.utc
SAY = {"text": "Good morning"}


def at(*fields: int, tz: ZoneInfo = BERLIN) -> datetime:
    return datetime(*fields, tzinfo=tz)  # type: ignore[misc]


def cron(expr: str, **kwargs: object) -> Schedule:
    return make("bell", dict(SAY), "Europe/Berlin", cron=expr, now=at(2026, 1, 1).timestamp(), **kwargs)  # type: ignore[arg-type]


def wall(dues: list[datetime]) -> list[str]:
    return [d.isoformat() for d in dues]


def test_a_one_shot_is_due_once_at_its_local_time() -> None:
    s = make("open", dict(SAY), "Europe/Berlin", at="2026-12-24T08:00", now=at(2026, 12, 1).timestamp())
    assert wall(next_dues(s, at(2026, 12, 1).astimezone(UTC), 5)) == ["2026-12-24T08:00:00+01:00"]
    assert next_dues(s, at(2026, 12, 24, 8).astimezone(UTC), 5) == []
    assert s.run_id(next_dues(s, at(2026, 12, 1), 1)[0]) == "open@2026-12-24T07:00:00Z"


def test_a_cron_schedule_recurs_on_weekdays() -> None:
    dues = next_dues(cron("0 8 * * 1-5"), at(2026, 12, 4, 9), 3)  # a Friday, after the bell
    assert wall(dues) == ["2026-12-07T08:00:00+01:00", "2026-12-08T08:00:00+01:00", "2026-12-09T08:00:00+01:00"]


def test_spring_forward_a_missing_local_time_moves_to_the_first_valid_minute() -> None:
    dues = next_dues(cron("30 2 * * *"), at(2026, 3, 28, 12), 3)  # 02:30 does not exist on 29 March in Berlin
    assert wall(dues) == ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00", "2026-03-31T02:30:00+02:00"]


def test_a_one_shot_in_the_spring_gap_keeps_its_distance_from_the_hour_before() -> None:
    """zoneinfo reads a missing 02:30 with the winter offset: 01:30 UTC, which is 03:30 summer time."""
    s = make("gap", dict(SAY), "Europe/Berlin", at="2026-03-29T02:30", now=at(2026, 3, 1).timestamp())
    (due,) = next_dues(s, at(2026, 3, 1), 3)
    assert due.astimezone(UTC) == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


def test_fall_back_a_repeated_local_time_runs_once() -> None:
    dues = next_dues(cron("30 2 * * *"), at(2026, 10, 24, 12), 3)  # 02:30 happens twice on 25 October
    assert wall(dues) == ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00", "2026-10-27T02:30:00+01:00"]
    half_hourly = next_dues(cron("*/30 * * * *"), at(2026, 10, 25, 1, 40), 4)
    assert wall(half_hourly) == ["2026-10-25T02:00:00+02:00", "2026-10-25T02:30:00+02:00",
                                 "2026-10-25T03:00:00+01:00", "2026-10-25T03:30:00+01:00"]


def test_a_one_shot_in_the_repeated_hour_is_its_first_occurrence() -> None:
    s = make("late", dict(SAY), "Europe/Berlin", at="2026-10-25T02:30", now=at(2026, 10, 1).timestamp())
    assert wall(next_dues(s, at(2026, 10, 1), 3)) == ["2026-10-25T02:30:00+02:00"]


def test_start_end_and_holidays_limit_the_runs() -> None:
    s = cron("0 8 * * *", start="2026-12-22", end="2026-12-27", exceptions=["2026-12-24", "2026-12-25"])
    assert [d.date() for d in next_dues(s, at(2026, 12, 1), 10)] == [
        date(2026, 12, 22), date(2026, 12, 23), date(2026, 12, 26), date(2026, 12, 27)]


def test_a_missed_run_is_skipped_by_default_and_run_if_late_enough_when_asked() -> None:
    due = at(2026, 12, 7, 8)
    skip = cron("0 8 * * *")
    late = cron("0 8 * * *", late_s=600)
    ten_min = due.astimezone(UTC).replace(minute=5)  # 5 minutes late
    assert decide(skip, due.astimezone(UTC)).run  # on the second: runs
    decision = decide(skip, ten_min)
    assert decision.due == due and not decision.run
    assert decide(late, ten_min).run
    assert not decide(late, due.astimezone(UTC).replace(minute=11)).run  # 11 minutes: past its 600 s
    assert ON_TIME_S < 300


def test_after_a_long_outage_only_the_latest_missed_run_is_considered() -> None:
    s = cron("0 8 * * *", late_s=3600)
    decision = decide(s, at(2026, 12, 7, 8, 30).astimezone(UTC))  # a week of bells went by
    assert decision.due == at(2026, 12, 7, 8) and decision.run
    assert decision.wake_at == at(2026, 12, 8, 8)


def test_a_due_time_is_handled_once_across_a_restart(tmp_path: Path) -> None:
    db = StateDb.in_dir(tmp_path)
    store = ScheduleStore(db)
    store.add(cron("0 8 * * *", late_s=3600))
    now = at(2026, 12, 7, 8, 0, 1).astimezone(UTC)
    (s,) = store.list()
    decision = decide(s, now)
    assert decision.run and store.mark_handled(s.name, decision.due)  # type: ignore[arg-type]
    assert not store.mark_handled(s.name, decision.due)  # type: ignore[arg-type]
    db.close()  # the daemon stops (or is killed) right after the run was recorded

    db = StateDb.in_dir(tmp_path)
    (again,) = ScheduleStore(db).list()
    assert again.last_due == decision.due.timestamp()  # type: ignore[union-attr]
    after = decide(again, at(2026, 12, 7, 8, 0, 30).astimezone(UTC))
    assert after.due is None and after.wake_at == at(2026, 12, 8, 8)
    db.close()


def test_the_store_keeps_every_field(tmp_path: Path) -> None:
    db = StateDb.in_dir(tmp_path)
    store = ScheduleStore(db)
    s = cron("0 8 * * 1-5", start="2026-12-01", end="2027-06-30", exceptions=["2026-12-24"], late_s=90)
    store.add(s)
    assert store.list() == [s]
    with pytest.raises(ScheduleError, match="exists"):
        store.add(s)
    store.remove("bell")
    assert store.list() == []
    with pytest.raises(ScheduleError, match="no such schedule"):
        store.remove("bell")
    db.close()


@pytest.mark.parametrize(("kwargs", "wanted"), [
    ({"cron": "61 * * * *"}, "--cron"),
    ({"cron": "0 8 * * *", "tz": "Mars/Olympus"}, "--tz"),
    ({"at": "2026-12-24T08:00", "cron": "0 8 * * *"}, "not both"),
    ({"at": "tomorrow"}, "--at"),
    ({"at": "2026-12-24T08:00+01:00"}, "--at"),
    ({"at": "2025-12-24T08:00"}, "already past"),
    ({"cron": "0 8 * * *", "start": "2026-13-01"}, "--start"),
    ({"cron": "0 8 * * *", "start": "2026-12-02", "end": "2026-12-01"}, "--end"),
])
def test_bad_timing_names_its_argument(kwargs: dict[str, str], wanted: str) -> None:
    tz = kwargs.pop("tz", "Europe/Berlin")
    with pytest.raises(ScheduleError, match=wanted):
        make("bell", dict(SAY), tz, now=at(2026, 1, 1).timestamp(), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("payload", "wanted"), [
    ("{not json", "not JSON"), ("[1]", "JSON object"), ('{"voice": "a"}', "text"),
    ('{"text": "a", "id": "x"}', "id"), ('{"text": "a", "priority": "urgent"}', "priority"),
])
def test_bad_payloads_are_refused(payload: str, wanted: str) -> None:
    with pytest.raises(ScheduleError, match=wanted):
        check_payload(payload)
