"""Schedules managed over MQTT (real mosquitto): ``schedules/add`` and ``schedules/remove`` answered on the events
topic, the retained list at ``schedules`` following every change (the command line's too), a refusal naming the
key at fault, audit rows with the topic as who, and a schedule added over MQTT running with its stable id."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from daemon.core.audit import CHANGE_OUTCOMES, read_records
from daemon.core.schedules import ScheduleStore, make
from daemon.core.state_db import StateDb
from tests.conftest import Broker, Daemon, Recorder
from tests.doubles import ToneEngine


def change(daemon: Daemon, action: str, payload: dict[str, Any] | bytes, retain: bool = False) -> None:
    topic = daemon.topics.schedule_add if action == "add" else daemon.topics.schedule_remove
    daemon.recorder.publish(topic, payload if isinstance(payload, bytes) else json.dumps(payload), retain=retain)


def listed(daemon: Daemon, wanted: Any = lambda names: True) -> list[dict[str, Any]]:
    """The retained list once its names satisfy ``wanted``."""
    msg = daemon.recorder.wait_for(daemon.topics.schedules,
                                   lambda m: wanted([s["name"] for s in m.json()["schedules"]]))
    return msg.json()["schedules"]


def refusal(daemon: Daemon, request_id: str) -> str:
    return daemon.wait_event(request_id, "rejected")["reason"]


def test_add_list_refuse_and_remove_over_mqtt(start_daemon: Any, mosquitto_broker: Broker) -> None:
    daemon = start_daemon(synth=ToneEngine(seconds=0.05))
    assert listed(daemon) == []  # retained at start, empty
    change(daemon, "add", {"id": "add-1", "name": "bell", "cron": "0 8 * * 1-5", "tz": "Europe/Berlin",
                           "text": "Classes begin.", "priority": "high", "except": ["2026-12-24"],
                           "run_if_late_s": 60})
    added = daemon.wait_event("add-1", "schedule_added")
    assert added["schedule"] == "bell" and added["next_id"].startswith("bell@")
    (bell,) = listed(daemon, lambda names: names == ["bell"])
    assert bell["payload"] == {"text": "Classes begin.", "priority": "high"}
    assert (bell["cron"], bell["tz"], bell["except"], bell["run_if_late_s"]) == (
        "0 8 * * 1-5", "Europe/Berlin", ["2026-12-24"], 60)
    assert bell["next"] == added["next"] and bell["next_id"] == added["next_id"]

    late = Recorder(mosquitto_broker)  # a client that comes later gets the list from the broker
    try:
        late.subscribe(daemon.topics.schedules)
        retained = late.wait_for(daemon.topics.schedules)
        assert retained.retain and [s["name"] for s in retained.json()["schedules"]] == ["bell"]
    finally:
        late.close()

    bad = {
        "bad-cron": ({"name": "x", "cron": "61 * * * *", "text": "a"}, "cron '61 * * * *'"),
        "bad-tz": ({"name": "x", "cron": "0 8 * * *", "tz": "Mars/Olympus", "text": "a"}, "tz 'Mars/Olympus'"),
        "bad-both": ({"name": "x", "cron": "0 8 * * *", "at": "2099-01-01T08:00", "text": "a"},
                     "give at or cron, not both"),
        "bad-past": ({"name": "x", "at": "2001-01-01T08:00", "text": "a"}, "at '2001-01-01T08:00': already past"),
        "bad-name": ({"name": "no/slash", "cron": "0 8 * * *", "text": "a"}, "name 'no/slash'"),
        "bad-dup": ({"name": "bell", "cron": "0 9 * * *", "text": "a"}, "name 'bell': a schedule of that name exists"),
        "bad-key": ({"name": "x", "cron": "0 8 * * *", "text": "a", "colour": "red"}, "colour: "),
        "bad-late": ({"name": "x", "cron": "0 8 * * *", "text": "a", "run_if_late_s": "soon"}, "run_if_late_s: "),
        "bad-prio": ({"name": "x", "cron": "0 8 * * *", "text": "a", "priority": "urgent"}, "priority: one of"),
        "bad-say": ({"name": "x", "cron": "0 8 * * *", "payload": {"voice": "a"}}, "payload: needs \"text\""),
        "bad-none": ({"name": "x", "cron": "0 8 * * *"}, "give text or payload"),
        "bad-date": ({"name": "x", "cron": "0 8 * * *", "text": "a", "except": ["2026-13-01"]}, "except '2026-13-01'"),
    }
    for request_id, (body, wanted) in bad.items():
        change(daemon, "add", {"id": request_id, **body})
        reason = refusal(daemon, request_id)
        assert reason.startswith(wanted) and "\n" not in reason, (request_id, reason)
    change(daemon, "add", {"id": "no-name", "cron": "0 8 * * *", "text": "a"})
    assert refusal(daemon, "no-name") == "name: Field required"
    change(daemon, "add", b"\xff not json")
    daemon.recorder.wait_for(daemon.topics.events,
                             lambda m: m.json()["event"] == "rejected" and "JSON object" in m.json()["reason"])

    daemon.recorder.clear()  # the list is waited for below as it comes after the removal
    change(daemon, "remove", {"id": "rm-1", "name": "bell"})
    assert daemon.wait_event("rm-1", "schedule_removed")["schedule"] == "bell"
    listed(daemon, lambda names: names == [])
    change(daemon, "remove", {"id": "rm-2", "name": "bell"})
    assert refusal(daemon, "rm-2") == "name 'bell': no such schedule"
    change(daemon, "remove", {"id": "rm-3"})
    assert refusal(daemon, "rm-3") == "name: Field required"

    rows = [r for r in read_records(daemon.service.settings.state_dir) if r["outcome"] in CHANGE_OUTCOMES]
    assert [(r["outcome"], r["protocol"], r["topic"], r["subject"]) for r in rows] == [
        ("schedule_added", "native", daemon.topics.schedule_add, "bell"),
        ("schedule_removed", "native", daemon.topics.schedule_remove, "bell")]
    assert rows[0]["reason"].startswith("cron '0 8 * * 1-5' Europe/Berlin")
    assert daemon.service.schedule_store.list() == []


def test_a_retained_addition_is_refused(start_daemon: Any, recorder: Recorder) -> None:
    """Retained, it would be added again at every reconnect; the broker hands it over at subscription."""
    recorder.publish("gsv-edge/kept-node/schedules/add", json.dumps({"name": "y", "cron": "0 8 * * *", "text": "a"}),
                     retain=True)
    daemon = start_daemon(synth=ToneEngine(seconds=0.05), mqtt={"node_id": "kept-node"})
    recorder.wait_for(daemon.topics.events,
                      lambda m: m.json()["event"] == "rejected" and "retained" in m.json()["reason"])
    recorder.publish(daemon.topics.schedule_add, b"", retain=True)  # clear it from the broker
    assert daemon.service.schedule_store.list() == []


def test_a_schedule_added_over_mqtt_runs_once_with_its_stable_id(start_daemon: Any) -> None:
    daemon = start_daemon(synth=ToneEngine(seconds=0.05))
    due = (datetime.now(timezone.utc) + timedelta(seconds=4)).replace(microsecond=0)
    change(daemon, "add", {"id": "add-close", "name": "close", "at": due.replace(tzinfo=None).isoformat(),
                           "tz": "UTC", "text": "The shop closes now.", "run_if_late_s": 300})
    run_id = f"close@{due.strftime('%Y-%m-%dT%H:%M:%SZ')}"
    assert daemon.wait_event("add-close", "schedule_added")["next_id"] == run_id
    assert daemon.wait_event(run_id, "done", timeout=60)["id"] == run_id
    assert [e["event"] for e in daemon.events(run_id)].count("queued") == 1
    ran = daemon.recorder.wait_for(  # once run, a one-shot has no next due time
        daemon.topics.schedules, lambda m: [(s["name"], s["next"]) for s in m.json()["schedules"]] == [("close", None)])
    assert ran.json()["schedules"][0]["at"] == due.replace(tzinfo=None).isoformat()


def test_the_list_follows_schedules_added_beside_the_daemon(start_daemon: Any) -> None:
    """``gsv-edge schedule add`` writes the state database; the runner's next look republishes the list."""
    daemon = start_daemon(synth=ToneEngine(seconds=0.05))
    listed(daemon, lambda names: names == [])
    db = StateDb.in_dir(daemon.service.settings.state_dir)
    try:
        ScheduleStore(db).add(make("bell", {"text": "Classes begin."}, "Europe/Berlin", cron="0 8 * * *"))
        listed(daemon, lambda names: names == ["bell"])
        daemon.recorder.clear()
        ScheduleStore(db).remove("bell")
        listed(daemon, lambda names: names == [])
    finally:
        db.close()


@pytest.mark.parametrize(("ahead_s", "cached"), [(300, True), (0, None)])
def test_a_run_is_rendered_ahead_and_starts_from_the_cache(start_daemon: Any, ahead_s: int, cached: Any) -> None:
    """eSpeak NG's audio is cached (it has an identity): a run due within ``cache.prerender_s`` is rendered at
    once, so its ``started`` says ``cached``; with the setting at 0 it is synthesised when due."""
    daemon = start_daemon(cache={"prerender_s": ahead_s})
    due = (datetime.now(timezone.utc) + timedelta(seconds=4)).replace(microsecond=0)
    change(daemon, "add", {"name": "close", "at": due.replace(tzinfo=None).isoformat(), "tz": "UTC",
                           "text": "The shop closes in ten minutes.", "lang": "en", "run_if_late_s": 300})
    run_id = f"close@{due.strftime('%Y-%m-%dT%H:%M:%SZ')}"
    assert daemon.wait_event(run_id, "done", timeout=60)["id"] == run_id
    started = daemon.wait_event(run_id, "started")
    assert started.get("cached") is cached, started
