"""The JSON of a schedule change over MQTT or HTTP: read into the schedule the command line would make, each
refusal naming its key."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from daemon.core.schedules import make
from daemon.protocols.schedule_requests import ScheduleRejected, json_object, parse_addition, parse_removal

ZONES = ("lobby", "ward3")
NOW = datetime(2026, 12, 5, 12, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()


def test_an_addition_is_the_schedule_the_command_line_makes() -> None:
    schedule, request_id = parse_addition(
        {"id": "r1", "name": "ward", "at": "2026-12-06T08:00", "tz": "Europe/Berlin", "voice": "anna",
         "payload": {"parts": [{"chime": True}, {"text": "Rounds."}]}, "priority": "high", "start": "2026-12-01",
         "except": ["2026-12-24"], "run_if_late_s": 30}, (), now=NOW)
    wanted = make("ward", {"parts": [{"chime": True}, {"text": "Rounds."}], "voice": "anna", "priority": "high"},
                  "Europe/Berlin", at="2026-12-06T08:00", start="2026-12-01", exceptions=["2026-12-24"],
                  late_s=30, now=NOW)
    assert (schedule, request_id) == (wanted, "r1")


def test_a_listed_schedule_can_be_added_again_as_it_is_listed() -> None:
    original = make("bell", {"text": "Classes begin."}, "Asia/Shanghai", cron="0 8 * * 1-5", end="2027-06-30",
                    late_s=None, now=NOW)
    again, _ = parse_addition(original.to_dict(), (), now=NOW)
    assert again == original


@pytest.mark.parametrize(("data", "field", "start"), [
    ({"name": "b", "cron": "0 8 * * *", "text": "a", "run_if_late_s": float("inf")}, "run_if_late_s",
     "run_if_late_s: "),
    ({"name": "b", "cron": "0 8 * * *", "text": "a", "run_if_late_s": -1}, "run_if_late_s", "run_if_late_s -1"),
    ({"name": "b", "cron": "0 8 * * *", "text": "a", "except": "2026-12-24"}, "except", "except: "),
    ({"name": "b", "cron": "0 8 * * *", "text": "a", "start": "2026-12-02", "end": "2026-12-01"}, "end",
     "end: before start"),
    ({"name": "b", "at": "2026-12-06T08:00+01:00", "text": "a"}, "at", "at '2026-12-06T08:00+01:00'"),
    ({"name": "b", "cron": "0 8 * * *", "payload": {"text": "a", "id": "x"}}, "payload", "payload: no \"id\""),
    ({"name": 7, "cron": "0 8 * * *", "text": "a"}, "name", "name: "),
    ({"name": "b", "cron": "0 8 * * *", "payload": {"text": "a", "zones": ["lobby", "ward9"]}}, "payload",
     "payload: zones: unknown zone 'ward9' (configured: lobby, ward3)"),
    ({"name": "b", "cron": "0 8 * * *", "payload": {"text": "a", "zones": []}}, "payload", "payload: zones: a list"),
])
def test_a_refusal_names_its_key(data: dict, field: str, start: str) -> None:
    with pytest.raises(ScheduleRejected) as caught:
        parse_addition({"id": "r9", **data}, ZONES, now=NOW)
    assert caught.value.field == field and caught.value.reason.startswith(start), caught.value.reason
    assert caught.value.request_id == "r9"


def test_removals_and_payloads() -> None:
    assert parse_removal({"name": "bell", "id": "r2"}).name == "bell"
    with pytest.raises(ScheduleRejected, match="^name: "):
        parse_removal({"name": ["bell"]})
    for bad in (b"[1]", b"{oops", b"\xff"):
        with pytest.raises(ScheduleRejected, match="^payload must be a JSON object"):
            json_object(bad)


def test_zones_are_checked_against_the_configured_ones() -> None:
    every, _ = parse_addition({"name": "b", "cron": "0 8 * * *", "payload": {"text": "a", "zones": "all"}}, ZONES)
    assert every.payload["zones"] == "all"
    with pytest.raises(ScheduleRejected, match="^payload: zones: this box has no"):
        parse_addition({"name": "b", "cron": "0 8 * * *", "payload": {"text": "a", "zones": ["lobby"]}}, ())
