"""The box's own REST routes with httpx over real sockets against a real daemon: ``POST /v1/say`` and the audio it
keeps, requests' states and who may see them, the event stream, voices (with the demo bundle's engine), status,
and a request for the speaker that outlives a killed daemon."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from daemon.core.audit import read_records
from daemon.core.state_db import StateDb
from daemon.core.tokens import TokenStore
from daemon.model.bundle import Bundle
from daemon.model.engine import Engine
from daemon.model.hardware import HardwareProfile
from tests.conftest import AlsaCapture, Broker, Recorder
from tests.doubles import ToneEngine
from tests.http_fixtures import TONE_S, decode, free_port, no_traceback
from tests.integration.test_durability import QUIET, DaemonProcess
from tests.unit.model.test_engine import make_wav

TEXT = "One. Two. Three."  # three tones of TONE_S
MANY = {"rate_limit_burst": 500}


def tokens(tmp_path: Path, **scopes: list[str]) -> dict[str, dict[str, str]]:
    """Tokens made before the daemon starts (its state directory is ``tmp_path/state``): name -> headers."""
    db = StateDb.in_dir(tmp_path / "state")
    store = TokenStore(db)
    made = {name: {"Authorization": f"Bearer {store.add(name, wanted)}"} for name, wanted in scopes.items()}
    db.close()
    return made


def wait_until(condition: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true"
        time.sleep(0.02)


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    """The OpenAI-shaped error of a refused call, checked for its status and that it leaks no traceback."""
    assert response.status_code == status, (status, response.status_code, response.text)
    no_traceback(response)
    body = response.json()
    assert list(body) == ["error"] and body["error"]["message"], body
    return body["error"]


# -- POST /v1/say ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["wav", "pcm"])
def test_say_keeps_the_audio_for_its_caller(http_daemon, fmt: str) -> None:
    pace = threading.Semaphore(0)
    daemon, url = http_daemon(ToneEngine(seconds=TONE_S, pace=pace))
    queued = httpx.post(f"{url}/v1/say", json={"id": "s1", "text": TEXT, "output": "response", "format": fmt})
    assert queued.status_code == 202, queued.text
    assert queued.json() == {"id": "s1", "state": "queued", "status_url": "/v1/requests/s1",
                             "audio_url": "/v1/requests/s1/audio"}
    assert queued.headers["location"] == "/v1/requests/s1"
    early = error(httpx.get(f"{url}/v1/requests/s1/audio"), 409)  # one sentence of three is still to come
    assert early["code"] == "not_ready" and "not ready" in early["message"]

    pace.release(3)
    daemon.wait_event("s1", "done")
    state = httpx.get(f"{url}/v1/requests/s1").json()
    assert state["state"] == "done" and state["source"] == "http" and state["output"] == "publish"
    kinds = [event["kind"] for event in state["events"]]
    assert kinds == ["queued", "started", "first_audio", "done"], kinds
    done = state["events"][-1]
    assert done["fields"]["audio_ms"] == round(3 * TONE_S * 1000) and done["ts"] >= state["events"][0]["ts"]

    audio = httpx.get(f"{url}/v1/requests/s1/audio")
    assert audio.status_code == 200 and audio.headers["x-sample-rate"] == "16000"
    assert audio.headers["content-type"] == ("audio/wav" if fmt == "wav" else "audio/pcm")
    samples, rate = decode(audio.content, fmt, rate=16000)
    assert rate == 16000 and abs(len(samples) / rate - 3 * TONE_S) < 0.01 and np.abs(samples).max() > 0.2
    [row] = [r for r in read_records(daemon.service.settings.state_dir) if r["request_id"] == "s1"]
    assert (row["outcome"], row["protocol"], row["topic"]) == ("done", "http", "POST /v1/say")


def test_the_kept_audio_streams_while_it_is_delivered(http_daemon) -> None:
    pace = threading.Semaphore(0)
    daemon, url = http_daemon(ToneEngine(seconds=TONE_S, pace=pace))
    assert httpx.post(f"{url}/v1/say", json={"id": "s2", "text": TEXT, "output": "response"}).status_code == 202
    with httpx.stream("GET", f"{url}/v1/requests/s2/audio", params={"stream": "true"}, timeout=30) as streamed:
        assert streamed.status_code == 200 and streamed.headers["x-sample-rate"] == "16000"
        chunks = streamed.iter_bytes()
        body = b""
        pace.release()  # one sentence of three
        while len(body) < 44 + int(TONE_S * 16000) * 2:
            body += next(chunks)
        assert httpx.get(f"{url}/v1/requests/s2").json()["state"] == "started"  # heard before it is done
        pace.release(2)
        body += b"".join(chunks)
    daemon.wait_event("s2", "done")
    streamed_samples, _ = decode(body, "wav")
    kept, _ = decode(httpx.get(f"{url}/v1/requests/s2/audio").content, "wav")
    assert len(kept) == round(3 * TONE_S * 16000) and np.array_equal(streamed_samples, kept)
    again = httpx.get(f"{url}/v1/requests/s2/audio", params={"stream": "true"})  # done: the kept audio, whole
    assert again.status_code == 200 and again.content[44:] == body[44:]

    gate = threading.Event()
    _, url = http_daemon(ToneEngine(gate=gate))
    for say in ({"id": "a1", "text": "Hold."}, {"id": "e1", "text": "Too late.", "ttl_s": 0.5}):
        assert httpx.post(f"{url}/v1/say", json={**say, "output": "response"}).status_code == 202
    threading.Timer(1.0, gate.set).start()  # e1's time runs out while a1 holds the engine
    gone = error(httpx.get(f"{url}/v1/requests/e1/audio", params={"stream": "true"}, timeout=30), 410)
    assert gone["code"] == "audio_gone" and "expired" in gone["message"]  # it waited, and there never was any


def test_say_without_an_id_gets_one_and_publish_is_response(http_daemon) -> None:
    daemon, url = http_daemon()
    answer = httpx.post(f"{url}/v1/say", json={"text": "Hello.", "output": "publish"}).json()
    assert len(answer["id"]) == 32 and answer["audio_url"] == f"/v1/requests/{answer['id']}/audio"
    daemon.wait_event(answer["id"], "done")
    assert decode(httpx.get(url + answer["audio_url"]).content, "wav")[0].size == int(TONE_S * 16000)

    odd = httpx.post(f"{url}/v1/say", json={"id": "a b?c", "text": "Hello."}).json()  # no speaker: kept
    assert odd["status_url"] == "/v1/requests/a%20b%3Fc"
    daemon.wait_event("a b?c", "done")
    assert httpx.get(url + odd["status_url"]).json()["id"] == "a b?c"
    assert httpx.get(url + odd["audio_url"]).status_code == 200


def test_say_plays_on_the_speaker(http_daemon, alsa: AlsaCapture) -> None:
    daemon, url = http_daemon(sections={"audio": {"output_device": "gsvtest", **QUIET}})
    answer = httpx.post(f"{url}/v1/say", json={"id": "p1", "text": TEXT, "volume": 0.5})
    assert answer.status_code == 202 and answer.json()["audio_url"] is None  # a box with a speaker plays
    daemon.wait_event("p1", "done")
    assert httpx.get(f"{url}/v1/status").json()["speaker"] is True
    [played] = AlsaCapture.streams(alsa.good)
    assert len(played) / 16000 >= 3 * TONE_S and 0.2 < np.abs(played).max() < 0.3  # half of the tone's 0.5
    kept = error(httpx.get(f"{url}/v1/requests/p1/audio"), 404)
    assert kept["code"] == "no_audio"
    assert httpx.get(f"{url}/v1/requests/p1").json()["output"] == "play"

    both = httpx.post(f"{url}/v1/say", json={"id": "p2", "text": "Both.", "output": "both"}).json()
    daemon.wait_event("p2", "done")
    assert len(AlsaCapture.streams(alsa.good)) == 2
    assert decode(httpx.get(url + both["audio_url"]).content, "wav")[0].size == int(TONE_S * 16000)


def test_play_needs_a_speaker(http_daemon) -> None:
    daemon, url = http_daemon()
    refused = error(httpx.post(f"{url}/v1/say", json={"text": "Hi.", "output": "play"}), 400)
    assert refused["param"] == "output" and "audio.output_device" in refused["message"]
    [row] = [r for r in read_records(daemon.service.settings.state_dir) if r["outcome"] == "rejected"]
    assert row["protocol"] == "http" and row["topic"] == "POST /v1/say" and row["reason"].startswith("400")


def test_a_repeated_id_is_a_duplicate_and_never_spoken_twice(http_daemon) -> None:
    engine = ToneEngine(seconds=TONE_S)
    daemon, url = http_daemon(engine)
    say = {"id": "d1", "text": "Once.", "output": "response"}
    assert httpx.post(f"{url}/v1/say", json=say).status_code == 202
    daemon.wait_event("d1", "done")
    again = httpx.post(f"{url}/v1/say", json=say)
    assert again.status_code == 200
    assert again.json() == {"id": "d1", "state": "done", "duplicate": True, "status_url": "/v1/requests/d1",
                            "audio_url": "/v1/requests/d1/audio"}
    daemon.wait_event("d1", "duplicate")
    assert engine.calls == ["Once."]
    state = httpx.get(f"{url}/v1/requests/d1").json()
    assert state["state"] == "done" and [e["kind"] for e in state["events"]][-1] == "duplicate"
    assert httpx.get(f"{url}/v1/requests/d1/audio").status_code == 200  # the original's audio is still there

    changed = httpx.post(f"{url}/v1/say", json={**say, "text": "Twice."})  # the same id, other content: a new one
    assert changed.status_code == 202
    wait_until(lambda: len([e for e in daemon.events("d1") if e["event"] == "done"]) == 2)
    assert engine.calls == ["Once.", "Twice."]


BAD_SAY: list[tuple[Any, str | None, str]] = [
    ({"id": 1.5, "text": "Hi."}, "id", "id: must be a string or an integer"),
    ({"id": "a/b", "text": "Hi."}, "id", "id contains a forbidden character '/'"),
    ({"id": "x" * 200, "text": "Hi."}, "id", "id is longer than 128 characters"),
    ({"voice": "tone-a"}, "text", "text: Field required"),
    ({"text": 5}, "text", "text: Input should be a valid string"),
    ({"text": "  "}, "text", "empty text"),
    ({"text": "x" * 3000}, "text", "text too long"),
    ({"text": "Hi.", "voice": "nobody"}, "voice", "unknown voice 'nobody'"),
    ({"text": "Hi.", "lang": "!!"}, "lang", "invalid lang"),
    ({"text": "Hi.", "priority": "urgent"}, "priority", "priority: Input should be"),
    ({"text": "Hi.", "interrupt": "yes"}, "interrupt", "interrupt: Input should be a valid boolean"),
    ({"text": "Hi.", "ttl_s": 0}, "ttl_s", "ttl_s: Input should be greater than 0"),
    ({"text": "Hi.", "ttl_s": 5, "expires_at": 2e9}, "ttl_s", "give ttl_s or expires_at, not both"),
    ({"text": "Hi.", "expires_at": "tomorrow"}, "expires_at", "expires_at: not an ISO 8601 time"),
    ({"text": "Hi.", "expires_at": "2030-01-01T00:00:00"}, "expires_at", "expires_at: needs a time zone"),
    ({"text": "Hi.", "expires_at": 1}, "expires_at", "expires_at: expired before it was queued"),
    ({"text": "Hi.", "volume": 3}, "volume", "volume: Input should be less than or equal to 2"),
    ({"text": "Hi.", "speed": 9}, "speed", "speed: Input should be less than or equal to 4"),
    ({"text": "Hi.", "chime": "no"}, "chime", "chime: Input should be a valid boolean"),
    ({"text": "Hi.", "output": "speaker"}, "output", "output: must be play, response (or publish) or both"),
    ({"text": "Hi.", "output": 1}, "output", "output: must be play"),
    ({"text": "Hi.", "format": "mp3"}, "format", "format: Input should be 'wav' or 'pcm'"),
    ({"text": "Hi.", "colour": "red"}, "colour", "colour: Extra inputs are not permitted"),
    (["Hi."], None, "the body must be a JSON object"),
    ("Hi.", None, "the body must be a JSON object"),
]


def test_say_refuses_bad_input_naming_the_field(http_daemon) -> None:
    daemon, url = http_daemon(**MANY)
    for body, param, message in BAD_SAY:
        refused = error(httpx.post(f"{url}/v1/say", json=body), 400)
        assert refused["param"] == param and refused["message"].startswith(message), (body, refused)
        assert refused["type"] == "invalid_request_error"
    for raw in (b"{not json", b"\xff\xfe"):
        refused = error(httpx.post(f"{url}/v1/say", content=raw, headers={"content-type": "application/json"}), 400)
        assert refused["code"] == "invalid_json" and "not valid JSON" in refused["message"]
    rejected = [r for r in read_records(daemon.service.settings.state_dir) if r["outcome"] in ("rejected", "expired")]
    assert len(rejected) == len(BAD_SAY) + 2 and all(r["protocol"] == "http" for r in rejected)


def test_a_full_queue_is_a_503(http_daemon) -> None:
    gate = threading.Event()
    daemon, url = http_daemon(ToneEngine(gate=gate), sections={"queue": {"max_depth": 1}})
    try:
        first = httpx.post(f"{url}/v1/say", json={"id": "f1", "text": "One."})
        second = httpx.post(f"{url}/v1/say", json={"id": "f2", "text": "Two."})
        daemon.wait_event("f1", "started")  # f1 is taken into synthesis, f2 waits in the one place there is
        third = httpx.post(f"{url}/v1/say", json={"id": "f3", "text": "Three."})
    finally:
        gate.set()
    assert (first.status_code, second.status_code) == (202, 202)
    refused = error(third, 503)
    assert refused["code"] == "queue_full" and third.headers["retry-after"] == "5"
    assert httpx.get(f"{url}/v1/requests/f3").json()["state"] == "rejected"


# -- GET /v1/requests/{id} ------------------------------------------------------------------------


def test_a_token_sees_its_own_requests_and_an_admin_all(http_daemon, tmp_path: Path) -> None:
    made = tokens(tmp_path, kiosk=["speak"], other=["speak"], boss=["admin"], curator=["voices"])
    daemon, url = http_daemon()
    mine = httpx.post(f"{url}/v1/say", json={"id": "k1", "text": "Hi.", "output": "response"},
                      headers=made["kiosk"])
    assert mine.status_code == 202
    daemon.wait_event("k1", "done")
    daemon.say({"id": "m1", "text": "From MQTT."})
    daemon.wait_event("m1", "done")

    assert httpx.get(f"{url}/v1/requests/k1", headers=made["kiosk"]).json()["state"] == "done"
    assert httpx.get(f"{url}/v1/requests/k1/audio", headers=made["kiosk"]).status_code == 200
    for request_id, tail in (("k1", ""), ("k1", "/audio"), ("m1", ""), ("nowhere", "")):
        hidden = error(httpx.get(f"{url}/v1/requests/{request_id}{tail}", headers=made["other"]), 404)
        assert hidden["type"] == "not_found_error" and hidden["code"] == "request_not_found"
        assert hidden["message"].startswith(f"no request {request_id!r} is known")  # as if it never was
    assert httpx.get(f"{url}/v1/requests/k1", headers=made["boss"]).json()["state"] == "done"
    mqtt = httpx.get(f"{url}/v1/requests/m1", headers=made["boss"]).json()
    assert mqtt["source"] == "native" and mqtt["state"] == "done" and mqtt["audio_url"] is None
    assert error(httpx.get(f"{url}/v1/requests/k1"), 401)["code"] == "missing_token"
    assert error(httpx.get(f"{url}/v1/requests/k1", headers=made["curator"]), 403)["code"] == "insufficient_scope"
    assert error(httpx.post(f"{url}/v1/say", json={"text": "x"}, headers=made["curator"]), 403)["param"] is None
    refusals = [r for r in read_records(daemon.service.settings.state_dir) if r["outcome"] == "rejected"]
    assert [r["reason"][:3] for r in refusals] == ["404"] * 4 + ["401", "403", "403"]
    assert refusals[0]["token_name"] == "other" and refusals[-1]["token_name"] == "curator"


# -- GET /v1/events -------------------------------------------------------------------------------


def test_event_stream_carries_the_bus_and_lets_go_of_a_client_that_leaves(http_daemon, tmp_path: Path) -> None:
    made = tokens(tmp_path, boss=["admin"], kiosk=["speak"])
    daemon, url = http_daemon()
    feed = daemon.service.http.feed
    assert error(httpx.get(f"{url}/v1/events"), 401)["code"] == "missing_token"
    assert error(httpx.get(f"{url}/v1/events", headers=made["kiosk"]), 403)["code"] == "insufficient_scope"
    seen: list[dict[str, Any]] = []
    with httpx.Client(timeout=30) as client, client.stream("GET", f"{url}/v1/events", headers=made["boss"]) as stream:
        assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        assert next(lines).startswith(":")  # subscribed from here on
        assert len(feed) == 1
        said = httpx.post(f"{url}/v1/say", json={"id": "e1", "text": TEXT, "output": "response"},
                          headers=made["kiosk"])
        assert said.status_code == 202
        for line in lines:
            if line.startswith("data: "):
                seen.append(json.loads(line[6:]))
                if seen[-1]["id"] == "e1" and seen[-1]["event"] == "done":
                    break
    mine = [event for event in seen if event["id"] == "e1"]
    assert [event["event"] for event in mine] == ["queued", "started", "first_audio", "done"]
    daemon.wait_event("e1", "done")
    published = [event for event in daemon.events("e1")]
    # the MQTT events topic's payloads, less the outbox's numbering of MQTT messages (and each its own time)
    assert [{k: v for k, v in e.items() if k != "ts"} for e in mine] == \
        [{k: v for k, v in e.items() if k not in ("ts", "seq")} for e in published]
    wait_until(lambda: len(feed) == 0)  # the client left: nothing is kept for it


# -- voices ---------------------------------------------------------------------------------------


def voice_form(name: str | None = "carol", text: str | None = "This is a reference clip.", lang: str | None = "en",
               audio: bytes | None = None) -> dict[str, Any]:
    data = {key: value for key, value in (("name", name), ("text", text), ("lang", lang)) if value is not None}
    files = {"audio": ("carol.wav", audio, "audio/wav")} if audio is not None else None
    return {"data": data, "files": files}


BAD_VOICE: list[tuple[dict[str, Any], str, str]] = [
    (voice_form(name=None, audio=b"RIFF"), "name", "name: Field required"),
    (voice_form(text=None, audio=b"RIFF"), "text", "text: Field required"),
    (voice_form(lang=None, audio=b"RIFF"), "lang", "lang: Field required"),
    (voice_form(), "audio", "audio: a WAV file is required"),
    (voice_form(name="../etc", audio=b"RIFF"), "name", "voice name '../etc' is invalid"),
    (voice_form(name="a" * 65, audio=b"RIFF"), "name", "voice name"),
    (voice_form(lang="xx", audio=b"RIFF"), "lang",
     "voice language must be zh, en, all_zh, ja, all_ja, ko, all_ko, yue, all_yue, auto or auto_yue, got 'xx'"),
    (voice_form(text="   ", audio=b"RIFF"), "text", "the transcript of the reference clip is empty"),
    ({"data": {"text": "t", "lang": "en"}, "files": {"name": ("n.txt", b"x"), "audio": ("a.wav", b"RIFF")}}, "name",
     "name: must be a form field, not a file"),
]


def test_voice_listing_scopes_and_refusals(http_daemon, tmp_path: Path) -> None:
    made = tokens(tmp_path, kiosk=["speak"], curator=["voices"])
    _, url = http_daemon(**MANY)
    listed = httpx.get(f"{url}/v1/voices", headers=made["kiosk"]).json()["voices"]
    assert {v["name"]: v["languages"] for v in listed} == {"tone-a": ["en"], "tone-b": ["en"], "en": ["en"]}
    assert next(v for v in listed if v["name"] == "tone-a")["description"] == "test tone A"
    assert httpx.get(f"{url}/v1/voices", headers=made["curator"]).json()["voices"] == listed  # manages what it sees
    assert error(httpx.get(f"{url}/v1/voices"), 401)["code"] == "missing_token"

    upload = voice_form(audio=make_wav(seed=3))
    assert error(httpx.post(f"{url}/v1/voices", **upload, headers=made["kiosk"]), 403)["code"] == "insufficient_scope"
    assert error(httpx.post(f"{url}/v1/voices", **upload), 401)["code"] == "missing_token"
    assert error(httpx.delete(f"{url}/v1/voices/tone-a", headers=made["kiosk"]), 403)["code"] == "insufficient_scope"
    for form, param, message in BAD_VOICE:
        refused = error(httpx.post(f"{url}/v1/voices", **form, headers=made["curator"]), 400)
        assert refused["param"] == param and refused["message"].startswith(message), (form["data"], refused)
    as_json = error(httpx.post(f"{url}/v1/voices", json={"name": "x"}, headers=made["curator"]), 400)
    assert as_json["param"] == "name"  # not a form: no fields at all
    cannot = error(httpx.post(f"{url}/v1/voices", **upload, headers=made["curator"]), 409)
    assert cannot["code"] == "cannot_register" and "GPT-SoVITS" in cannot["message"]

    built_in = error(httpx.delete(f"{url}/v1/voices/en", headers=made["curator"]), 409)
    assert "eSpeak NG" in built_in["message"] and built_in["param"] == "name"
    assert error(httpx.delete(f"{url}/v1/voices/tone-a", headers=made["curator"]), 409)["code"] == "built_in_voice"
    unknown = error(httpx.delete(f"{url}/v1/voices/nobody", headers=made["curator"]), 404)
    assert unknown["code"] == "voice_not_found" and "nobody" in unknown["message"]


def test_a_voice_uploaded_over_http_speaks_and_is_removed(http_daemon, demo_bundle: Path, tmp_path: Path) -> None:
    made = tokens(tmp_path, curator=["voices"], kiosk=["speak"])
    engine = Engine(Bundle.load(demo_bundle), HardwareProfile.load("x86-cpu"), tmp_path / "voices")
    daemon, url = http_daemon(engine)
    not_wav = error(httpx.post(f"{url}/v1/voices", **voice_form(audio=b"not a wav at all"),
                               headers=made["curator"]), 400)
    assert not_wav["param"] == "audio" and not_wav["message"] == "carol.wav: not a WAV file (no RIFF/WAVE header)"
    short = error(httpx.post(f"{url}/v1/voices", **voice_form(audio=make_wav(seconds=1.0)), headers=made["curator"]),
                  400)
    assert short["param"] == "audio" and "it must be 3-10 s" in short["message"]

    added = httpx.post(f"{url}/v1/voices", **voice_form(audio=make_wav(seed=3)), headers=made["curator"], timeout=120)
    assert added.status_code == 201, added.text
    assert added.json()["name"] == "carol" and added.json()["languages"] == ["en"]
    assert (added.json()["clip_s"], added.json()["transcript"]) == (4.0, "This is a reference clip.")
    registered = daemon.recorder.wait_for(daemon.topics.events, lambda m: m.json()["event"] == "voice_registered")
    assert registered.json()["voice"] == "carol"
    assert "carol" in {v["name"] for v in httpx.get(f"{url}/v1/voices", headers=made["kiosk"]).json()["voices"]}
    said = httpx.post(f"{url}/v1/say", json={"id": "c1", "text": "Hello there.", "voice": "carol",
                                             "output": "response"}, headers=made["kiosk"])
    assert said.status_code == 202, said.text
    daemon.wait_event("c1", "done", timeout=120)
    samples, rate = decode(httpx.get(f"{url}/v1/requests/c1/audio", headers=made["kiosk"]).content, "wav")
    assert rate == engine.sample_rate and len(samples) > rate * 0.2

    removed = httpx.delete(f"{url}/v1/voices/carol", headers=made["curator"])
    assert removed.status_code == 204 and not removed.content
    assert "carol" not in {v.name for v in engine.voices()} and not (tmp_path / "voices" / "voices" / "carol").exists()
    assert error(httpx.delete(f"{url}/v1/voices/carol", headers=made["curator"]), 404)["code"] == "voice_not_found"
    gone = error(httpx.post(f"{url}/v1/say", json={"text": "Hi.", "voice": "carol"}, headers=made["kiosk"]), 400)
    assert gone["param"] == "voice"


# -- GET /v1/status -------------------------------------------------------------------------------


def test_status_says_how_the_box_is_and_where_it_listens(http_daemon, mosquitto_broker: Broker,
                                                          tmp_path: Path) -> None:
    made = tokens(tmp_path, kiosk=["speak"], curator=["voices"])
    daemon, url = http_daemon()
    status = httpx.get(f"{url}/v1/status", headers=made["kiosk"]).json()
    assert status["engine_state"] == "ready" and status["model"] == "tone" and status["queue_depth"] == 0
    assert status["state"] == "idle" and status["sample_rate"] == 16000
    assert status["listeners"] == {"mqtt": {"broker": f"{mosquitto_broker.host}:{mosquitto_broker.port}",
                                            "connected": True}, "http": url, "wyoming": None}
    assert status["speaker"] is False and 0 <= status["uptime_s"] < 600
    assert error(httpx.get(f"{url}/v1/status", headers=made["curator"]), 403)["code"] == "insufficient_scope"
    assert error(httpx.get(f"{url}/v1/status"), 401)["code"] == "missing_token"
    paths = httpx.get(f"{url}/openapi.json").json()["paths"]
    assert {"/v1/say", "/v1/requests/{request_id}", "/v1/requests/{request_id}/audio", "/v1/events", "/v1/voices",
            "/v1/voices/{name}", "/v1/status", "/v1/status/history"} <= set(paths)


def test_status_history_has_a_point_for_each_request_done(http_daemon, tmp_path: Path) -> None:
    made = tokens(tmp_path, kiosk=["speak"], curator=["voices"])
    pace = threading.Semaphore(0)
    daemon, url = http_daemon(ToneEngine(seconds=TONE_S, pace=pace))
    empty = httpx.get(f"{url}/v1/status/history", headers=made["kiosk"]).json()
    assert empty["points"] == [] and empty["window_s"] >= 3600
    said = httpx.post(f"{url}/v1/say", json={"id": "p1", "text": TEXT, "output": "response"}, headers=made["kiosk"])
    assert said.status_code == 202
    for _ in range(3):  # a sentence at a time, so synthesis takes a measurable while
        time.sleep(0.05)
        pace.release()
    done = daemon.wait_event("p1", "done")
    first_audio = daemon.wait_event("p1", "first_audio")

    history = httpx.get(f"{url}/v1/status/history", headers=made["kiosk"]).json()
    [point] = history["points"]
    assert point["first_audio_ms"] == first_audio["latency_ms"] and 0 <= point["first_audio_ms"] <= done["total_ms"]
    assert point["rtf"] == done["rtf"] and 0 < point["rtf"] < 1  # tones come faster than they play
    assert point["engine"] == "tone" and point["cached"] is False
    assert done["ts"] - 5 <= point["ts"] <= history["ts"]
    newer = httpx.get(f"{url}/v1/status/history", params={"since": point["ts"]}, headers=made["kiosk"]).json()
    assert newer["points"] == []
    bad = error(httpx.get(f"{url}/v1/status/history", params={"since": "yesterday"}, headers=made["kiosk"]), 400)
    assert bad["param"] == "since"
    assert error(httpx.get(f"{url}/v1/status/history", params={"until": 1}, headers=made["kiosk"]), 400)["param"] \
        == "until"
    assert error(httpx.get(f"{url}/v1/status/history", headers=made["curator"]), 403)["code"] == "insufficient_scope"


def test_status_tells_disk_memory_and_what_needs_an_operator(http_daemon, tmp_path: Path) -> None:
    made = tokens(tmp_path, kiosk=["speak"])
    _, url = http_daemon()
    status = httpx.get(f"{url}/v1/status", headers=made["kiosk"]).json()
    disk, memory = status["disk"], status["memory"]
    assert 0 < disk["free_bytes"] <= disk["total_bytes"] and disk["audio_cache_bytes"] == 0  # tones are not cached
    assert 0 < memory["rss_bytes"] < memory["total_bytes"] and 0 < memory["available_bytes"] <= memory["total_bytes"]
    assert status["problems"] == [] and status["state_write_errors"] == 0
    assert status["audio_device"] == {"errors": 0, "failing": False, "last_error": None, "last_error_ts": None}


def test_status_lists_the_request_in_hand_and_those_waiting_by_priority(http_daemon, tmp_path: Path) -> None:
    made = tokens(tmp_path, kiosk=["speak"], boss=["admin"])
    gate = threading.Event()
    daemon, url = http_daemon(ToneEngine(gate=gate))
    try:
        for request_id, priority in (("q1", "normal"), ("q2", "low"), ("q3", "high"), ("q4", "normal")):
            said = httpx.post(f"{url}/v1/say", json={"id": request_id, "text": f"Number {request_id}.",
                                                      "priority": priority}, headers=made["kiosk"])
            assert said.status_code == 202
            if request_id == "q1":
                daemon.wait_event("q1", "started")  # held in synthesis by the gate: the rest wait
        daemon.say({"id": "q5", "text": "Over MQTT.", "priority": "low"})
        daemon.wait_event("q5", "queued")
        seen = httpx.get(f"{url}/v1/status", headers=made["kiosk"]).json()
        full = httpx.get(f"{url}/v1/status", headers=made["boss"]).json()
    finally:
        gate.set()
    lineup = [(entry["id"], entry["state"], entry["priority"], entry["protocol"]) for entry in seen["queue"]]
    assert lineup == [("q1", "current", "normal", "http"), ("q3", "queued", "high", "http"),
                      ("q4", "queued", "normal", "http"), ("q2", "queued", "low", "http"),
                      (None, "queued", "low", "native")]  # someone else's: its place, not its id
    assert seen["queue_depth"] == 4 and all(0 <= entry["age_s"] < 60 for entry in seen["queue"])
    assert all("text" not in entry for entry in seen["queue"])  # a caller's words are an admin's to read
    assert [(entry["id"], entry["text"]) for entry in full["queue"]] == [
        ("q1", "Number q1."), ("q3", "Number q3."), ("q4", "Number q4."), ("q2", "Number q2."), ("q5", "Over MQTT.")]
    daemon.wait_event("q5", "done")
    assert httpx.get(f"{url}/v1/status", headers=made["kiosk"]).json()["queue"] == []


def test_status_raises_the_audio_device_s_errors_until_it_plays_again(http_daemon, alsa: AlsaCapture,
                                                                       tmp_path: Path) -> None:
    made = tokens(tmp_path, kiosk=["speak"])
    audio = {"output_device": "gsvbroken", "retry_initial_s": 0.1, "retry_max_s": 0.2}
    daemon, url = http_daemon(sections={"audio": audio})
    said = httpx.post(f"{url}/v1/say", json={"id": "loud", "text": "Hello.", "output": "play"}, headers=made["kiosk"])
    assert said.status_code == 202
    retry = daemon.wait_event("loud", "failed")
    device = httpx.get(f"{url}/v1/status", headers=made["kiosk"]).json()["audio_device"]
    assert device["failing"] is True and device["errors"] >= 1 and device["last_error"] == retry["reason"]
    [speaking] = httpx.get(f"{url}/v1/status", headers=made["kiosk"]).json()["queue"]
    assert speaking["id"] == "loud" and speaking["state"] == "current"
    alsa.repair()
    daemon.wait_event("loud", "done")
    device = httpx.get(f"{url}/v1/status", headers=made["kiosk"]).json()["audio_device"]
    assert device["failing"] is False and device["errors"] >= 1  # the count stays: it happened


# -- restart --------------------------------------------------------------------------------------


def test_a_request_for_the_speaker_outlives_a_killed_daemon(mosquitto_broker: Broker, recorder: Recorder,
                                                            tmp_path: Path, alsa: AlsaCapture) -> None:
    """Played requests are resumed from the durable queue; one whose audio was to be kept is dropped (``expired``),
    as its audio would have been kept in the memory of the daemon that died."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    audio = {"output_device": "gsvbroken", "retry_initial_s": 0.1, "retry_max_s": 0.2, **QUIET}
    daemon = DaemonProcess(mosquitto_broker, tmp_path, recorder, http={"port": port}, audio=audio)
    try:
        daemon.start()
        for request_id, output in (("first", "play"), ("second", "play"), ("kept", "response")):
            answer = httpx.post(f"{url}/v1/say", json={"id": request_id, "text": f"The {request_id}.",
                                                        "output": output})
            assert answer.status_code == 202, answer.text
        daemon.wait_event("first", "failed")  # the device fails: retrying, the others wait behind
        daemon.kill()
        before = len(daemon.events())
        alsa.repair()

        daemon.start()
        events = daemon.wait_terminal({"first", "second", "kept"})
        ends = {e["id"]: e for e in events[before:] if e["event"] in ("done", "expired")}
        assert ends["first"]["event"] == ends["second"]["event"] == "done"
        assert ends["kept"]["event"] == "expired" and "while the daemon was down" in ends["kept"]["reason"]
        assert len(AlsaCapture.streams(alsa.broken)) == 2
        second = httpx.get(f"{url}/v1/requests/second").json()  # known again from its resumed queued event
        assert second["state"] == "done" and second["events"][0]["fields"].get("resumed") is True
        assert httpx.get(f"{url}/v1/requests/kept").json()["state"] == "expired"
        assert error(httpx.get(f"{url}/v1/requests/kept/audio"), 410)["code"] == "audio_gone"
    finally:
        daemon.stop()
