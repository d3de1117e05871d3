"""``GET /v1/audit`` over real sockets: the trail of requests from several protocols and tokens, filtered, paged
and exported as CSV, for an admin only; a row's audio replayed while the rendered-audio cache holds it."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from daemon.core.audit import COLUMNS
from daemon.protocols.http import audit_trail
from tests.http_fixtures import TONE_S, decode
from tests.integration.test_http_native import MANY, error, tokens
from tests.unit.core.test_pipeline import CachedTone


def test_the_trail_filtered_paged_and_exported(http_daemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made = tokens(tmp_path, boss=["admin"], kiosk=["speak"], other=["speak"])
    daemon, url = http_daemon(**MANY)
    started = time.time()
    for n in range(5):
        said = httpx.post(f"{url}/v1/say", json={"id": f"k{n}", "text": "Hi.", "voice": "tone-b",
                                                 "output": "response"}, headers=made["kiosk"])
        assert said.status_code == 202
    assert httpx.post(f"{url}/v1/say", json={"id": "o1", "text": "Hello.", "output": "response"},
                      headers=made["other"]).status_code == 202
    daemon.say({"id": "m1", "text": "From MQTT.", "voice": "tone-a"})
    assert httpx.post(f"{url}/v1/say", json={"text": "Hi.", "speed": 9}, headers=made["kiosk"]).status_code == 400
    for request_id in ("k4", "o1", "m1"):
        daemon.wait_event(request_id, "done")
    boss = made["boss"]

    everything = httpx.get(f"{url}/v1/audit", headers=boss).json()
    assert everything["total"] == 8 and everything["page"] == 1 and everything["per_page"] == 50
    rows = everything["rows"]
    assert rows[0]["outcome"] == "rejected" and rows[0]["reason"].startswith("400: speed")
    assert set(rows[0]) == {"seq", "replayable", *COLUMNS} and [row["seq"] for row in rows] == sorted(
        (row["seq"] for row in rows), reverse=True)
    assert {row["request_id"] for row in rows[1:]} == {"k0", "k1", "k2", "k3", "k4", "o1", "m1"}

    def ids(**params: object) -> list[str | None]:
        answer = httpx.get(f"{url}/v1/audit", params=params, headers=boss)
        assert answer.status_code == 200, answer.text
        return [row["request_id"] for row in answer.json()["rows"]]

    assert sorted(ids(token="kiosk", outcome="done")) == ["k0", "k1", "k2", "k3", "k4"]
    assert ids(protocol="native") == ["m1"] and ids(voice="tone-a") == ["m1"]
    assert ids(outcome="rejected") == [None] and ids(token="other") == ["o1"]
    assert ids(since=started - 60, until=started - 1) == [] and len(ids(since=started - 60)) == 8
    page2 = httpx.get(f"{url}/v1/audit", params={"per_page": 3, "page": 2}, headers=boss).json()
    assert [row["request_id"] for row in page2["rows"]] == [row["request_id"] for row in rows[3:6]]
    assert page2["total"] == 8 and ids(per_page=3, page=4) == []

    exported = httpx.get(f"{url}/v1/audit", params={"format": "csv", "token": "other"}, headers=boss)
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    assert "attachment" in exported.headers["content-disposition"]
    [header, *lines] = list(csv.reader(io.StringIO(exported.text)))
    assert header == ["time", *COLUMNS] and len(lines) == 1
    row = dict(zip(header, lines[0], strict=True))
    assert row["request_id"] == "o1" and row["outcome"] == "done" and row["time"].endswith("+00:00")
    monkeypatch.setattr(audit_trail, "CSV_BATCH", 3)  # the export reads batch after batch
    whole = list(csv.reader(io.StringIO(httpx.get(f"{url}/v1/audit?format=csv", headers=boss).text)))
    assert [line[1 + COLUMNS.index("request_id")] for line in whole[1:]] == [row["request_id"] or "" for row in rows]


def test_the_trail_is_for_an_admin_and_its_parameters_are_checked(http_daemon, tmp_path: Path) -> None:
    made = tokens(tmp_path, boss=["admin"], kiosk=["speak"])
    _, url = http_daemon(**MANY)
    assert error(httpx.get(f"{url}/v1/audit"), 401)["code"] == "missing_token"
    assert error(httpx.get(f"{url}/v1/audit", headers=made["kiosk"]), 403)["code"] == "insufficient_scope"
    for params, param in (({"page": 0}, "page"), ({"per_page": 501}, "per_page"), ({"outcome": "maybe"}, "outcome"),
                          ({"protocol": "smtp"}, "protocol"), ({"since": "yesterday"}, "since"),
                          ({"format": "xml"}, "format"), ({"voice": ""}, "voice"), ({"outcom": "done"}, "outcom")):
        refused = error(httpx.get(f"{url}/v1/audit", params=params, headers=made["boss"]), 400)
        assert refused["param"] == param, (params, refused)
    assert "/v1/audit" in httpx.get(f"{url}/openapi.json").json()["paths"]


def test_a_cell_a_spreadsheet_would_run_is_defused(http_daemon, tmp_path: Path) -> None:
    made = tokens(tmp_path, boss=["admin"])
    daemon, url = http_daemon(**MANY, sections={"audit": {"store_text": True}})
    assert httpx.post(f"{url}/v1/say", json={"id": "f1", "text": "=1+1", "output": "response"},
                      headers=made["boss"]).status_code == 202
    daemon.wait_event("f1", "done")
    [_, line] = list(csv.reader(io.StringIO(httpx.get(f"{url}/v1/audit?format=csv", headers=made["boss"]).text)))
    assert line[1 + COLUMNS.index("text")] == "'=1+1"
    assert httpx.get(f"{url}/v1/audit", headers=made["boss"]).json()["rows"][0]["text"] == "=1+1"  # JSON as it is


def test_a_row_s_audio_replays_while_the_cache_holds_it(http_daemon, tmp_path: Path) -> None:
    made = tokens(tmp_path, boss=["admin"], kiosk=["speak"])
    daemon, url = http_daemon(CachedTone(seconds=TONE_S), **MANY)
    boss = made["boss"]
    assert httpx.post(f"{url}/v1/say", json={"id": "h1", "text": "One. Two.", "output": "response"},
                      headers=made["kiosk"]).status_code == 202
    daemon.say({"id": "m1", "text": "From MQTT.", "voice": "tone-a"})
    assert httpx.post(f"{url}/v1/say", json={"text": "Hi.", "speed": 9}, headers=boss).status_code == 400
    for request_id in ("h1", "m1"):
        daemon.wait_event(request_id, "done")
    rows = {row["request_id"]: row for row in httpx.get(f"{url}/v1/audit", headers=boss).json()["rows"]}
    assert rows["h1"]["replayable"] and rows["m1"]["replayable"] and not rows[None]["replayable"]

    kept, rate = decode(httpx.get(f"{url}/v1/requests/h1/audio", headers=made["kiosk"]).content, "wav")
    replayed = httpx.get(f"{url}/v1/audit/{rows['h1']['seq']}/audio", headers=boss)
    assert replayed.status_code == 200 and replayed.headers["content-type"] == "audio/wav"
    samples, replay_rate = decode(replayed.content, "wav")
    assert replay_rate == rate and np.array_equal(samples, kept)  # what the caller heard, sample for sample
    mqtt_audio, _ = decode(httpx.get(f"{url}/v1/audit/{rows['m1']['seq']}/audio", headers=boss).content, "wav")
    assert abs(len(mqtt_audio) / replay_rate - TONE_S) < 0.01  # one sentence, one tone

    gone = error(httpx.get(f"{url}/v1/audit/{rows[None]['seq']}/audio", headers=boss), 410)
    assert gone["code"] == "audio_gone" and "rejected" in gone["message"]
    assert error(httpx.get(f"{url}/v1/audit/99999/audio", headers=boss), 404)["param"] == "seq"
    assert error(httpx.get(f"{url}/v1/audit/{rows['h1']['seq']}/audio", headers=made["kiosk"]), 403)
    for entry in (tmp_path / "state" / "cache" / "audio").glob("*.npz"):
        entry.unlink()  # let go of by the cache (as by eviction): the row says so and the audio is gone
    evicted = error(httpx.get(f"{url}/v1/audit/{rows['h1']['seq']}/audio", headers=boss), 410)
    assert "no longer holds it" in evicted["message"]
    rows = {row["request_id"]: row for row in httpx.get(f"{url}/v1/audit", headers=boss).json()["rows"]}
    assert not rows["h1"]["replayable"] and rows["m1"]["replayable"] is False
