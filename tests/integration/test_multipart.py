"""Multi-part announcements end to end: over MQTT with a real mosquitto (the parts' order in the published WAV, an
emergency cutting one on the sound card and a waiting one requeued and played whole, one terminal event and one
audit row each), played again whole after a kill -9 (the durable queue keeps the parts), and over HTTP with httpx
(``POST /v1/say``, the same parser)."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np

from daemon.audio.wav import to_pcm16
from daemon.core.audit import read_records
from daemon.core.events import EventKind, is_terminal
from daemon.core.pipeline import builtin_chime
from daemon.core.request_queue import Part
from tests.conftest import AlsaCapture, Daemon, Recorder
from tests.doubles import VoiceTones
from tests.http_fixtures import decode
from tests.integration.test_durability import check_exactly_once, daemon_process  # noqa: F401 - a fixture
from tests.integration.test_mqtt_native import read_wav
from tests.unit.core.test_multipart import expected

RATE = VoiceTones.sample_rate
QUIET = {"lead_in_ms": 50, "tail_ms": 50}
BILINGUAL = {"parts": [{"chime": True}, {"text": "请注意。", "lang": "zh", "voice": "tone-b"}, {"pause_s": 0.25},
                       {"text": "Attention please. Platform two.", "voice": "tone-a"}],
             "repeat": 2, "repeat_gap_s": 0.5}
PARTS = (Part(chime=True), Part(text="请注意。", voice="tone-b"), Part(pause_s=0.25),
         Part(text="Attention please. Platform two.", voice="tone-a"))


def terminals(daemon: Daemon, request_id: str) -> list[str]:
    return [e["event"] for e in daemon.events(request_id) if is_terminal(EventKind(e["event"]), e)]


def audit_rows(daemon: Daemon, request_id: str) -> list[dict[str, Any]]:
    return [r for r in read_records(daemon.service.settings.state_dir) if r["request_id"] == request_id]


def test_parts_are_published_in_order_as_one_announcement(start_daemon, recorder: Recorder) -> None:
    daemon = start_daemon(synth=VoiceTones(seconds=0.05), audit={"store_text": True})
    daemon.say({"id": "closing", **BILINGUAL})
    done = daemon.wait_event("closing", "done")
    samples, rate = read_wav(recorder.wait_for(daemon.topics.audio("closing")).payload)
    want = expected(PARTS, repeat=2, gap_s=0.5)
    assert rate == RATE and np.array_equal(samples, np.frombuffer(to_pcm16(want), "<i2"))
    chime = np.frombuffer(to_pcm16(builtin_chime(RATE)), "<i2")
    assert np.array_equal(samples[:chime.size], chime)  # the chime first, and again after the gap
    second = want.size // 2 + round(0.25 * RATE)
    assert np.array_equal(samples[second:second + chime.size], chime)
    assert [e["event"] for e in daemon.events("closing")] == ["queued", "started", "first_audio", "done"]
    assert done["audio_ms"] == round(want.size / RATE * 1000)
    [row] = audit_rows(daemon, "closing")
    assert row["outcome"] == "done" and row["text"] == "请注意。\nAttention please. Platform two."
    assert row["audio_sha256"] == done["audio_sha256"]


def test_an_emergency_cuts_a_multi_part_announcement_and_a_waiting_one_plays_whole_after_it(
        start_daemon, alsa: AlsaCapture) -> None:
    daemon = start_daemon(synth=VoiceTones(seconds=0.5), audio={"output_device": "gsvtest", **QUIET})
    daemon.say({"id": "closing", **BILINGUAL})
    daemon.wait_event("closing", "first_audio")
    waiting = {"parts": [{"text": "Later.", "voice": "tone-a"}, {"pause_s": 0.2},
                         {"text": "Encore.", "voice": "tone-b"}], "repeat": 2, "repeat_gap_s": 0.3}
    daemon.say({"id": "next", **waiting})
    daemon.wait_event("next", "started")  # rendered, waiting for the speaker
    daemon.say({"id": "fire", "text": "Fire.", "priority": "emergency"})
    cut = daemon.wait_event("closing", "failed")
    assert cut["reason"] == "interrupted by fire"
    daemon.wait_event("fire", "done")
    daemon.wait_event("next", "done")
    daemon.say({"id": "after", "text": "After."})  # anything late about the others would have come by now
    daemon.wait_event("after", "done")

    assert [e["event"] for e in daemon.events("closing")] == ["queued", "started", "first_audio", "failed"]
    assert terminals(daemon, "next") == ["done"]
    requeued = [e for e in daemon.events("next") if e["event"] == "queued" and e.get("requeued")]
    assert [e["reason"] for e in requeued] == ["preempted by fire"]
    assert [e["id"] for e in daemon.events() if e["event"] in ("done", "failed")] == ["closing", "fire", "next",
                                                                                        "after"]
    for request_id, outcome in (("closing", "failed"), ("fire", "done"), ("next", "done")):
        assert [row["outcome"] for row in audit_rows(daemon, request_id)] == [outcome]

    closing, _fire, later, _after = AlsaCapture.streams(alsa.good)
    lead = round(0.05 * RATE)
    start = builtin_chime(RATE)[:lead]  # the cut one began with its chime (how much more played depends on when)
    assert np.allclose(closing[lead:2 * lead], start, atol=1e-6)
    assert closing.size < expected(PARTS, repeat=2, gap_s=0.5, seconds=0.5).size  # and was cut short
    parts = (Part(text="Later.", voice="tone-a"), Part(pause_s=0.2), Part(text="Encore.", voice="tone-b"))
    want = expected(parts, repeat=2, gap_s=0.3, seconds=0.5)
    assert later.size == want.size + 2 * lead and np.allclose(later[lead:lead + want.size], want, atol=1e-6)


def test_a_multi_part_announcement_cut_by_a_crash_is_played_again_whole(
        daemon_process: Any, alsa: AlsaCapture) -> None:  # noqa: F811 - the fixture
    daemon = daemon_process(audio={"output_device": "gsvtest", **QUIET})
    daemon.start()
    parts = [{"chime": True}, {"text": "Attention please.", "lang": "en"}, {"pause_s": 2.0},
             {"text": "The station closes.", "lang": "en", "speed": 1.5}]
    daemon.say({"id": "closing", "parts": parts, "repeat": 2, "repeat_gap_s": 0.5})
    daemon.wait_event("closing", "first_audio")
    daemon.kill()
    before = len(daemon.events())
    assert not [e for e in daemon.events() if e["id"] == "closing" and e["event"] == "done"], "it played too soon"

    daemon.start()
    events = daemon.wait_terminal({"closing"})
    check_exactly_once(events, {"closing"})
    after = [e for e in events[before:] if e["id"] == "closing"]
    # first_audio is published at once, queued and started from the outbox: on a restart it may come first
    kinds = {e["event"]: e for e in after}
    assert sorted(e["event"] for e in after) == ["done", "first_audio", "queued", "started"]
    assert kinds["queued"]["resumed"] and kinds["started"]["parts"] == 4
    done = kinds["done"]
    *_, whole = AlsaCapture.streams(alsa.good)
    rate = kinds["first_audio"]["sample_rate"]
    lead = round(0.05 * rate)
    assert abs(whole.size - 2 * lead - done["audio_ms"] / 1000 * rate) < rate / 500  # all of it, chime to end
    assert done["audio_ms"] > 2 * (2000 + 850) + 500  # both repeats' pauses and chimes, and the gap
    chime = builtin_chime(rate)[:lead]
    assert np.allclose(whole[lead:2 * lead], chime, atol=1e-6)


def test_http_say_takes_parts_and_refuses_bad_ones_naming_the_part(http_daemon) -> None:
    daemon, url = http_daemon(VoiceTones(seconds=0.05), rate_limit_burst=50)
    queued = httpx.post(f"{url}/v1/say", json={"id": "web", "output": "response", **BILINGUAL})
    assert queued.status_code == 202, queued.text
    daemon.wait_event("web", "done")
    audio = httpx.get(f"{url}/v1/requests/web/audio")
    assert audio.status_code == 200
    samples, rate = decode(audio.content, "wav")
    want = expected(PARTS, repeat=2, gap_s=0.5)
    assert rate == RATE and samples.size == want.size and np.allclose(samples, want, atol=1 / 32768)
    assert terminals(daemon, "web") == ["done"] and len(audit_rows(daemon, "web")) == 1

    bad = {"parts": [{"chime": True}, {"text": "Hi."}, {"pause_s": 99}]}
    refused = httpx.post(f"{url}/v1/say", json=bad)
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["message"] == "parts[2].pause_s: must be between 0 and 30 seconds"
    assert error["param"] == "parts[2].pause_s"
    both = httpx.post(f"{url}/v1/say", json={"text": "Hi.", "parts": [{"text": "Hi."}]}).json()["error"]
    assert both["message"] == "give text or parts, not both" and both["param"] == "text"
