"""``/v1/schedules`` against the real daemon: an admin adds, lists, looks ahead and removes; a mistake is a 400
naming the key; the changes are audit rows with the token; the MQTT list follows; other tokens are refused."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx

from daemon.core.audit import CHANGE_OUTCOMES, read_records
from tests.integration.test_http_native import MANY, error, tokens

BELL = {"name": "bell", "cron": "0 8 * * 1-5", "tz": "Europe/Berlin", "text": "Classes begin.", "priority": "high",
        "except": ["2026-12-24"]}


def test_an_admin_manages_schedules_over_http(http_daemon: Any, tmp_path: Path) -> None:
    made = tokens(tmp_path, boss=["admin"], speaker=["speak"], curator=["voices"])
    daemon, url = http_daemon(**MANY)
    boss = made["boss"]
    assert httpx.get(f"{url}/v1/schedules", headers=boss).json() == {"schedules": []}

    added = httpx.post(f"{url}/v1/schedules", json=BELL, headers=boss)
    assert added.status_code == 201, added.text
    bell = added.json()
    assert added.headers["location"] == "/v1/schedules/bell"
    assert (bell["name"], bell["cron"], bell["payload"], bell["except"]) == (
        "bell", "0 8 * * 1-5", {"text": "Classes begin.", "priority": "high"}, ["2026-12-24"])
    assert bell["next_id"].startswith("bell@") and bell["next_id"].endswith(":00Z")
    assert httpx.get(f"{url}/v1/schedules", headers=boss).json() == {"schedules": [bell]}
    daemon.recorder.wait_for(daemon.topics.schedules, lambda m: m.json()["schedules"] == [bell])  # MQTT's list too

    soon = (datetime.now(timezone.utc) + timedelta(hours=1)).replace(second=0, microsecond=0)
    once = {"name": "close", "at": soon.replace(tzinfo=None).isoformat(), "tz": "UTC",
            "payload": {"parts": [{"chime": True}, {"text": "We close now."}]}, "run_if_late_s": 120}
    assert httpx.post(f"{url}/v1/schedules", json=once, headers=boss).status_code == 201
    ahead = httpx.get(f"{url}/v1/schedules/next", params={"count": 2}, headers=boss).json()["next"]
    assert len(ahead) == 3 and [a["schedule"] for a in ahead].count("bell") == 2  # a one-shot has one
    assert [a["due_utc"] for a in ahead] == sorted(a["due_utc"] for a in ahead)
    close = next(a for a in ahead if a["schedule"] == "close")
    assert close["id"] == f"close@{soon.strftime('%Y-%m-%dT%H:%M:%SZ')}"
    assert httpx.get(f"{url}/v1/schedules/next", headers=boss).json()["next"][0]["schedule"] in ("bell", "close")

    taken = error(httpx.post(f"{url}/v1/schedules", json={**BELL, "cron": "0 9 * * *"}, headers=boss), 409)
    assert taken["code"] == "schedule_exists" and taken["param"] == "name"
    for body, param, start in [
        ({**BELL, "name": "x", "cron": "61 * * * *"}, "cron", "cron '61 * * * *'"),
        ({**BELL, "name": "x", "tz": "Mars/Olympus"}, "tz", "tz 'Mars/Olympus'"),
        ({**BELL, "name": "x", "at": "2099-01-01T08:00"}, None, "give at or cron, not both"),
        ({**BELL, "name": "x", "run_if_late_s": -5}, "run_if_late_s", "run_if_late_s -5"),
        ({**BELL, "name": "x", "colour": "red"}, "colour", "colour: "),
        ({"cron": "0 8 * * *", "text": "a"}, "name", "name: Field required"),
    ]:
        refused = error(httpx.post(f"{url}/v1/schedules", json=body, headers=boss), 400)
        assert refused["param"] == param and refused["message"].startswith(start), refused
    assert error(httpx.post(f"{url}/v1/schedules", content=b"{oops", headers=boss), 400)["code"] == "invalid_json"
    assert error(httpx.post(f"{url}/v1/schedules", json=[BELL], headers=boss), 400)["message"] == (
        "the body must be a JSON object")
    assert error(httpx.get(f"{url}/v1/schedules/next", params={"count": 0}, headers=boss), 400)["param"] == "count"

    for name in ("speaker", "curator"):  # managing schedules is an admin's
        assert error(httpx.get(f"{url}/v1/schedules", headers=made[name]), 403)["code"] == "insufficient_scope"
        assert error(httpx.post(f"{url}/v1/schedules", json=BELL, headers=made[name]), 403)
        assert error(httpx.delete(f"{url}/v1/schedules/bell", headers=made[name]), 403)
    assert error(httpx.get(f"{url}/v1/schedules/next"), 401)["code"] == "missing_token"

    assert httpx.delete(f"{url}/v1/schedules/bell", headers=boss).status_code == 204
    gone = error(httpx.delete(f"{url}/v1/schedules/bell", headers=boss), 404)
    assert gone["code"] == "schedule_not_found" and "no such schedule" in gone["message"]
    assert [s["name"] for s in httpx.get(f"{url}/v1/schedules", headers=boss).json()["schedules"]] == ["close"]

    rows = [r for r in read_records(daemon.service.settings.state_dir) if r["outcome"] in CHANGE_OUTCOMES]
    assert [(r["outcome"], r["protocol"], r["token_name"], r["subject"]) for r in rows] == [
        ("schedule_added", "http", "boss", "bell"), ("schedule_added", "http", "boss", "close"),
        ("schedule_removed", "http", "boss", "bell")]
    assert rows[1]["reason"].startswith(f"at {once['at']} UTC") and rows[0]["client"].startswith("127.0.0.1:")


def test_a_schedule_added_over_http_runs_with_its_stable_id(http_daemon: Any, tmp_path: Path) -> None:
    made = tokens(tmp_path, boss=["admin"])
    daemon, url = http_daemon(**MANY)
    due = (datetime.now(timezone.utc) + timedelta(seconds=4)).replace(microsecond=0)
    body = {"name": "bell", "at": due.replace(tzinfo=None).isoformat(), "tz": "UTC", "text": "Now.",
            "run_if_late_s": 300}
    added = httpx.post(f"{url}/v1/schedules", json=body, headers=made["boss"])
    run_id = f"bell@{due.strftime('%Y-%m-%dT%H:%M:%SZ')}"
    assert added.status_code == 201 and added.json()["next_id"] == run_id
    assert daemon.wait_event(run_id, "done", timeout=60)["id"] == run_id
    rows = [r for r in read_records(daemon.service.settings.state_dir) if r["request_id"] == run_id]
    assert [(r["outcome"], r["topic"]) for r in rows] == [("done", "schedule/bell")]
