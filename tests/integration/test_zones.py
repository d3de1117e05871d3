"""Zones end to end: a real mosquitto, the ALSA test devices (``gsvtest``, and ``gsvbroken``, which fails until
repaired) as two zones' sound cards, and an MQTT topic as a networked player's. Each zone plays on its own (a ward
announcement is heard while the lobby's goes on), ``"all"`` plays on every card, a failing zone is reported by
name while the others play, every request has one terminal event with each zone's result and one audit row, and
quiet hours hold back all but urgent requests; a schedule's run plays in the zones its payload names."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import numpy as np

from daemon.core.audit import read_records
from tests.conftest import AlsaCapture, Daemon, Recorder
from tests.doubles import ToneEngine
from tests.integration.test_durability import check_exactly_once, daemon_process  # noqa: F401 - a fixture
from tests.integration.test_http_native import error
from tests.integration.test_mqtt_native import read_wav

RATE = ToneEngine.sample_rate
TONE = 0.5  # the test engine's amplitude
QUIET = {"lead_in_ms": 50, "tail_ms": 50}
CARDS = [{"name": "lobby", "output_device": "gsvtest", "volume": 0.5, "lead_in_s": 0.05},
         {"name": "ward3", "output_device": "gsvbroken", "lead_in_s": 0.05}]
GARDEN = {"name": "garden", "topic": "pa/garden/play", "volume": 0.5, "lead_in_s": 0.25}


def terminals(daemon: Daemon, request_id: str) -> list[dict[str, Any]]:
    return [e for e in daemon.events(request_id) if e["event"] in ("done", "failed", "expired", "rejected")
            and not e.get("retrying")]


def audit_rows(daemon: Daemon, request_id: str) -> list[dict[str, Any]]:
    return [r for r in read_records(daemon.service.settings.state_dir) if r["request_id"] == request_id]


def wait_until(condition: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.05)


def test_two_zones_play_at_once_each_on_its_own_card_at_its_own_volume(start_daemon, alsa: AlsaCapture) -> None:
    alsa.repair()
    daemon = start_daemon(synth=ToneEngine(seconds=0.5), zones=CARDS, audio=QUIET)
    daemon.say({"id": "lobby-long", "text": "One. Two. Three. Four. Five. Six.", "zones": ["lobby"]})
    daemon.wait_event("lobby-long", "first_audio")
    daemon.say({"id": "ward-now", "text": "Nurse to bed four.", "zones": ["ward3"]})
    ward = daemon.wait_event("ward-now", "done")
    assert terminals(daemon, "lobby-long") == []  # the ward did not wait behind the lobby
    lobby = daemon.wait_event("lobby-long", "done")
    assert ward["zones"] == {"ward3": {"state": "done"}} and lobby["zones"] == {"lobby": {"state": "done"}}
    [lobby_played] = AlsaCapture.streams(alsa.good)
    [ward_played] = AlsaCapture.streams(alsa.broken)
    assert lobby_played.size >= 6 * 0.5 * RATE and ward_played.size >= 0.5 * RATE
    assert np.isclose(np.abs(lobby_played).max(), TONE * 0.5, atol=0.01)  # the lobby's volume
    assert np.isclose(np.abs(ward_played).max(), TONE, atol=0.01)


def test_all_plays_the_same_audio_on_every_card_as_one_request(start_daemon, alsa: AlsaCapture) -> None:
    alsa.repair()
    cards = [{**zone, "volume": 1.0} for zone in CARDS]
    daemon = start_daemon(synth=ToneEngine(seconds=0.3), zones=cards, audio=QUIET)
    daemon.say({"id": "everyone", "text": "Closing in ten minutes. Thank you.", "zones": "all"})
    done = daemon.wait_event("everyone", "done")
    assert done["zones"] == {"lobby": {"state": "done"}, "ward3": {"state": "done"}}
    assert isinstance(done["start_skew_ms"], float)
    [lobby], [ward] = AlsaCapture.streams(alsa.good), AlsaCapture.streams(alsa.broken)
    assert lobby.size >= 2 * 0.3 * RATE and np.array_equal(lobby, ward)
    kinds = [e["event"] for e in daemon.events("everyone")]
    assert kinds == ["queued", "started", "first_audio", "done"]
    [row] = audit_rows(daemon, "everyone")
    assert row["outcome"] == "done" and row["audio_sha256"] == done["audio_sha256"]


def test_a_failing_zone_is_reported_and_the_other_plays_on(start_daemon, alsa: AlsaCapture) -> None:
    daemon = start_daemon(synth=ToneEngine(seconds=0.3), zones=CARDS,
                          audio={**QUIET, "retry_initial_s": 0.2, "retry_max_s": 0.5})
    daemon.say({"id": "both", "text": "Visiting hours are over.", "zones": "all", "ttl_s": 60})
    failed = daemon.wait_event("both", "failed", retrying=True)
    assert failed["zone"] == "ward3" and failed["reason"].startswith("audio device error")
    wait_until(lambda: sum(s.size for s in AlsaCapture.streams(alsa.good)) >= 0.3 * RATE)
    assert terminals(daemon, "both") == []  # the lobby played it; the ward still owes it
    alsa.repair()  # the ward's card is plugged back in: it plays the announcement late, on its own
    done = daemon.wait_event("both", "done")
    assert done["zones"] == {"lobby": {"state": "done"}, "ward3": {"state": "done"}}
    [ward] = AlsaCapture.streams(alsa.broken)
    assert ward.size >= 0.3 * RATE
    assert len(terminals(daemon, "both")) == 1 and len(audit_rows(daemon, "both")) == 1


def test_a_zone_that_never_recovers_expires_there_and_the_request_is_done(start_daemon, alsa: AlsaCapture) -> None:
    daemon = start_daemon(synth=ToneEngine(seconds=0.3), zones=CARDS,
                          audio={**QUIET, "retry_initial_s": 0.2, "retry_max_s": 0.5})
    daemon.say({"id": "short", "text": "Lights out.", "zones": ["lobby", "ward3"], "ttl_s": 2})
    done = daemon.wait_event("short", "done")
    assert done["zones"]["lobby"] == {"state": "done"} and done["zones"]["ward3"]["state"] == "expired"
    assert done["reason"] == "zone ward3: ttl elapsed while the audio device failed"
    [row] = audit_rows(daemon, "short")
    assert row["outcome"] == "done" and "zone ward3" in row["reason"]
    assert AlsaCapture.streams(alsa.good) and not AlsaCapture.streams(alsa.broken)


def test_a_topic_zone_gets_one_wav_with_its_lead_in_and_volume(start_daemon, recorder: Recorder) -> None:
    daemon = start_daemon(synth=ToneEngine(seconds=0.3), zones=[GARDEN])
    recorder.subscribe(GARDEN["topic"])
    daemon.say({"id": "garden-1", "text": "The garden closes at dusk.", "zones": ["garden"]})
    done = daemon.wait_event("garden-1", "done")
    samples, rate = read_wav(recorder.wait_for(GARDEN["topic"]).payload)
    lead_in = round(GARDEN["lead_in_s"] * RATE)
    assert rate == RATE and samples.size == lead_in + round(0.3 * RATE)
    assert not samples[:lead_in].any()
    assert abs(int(np.abs(samples).max()) - TONE * 0.5 * 32767) < 200  # the zone's volume is in the audio
    assert done["zones"] == {"garden": {"state": "done"}}
    assert recorder.on(daemon.topics.audio("garden-1")) == []  # only the zone's topic has it


def test_an_unknown_zone_is_rejected_naming_it_over_mqtt_and_http(http_daemon, recorder: Recorder) -> None:
    daemon, url = http_daemon(sections={"zones": [GARDEN]})
    daemon.say({"id": "lost", "text": "Hi.", "zones": ["garden", "ward9"]})
    assert daemon.wait_event("lost", "rejected")["reason"] == "zones: unknown zone 'ward9'"
    refused = error(httpx.post(f"{url}/v1/say", json={"text": "Hi.", "zones": ["ward9"]}), 400)
    assert refused["param"] == "zones" and refused["message"] == "zones: unknown zone 'ward9'"
    recorder.subscribe(GARDEN["topic"])
    accepted = httpx.post(f"{url}/v1/say", json={"id": "h1", "text": "Hi.", "zones": "all"})
    assert accepted.status_code == 202
    assert daemon.wait_event("h1", "done")["zones"] == {"garden": {"state": "done"}}
    assert read_wav(recorder.wait_for(GARDEN["topic"]).payload)[0].size > 0


def test_quiet_hours_hold_a_normal_request_and_let_a_high_one_play_at_the_nights_volume(
        start_daemon, alsa: AlsaCapture) -> None:
    now = datetime.now()
    hours = f"{(now - timedelta(hours=1)):%H:%M}-{(now + timedelta(hours=1)):%H:%M}"  # quiet now, whatever the hour
    ward = {"name": "ward3", "output_device": "gsvtest", "quiet_hours": hours, "volume_schedule": {"00:00": 0.25}}
    daemon = start_daemon(synth=ToneEngine(seconds=0.3), zones=[ward], audio=QUIET)
    daemon.say({"id": "chatter", "text": "Shop opens at nine.", "zones": ["ward3"], "ttl_s": 1.5})
    daemon.say({"id": "code", "text": "Doctor to bed four.", "zones": ["ward3"], "priority": "high"})
    assert daemon.wait_event("code", "done")["zones"] == {"ward3": {"state": "done"}}
    expired = daemon.wait_event("chatter", "expired")
    assert expired["reason"] == "ttl elapsed while queued"
    assert [e["event"] for e in daemon.events("chatter")] == ["queued", "expired"]  # never spoken
    [played] = AlsaCapture.streams(alsa.good)
    assert np.isclose(np.abs(played).max(), TONE * 0.25, atol=0.01)  # the volume schedule's, not 1


def test_a_zone_request_cut_by_a_crash_plays_again_whole_in_all_its_zones(
        daemon_process: Any, alsa: AlsaCapture) -> None:  # noqa: F811 - the fixture
    alsa.repair()
    daemon = daemon_process(audio=QUIET, zones=[{**zone, "volume": 1.0} for zone in CARDS])
    daemon.start()
    daemon.say({"id": "evacuate", "text": "Please leave the building by the nearest exit. Do not use the lifts.",
                "lang": "en", "zones": "all"})
    daemon.wait_event("evacuate", "first_audio")
    daemon.kill()
    before = len(daemon.events())
    assert not [e for e in daemon.events() if e["id"] == "evacuate" and e["event"] == "done"], "it played too soon"

    daemon.start()
    events = daemon.wait_terminal({"evacuate"})
    check_exactly_once(events, {"evacuate"})
    after = {e["event"]: e for e in events[before:] if e["id"] == "evacuate"}
    done, rate = after["done"], after["first_audio"]["sample_rate"]
    assert done["zones"] == {"lobby": {"state": "done"}, "ward3": {"state": "done"}} and after["queued"]["resumed"]
    *_, lobby = AlsaCapture.streams(alsa.good)
    *_, ward = AlsaCapture.streams(alsa.broken)
    assert np.array_equal(lobby, ward) and lobby.size >= done["audio_ms"] / 1000 * rate  # whole, in both


def test_a_schedule_added_over_mqtt_plays_in_its_zone(start_daemon, recorder: Recorder) -> None:
    daemon = start_daemon(synth=ToneEngine(seconds=0.3), zones=[GARDEN])
    recorder.subscribe(GARDEN["topic"])
    due = (datetime.now(timezone.utc) + timedelta(seconds=3)).replace(microsecond=0)
    daemon.recorder.publish(daemon.topics.schedule_add, json.dumps({
        "id": "add-dusk", "name": "dusk", "at": due.replace(tzinfo=None).isoformat(), "tz": "UTC",
        "run_if_late_s": 300, "payload": {"text": "The garden closes now.", "zones": ["garden"]}}))
    run_id = daemon.wait_event("add-dusk", "schedule_added")["next_id"]
    done = daemon.wait_event(run_id, "done", timeout=60)
    assert done["zones"] == {"garden": {"state": "done"}}
    assert read_wav(recorder.wait_for(GARDEN["topic"]).payload)[0].size == round((0.3 + 0.25) * RATE)
