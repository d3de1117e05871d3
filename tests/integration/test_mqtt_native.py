"""The native MQTT API end to end, against a real mosquitto."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
import wave
from pathlib import Path

import numpy as np
import pytest

from daemon.commands import exit_codes
from daemon.model.bundle import Bundle
from daemon.model.engine import Engine
from daemon.model.hardware import HardwareProfile
from tests.conftest import Broker, Recorder, to_toml
from tests.doubles import ToneEngine
from tests.paths import REPO
from tests.unit.model.test_engine import make_wav


def read_wav(payload: bytes) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(payload)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth()) == (1, 2)
        return np.frombuffer(wav.readframes(wav.getnframes()), "<i2"), wav.getframerate()


def test_say_events_in_order_and_wav_published(start_daemon, recorder: Recorder) -> None:
    daemon = start_daemon()  # no bundle configured: the eSpeak NG fallback speaks
    daemon.say({"id": "hello-1", "text": "Hello from the appliance. Second sentence.", "lang": "en-us"})
    done = daemon.wait_event("hello-1", "done")

    kinds = [e["event"] for e in daemon.events("hello-1")]
    assert kinds == ["queued", "started", "first_audio", "done"]
    first = daemon.events("hello-1")[2]
    assert first["latency_ms"] >= 0 and first["sample_rate"] == 22050
    assert done["engine"] == "espeak-ng fallback" and done["fallback"] is False and done["audio_ms"] > 500

    samples, rate = read_wav(recorder.wait_for(daemon.topics.audio("hello-1")).payload)
    assert rate == 22050
    assert len(samples) / rate == pytest.approx(done["audio_ms"] / 1000, abs=0.01)
    assert np.abs(samples).max() > 3000  # speech, not silence

    status = recorder.wait_for(daemon.topics.status, lambda m: m.json()["last_latency_ms"] is not None).json()
    assert status["queue_depth"] == 0 and status["engine_state"] == "fallback-only"
    assert status["model"] == "espeak-ng fallback" and {"precision", "provider"} <= status.keys()
    recorder.clear()
    recorder.subscribe(daemon.topics.voices)  # a new subscription gets the retained copy
    voices = recorder.wait_for(daemon.topics.voices)
    assert voices.retain and any(v["name"] == "en-us" for v in voices.json()["voices"])


def test_plain_text_payload_is_spoken(start_daemon, recorder: Recorder) -> None:
    daemon = start_daemon(synth=ToneEngine())
    daemon.say("Just some words.")
    queued = recorder.wait_for(daemon.topics.events, lambda m: m.json()["event"] == "queued").json()
    daemon.wait_event(queued["id"], "done")
    samples, rate = read_wav(recorder.wait_for(daemon.topics.audio(queued["id"])).payload)
    assert rate == ToneEngine.sample_rate and len(samples) == int(0.2 * rate)


def test_pcm_chunks_then_end_marker(start_daemon, recorder: Recorder) -> None:
    daemon = start_daemon(synth=ToneEngine(seconds=0.1))
    daemon.say({"id": "pcm-1", "text": "One. Two. Three.", "format": "pcm", "volume": 0.5})
    daemon.wait_event("pcm-1", "done")
    end = recorder.wait_for(daemon.topics.audio_end("pcm-1")).json()
    assert end["chunks"] == 3 and end["sample_rate"] == 16000 and end["sample_format"] == "s16le"
    chunks = [recorder.wait_for(daemon.topics.audio_chunk("pcm-1", n)).payload for n in range(3)]
    audio = np.frombuffer(b"".join(chunks), "<i2")
    assert audio.size == end["samples"] == 3 * 1600
    assert 0.2 < np.abs(audio).max() / 32767 <= 0.26  # volume 0.5 of a 0.5 tone


def test_the_fallback_voice_is_listed_and_spoken_beside_a_bundle(
    start_daemon, recorder: Recorder, demo_bundle: Path  # noqa: F811
) -> None:
    """One voice list for every protocol: what Wyoming offers (the eSpeak NG voice) MQTT lists and accepts."""
    daemon = start_daemon(engine={"bundle": str(demo_bundle)})
    assert daemon.service.engine_state() == "ready"
    recorder.subscribe(daemon.topics.voices)
    listed = recorder.wait_for(daemon.topics.voices).json()["voices"]
    assert {"name": "en", "languages": ["en"], "description": "espeak-ng fallback (en)"} in listed

    daemon.say({"id": "fallback-voice", "text": "Spoken by the fallback voice.", "voice": "en"})
    done = daemon.wait_event("fallback-voice", "done")
    assert [e["event"] for e in daemon.events("fallback-voice")] == ["queued", "started", "first_audio", "done"]
    assert done["engine"] == "espeak-ng fallback" and done["fallback"] is False  # chosen, not fallen back to
    samples, _rate = read_wav(recorder.wait_for(daemon.topics.audio("fallback-voice")).payload)
    assert np.abs(samples).max() > 3000


BAD_PAYLOADS = [
    (b"{not json", "invalid JSON"),
    (b'{"text": 5}', "text: Input should be a valid string"),
    (b'{"text": "hi", "priority": "urgent"}', "priority"),
    (b'{"text": "hi", "interrupt": "yes"}', "interrupt"),
    (b'{"text": "hi", "volume": "loud"}', "volume"),
    (b'{"text": "hi", "colour": "red"}', "colour: Extra inputs are not permitted"),
    (b'{"text": "   "}', "empty text"),
    (b"", "empty text"),
    (json.dumps({"text": "x" * 3000}).encode(), "text too long"),
    (b'{"text": "hi", "voice": "nobody"}', "unknown voice"),
    (b'{"text": "hi", "voice": "a/b"}', "voice contains a forbidden character '/'"),
    (b"\xff\xfe\x00\x81binary junk", "not valid UTF-8"),
    (b"text with \x00 nul", "control characters"),
    (b'{"id": "a+b", "text": "hi"}', "id contains a forbidden character '+'"),
    (b'{"id": "a#b", "text": "hi"}', "id contains a forbidden character '#'"),
    (b'{"id": "a/b", "text": "hi"}', "id contains a forbidden character '/'"),
    (b'{"id": "..", "text": "hi"}', "id contains '..'"),
    (b'{"id": "a\\u0000b", "text": "hi"}', "id contains a forbidden character"),
    (b'{"text": "hi", "ttl_s": 5, "expires_at": 1}', "not both"),
    (b'{"text": "hi", "output": "play"}', "needs an audio device"),
    (b"null", "JSON payload must be an object, not null"),
    (b"42", "JSON payload must be an object, not a number"),
    (b"[1, 2, 3]", "JSON payload must be an object, not an array"),
    (b'"a string"', "JSON payload must be an object, not a string"),
    (b"[beep] Plain text that only starts like JSON.", None),  # not JSON at all: spoken as plain text
]


def test_bad_payloads_are_rejected_and_the_daemon_keeps_serving(start_daemon, recorder: Recorder) -> None:
    daemon = start_daemon(synth=ToneEngine(seconds=0.05))
    for payload, reason in BAD_PAYLOADS:
        recorder.clear()
        daemon.say(payload)
        event = recorder.wait_for(daemon.topics.events, lambda m: m.json()["event"] in ("rejected", "queued")).json()
        if reason is None:
            assert event["event"] == "queued", payload
        else:
            assert event["event"] == "rejected", payload
            assert reason in event["reason"], (payload, event["reason"])
    recorder.clear()
    daemon.say({"id": "still-alive", "text": "Still here."})
    daemon.wait_event("still-alive", "done")


def test_retained_say_is_not_replayed(start_daemon, recorder: Recorder) -> None:
    """A say left retained on the broker would otherwise be spoken again on every reconnect."""
    node_id = f"retained{uuid.uuid4().hex[:6]}"
    recorder.publish(f"gsv-edge/{node_id}/say", '{"id": "sticky", "text": "Retained."}', retain=True)
    daemon = start_daemon(synth=ToneEngine(), mqtt={"node_id": node_id})
    rejected = recorder.wait_for(daemon.topics.events).json()
    assert rejected["event"] == "rejected" and "retained" in rejected["reason"]
    recorder.publish(daemon.topics.say, b"", retain=True)  # clear it from the broker


def test_persistent_session_keeps_requests_sent_while_offline(start_daemon, recorder: Recorder) -> None:
    daemon = start_daemon(synth=ToneEngine())
    daemon.service.stop()
    recorder.wait_for(daemon.topics.availability, lambda m: m.payload == b"offline")
    daemon.say({"id": "while-away", "text": "Queued by the broker."})
    again = start_daemon(synth=ToneEngine(), mqtt={"node_id": daemon.topics.node_id})
    again.wait_event("while-away", "done")


def test_reconnects_and_resubscribes_after_a_broker_restart(
    start_daemon, mosquitto_broker: Broker, recorder: Recorder
) -> None:
    daemon = start_daemon(synth=ToneEngine())
    mosquitto_broker.stop()  # no persistence: the daemon's session and subscriptions are gone
    deadline = time.monotonic() + 5
    while daemon.service.mqtt.ready.is_set() and time.monotonic() < deadline:
        time.sleep(0.02)
    mosquitto_broker.start()
    assert daemon.service.mqtt.ready.wait(10), "the daemon did not reconnect and subscribe again"
    while not recorder.client.is_connected() and time.monotonic() < deadline + 10:
        time.sleep(0.02)
    recorder.subscribe(f"{daemon.topics.base}/#")
    daemon.say({"id": "after-restart", "text": "Back."})
    daemon.wait_event("after-restart", "done")


def _serve(config: Path, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "GSV_EDGE_STATE_DIR": str(tmp_path / "state")}
    command = [sys.executable, "-m", "daemon", "serve", "--config", str(config)]
    return subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE)


def test_last_will_marks_the_daemon_offline_when_it_dies(
    mosquitto_broker: Broker, recorder: Recorder, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(to_toml({"mqtt": {"host": "127.0.0.1", "port": mosquitto_broker.port, "node_id": "will"}}))
    recorder.subscribe("gsv-edge/will/availability")
    proc = _serve(config, tmp_path)
    try:
        recorder.wait_for("gsv-edge/will/availability", lambda m: m.payload == b"online")
    finally:
        proc.kill()  # no clean disconnect: the broker publishes the will
        proc.communicate(timeout=10)
    recorder.wait_for("gsv-edge/will/availability", lambda m: m.payload == b"offline")


def test_serve_cli_out_of_the_box(mosquitto_broker: Broker, recorder: Recorder, tmp_path: Path) -> None:
    """``gsv-edge serve --config FILE`` as a process: online, speaks with eSpeak NG, offline on SIGTERM."""
    config = tmp_path / "config.toml"
    config.write_text(to_toml({"mqtt": {"host": "127.0.0.1", "port": mosquitto_broker.port, "node_id": "cli"}}))
    recorder.subscribe("gsv-edge/cli/#")
    proc = _serve(config, tmp_path)
    try:
        recorder.wait_for("gsv-edge/cli/availability", lambda m: m.payload == b"online")
        recorder.publish("gsv-edge/cli/say", "Out of the box.")
        done = recorder.wait_for("gsv-edge/cli/events", lambda m: m.json()["event"] == "done").json()
        assert done["engine"] == "espeak-ng fallback"
        read_wav(recorder.wait_for(f"gsv-edge/cli/audio/{done['id']}").payload)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=15)
    assert proc.returncode == 0, stderr.decode()
    recorder.wait_for("gsv-edge/cli/availability", lambda m: m.payload == b"offline")


def test_done_audio_ms_is_the_published_wav_with_its_chime(start_daemon, recorder: Recorder) -> None:
    daemon = start_daemon(synth=ToneEngine(seconds=0.3))
    daemon.say({"id": "ding", "text": "Attention.", "chime": True})
    done = daemon.wait_event("ding", "done")
    samples, rate = read_wav(recorder.wait_for(daemon.topics.audio("ding")).payload)
    assert done["audio_ms"] == round(len(samples) / rate * 1000)  # the built-in chime (0.85 s) and the tone
    assert done["speech_ms"] == 300 and done["audio_ms"] == 1150


def test_status_reports_the_precision_of_the_bundle_loaded(start_daemon, recorder: Recorder,
                                                           demo_bundle: Path) -> None:  # noqa: F811
    """The x86-cpu profile prefers int8 bundles; the fp32 demo bundle is what runs, so the status says fp32."""
    assert HardwareProfile.load("x86-cpu").precision == "int8"
    daemon = start_daemon(engine={"bundle": str(demo_bundle), "hardware_profile": "x86-cpu"})
    status = recorder.wait_for(daemon.topics.status, lambda m: m.json()["engine_state"] == "ready").json()
    assert status["precision"] == "fp32"


def test_a_request_without_a_voice_speaks_with_engine_default_voice(
    start_daemon, recorder: Recorder, demo_bundle: Path, tmp_path: Path  # noqa: F811
) -> None:
    """'alice' is the first voice registered, and her features are damaged: only a request that really uses
    'bob' (``engine.default_voice``) is spoken by the neural engine rather than the fallback."""
    engine = Engine(Bundle.load(demo_bundle), HardwareProfile.load("x86-cpu"), tmp_path / "state")
    for name in ("alice", "bob"):
        engine.register_voice(name, make_wav(), "Hello there, this is my voice.", "en")
    (tmp_path / "state" / "voices" / "alice" / "features.npz").write_bytes(b"damaged")
    daemon = start_daemon(engine={"bundle": str(demo_bundle), "default_voice": "bob"})
    daemon.say({"id": "no-voice", "text": "Testing one two."})
    done = daemon.wait_event("no-voice", "done", timeout=60)
    assert done["engine"].startswith("GPT-SoVITS") and done["fallback"] is False


def test_an_unregistered_default_voice_stops_serve_naming_the_key(
    mosquitto_broker: Broker, demo_bundle: Path, tmp_path: Path  # noqa: F811
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(to_toml({"mqtt": {"host": "127.0.0.1", "port": mosquitto_broker.port, "node_id": "dv"},
                               "engine": {"bundle": str(demo_bundle), "default_voice": "nobody"}}))
    proc = _serve(config, tmp_path)
    try:
        _, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("serve started with an unregistered engine.default_voice")
    assert proc.returncode == exit_codes.SETUP
    text = stderr.decode()
    assert "gsv-edge serve: engine.default_voice: no voice 'nobody' is registered for bundle" in text
    assert "Traceback" not in text
