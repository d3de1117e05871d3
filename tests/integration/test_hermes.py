"""Hermes (Rhasspy) TTS, driven with rhasspy-hermes' own message classes as an independent client."""

from __future__ import annotations

import io
import time
import warnings
import wave

with warnings.catch_warnings():  # rhasspy-hermes imports audioop, deprecated since Python 3.11
    warnings.simplefilter("ignore", DeprecationWarning)
    from rhasspyhermes.audioserver import AudioPlayBytes, AudioPlayFinished
from rhasspyhermes.tts import GetVoices, TtsError, TtsSay, TtsSayFinished, Voices

from tests.conftest import Recorder
from tests.doubles import ToneEngine, failing_engine


def _subscribe_hermes(recorder: Recorder) -> None:
    recorder.subscribe("hermes/#", "rhasspy/#")


def test_say_plays_bytes_and_finishes(start_daemon, recorder: Recorder) -> None:
    _subscribe_hermes(recorder)
    daemon = start_daemon(synth=ToneEngine(seconds=3.0))  # long, so only playFinished can end it quickly
    say = TtsSay(text="Dinner is ready.", site_id="kitchen", id="h-1", session_id="sess-1", volume=0.5)
    started = time.monotonic()
    recorder.publish(TtsSay.topic(), say.to_json())

    play = recorder.wait_for(AudioPlayBytes.topic(site_id="kitchen", request_id="h-1"))
    with wave.open(io.BytesIO(play.payload)) as wav:
        assert wav.getframerate() == ToneEngine.sample_rate
        assert wav.getnframes() == 3 * ToneEngine.sample_rate
    assert not recorder.on(TtsSayFinished.topic()), "sayFinished must wait for the audio server"

    recorder.publish(AudioPlayFinished.topic(site_id="kitchen"), AudioPlayFinished(id="h-1").to_json())
    finished = TtsSayFinished.from_json(recorder.wait_for(TtsSayFinished.topic()).payload)
    assert (finished.id, finished.site_id, finished.session_id) == ("h-1", "kitchen", "sess-1")
    assert time.monotonic() - started < 2.5
    assert not recorder.on(TtsError.topic())
    assert daemon.wait_event("h-1", "done")["source"] == "hermes"


def test_without_play_finished_the_audio_length_ends_the_wait(start_daemon, recorder: Recorder) -> None:
    _subscribe_hermes(recorder)
    start_daemon(synth=ToneEngine(seconds=0.3), hermes={"play_finished_margin_s": 0.2})
    recorder.publish(TtsSay.topic(), TtsSay(text="Short.", id="h-2").to_json())
    recorder.wait_for(AudioPlayBytes.topic(site_id="default", request_id="h-2"))
    finished = TtsSayFinished.from_json(recorder.wait_for(TtsSayFinished.topic(), timeout=3).payload)
    assert finished.id == "h-2" and finished.site_id == "default"


def test_failure_sends_error_then_say_finished(start_daemon, recorder: Recorder) -> None:
    _subscribe_hermes(recorder)
    start_daemon(synth=failing_engine(), fallback=failing_engine("broken fallback"))
    recorder.publish(TtsSay.topic(), TtsSay(text="Doomed.", id="h-3", session_id="s").to_json())
    finished = TtsSayFinished.from_json(recorder.wait_for(TtsSayFinished.topic()).payload)
    error = TtsError.from_json(recorder.wait_for(TtsError.topic()).payload)
    assert finished.id == "h-3" and finished.session_id == "s"
    assert error.context == "h-3" and "model exploded" in error.error
    topics = [m.topic for m in recorder.messages if m.topic.startswith("hermes/")]
    assert topics.index(TtsError.topic()) < topics.index(TtsSayFinished.topic())
    assert not recorder.on("hermes/audioServer/+/playBytes/#")


def test_bad_say_sends_error_and_say_finished(start_daemon, recorder: Recorder) -> None:
    _subscribe_hermes(recorder)
    daemon = start_daemon(synth=ToneEngine())
    recorder.publish(TtsSay.topic(), TtsSay(text="  ", id="h-4", site_id="hall").to_json())
    finished = TtsSayFinished.from_json(recorder.wait_for(TtsSayFinished.topic()).payload)
    assert (finished.id, finished.site_id) == ("h-4", "hall")
    assert "empty text" in TtsError.from_json(recorder.wait_for(TtsError.topic()).payload).error
    assert daemon.wait_event("h-4", "rejected")["reason"] == "empty text"


def test_only_configured_sites_are_served(start_daemon, recorder: Recorder) -> None:
    _subscribe_hermes(recorder)
    start_daemon(synth=ToneEngine(seconds=0.05), hermes={"site_ids": ["kitchen"], "play_finished_margin_s": 0})
    recorder.publish(TtsSay.topic(), TtsSay(text="Not mine.", id="other", site_id="garage").to_json())
    recorder.publish(TtsSay.topic(), TtsSay(text="Mine.", id="mine", site_id="kitchen").to_json())
    finished = TtsSayFinished.from_json(recorder.wait_for(TtsSayFinished.topic()).payload)
    assert finished.id == "mine"
    assert len(recorder.on(TtsSayFinished.topic())) == 1
    assert not recorder.on("hermes/audioServer/garage/#")


def test_ids_are_per_protocol_and_a_repeated_say_finishes_once(start_daemon, recorder: Recorder) -> None:
    """A native h1 does not swallow a Hermes h1; a redelivered Hermes say gets no second sayFinished."""
    _subscribe_hermes(recorder)
    daemon = start_daemon(synth=ToneEngine(seconds=0.05), hermes={"play_finished_margin_s": 0})
    daemon.say({"id": "h1", "text": "Native first."})
    daemon.wait_event("h1", "done")
    say = TtsSay(text="Hermes next.", id="h1", site_id="default").to_json()
    recorder.publish(TtsSay.topic(), say)
    finished = TtsSayFinished.from_json(recorder.wait_for(TtsSayFinished.topic()).payload)
    assert finished.id == "h1" and daemon.wait_event("h1", "done", source="hermes")
    recorder.publish(TtsSay.topic(), say)  # the same say again, as a QoS 1 redelivery brings it
    assert daemon.wait_event("h1", "duplicate", source="hermes")["state"] == "done"
    recorder.publish(TtsSay.topic(), TtsSay(text="Later.", id="h2").to_json())
    recorder.wait_for(TtsSayFinished.topic(), lambda m: m.json()["id"] == "h2")
    assert [m.json()["id"] for m in recorder.on(TtsSayFinished.topic())] == ["h1", "h2"]
    assert len(recorder.on(AudioPlayBytes.topic(site_id="default", request_id="h1"))) == 1


def test_get_voices(start_daemon, recorder: Recorder) -> None:
    _subscribe_hermes(recorder)
    start_daemon(synth=ToneEngine())
    recorder.publish(GetVoices.topic(), GetVoices(id="v-1", site_id="default").to_json())
    voices = Voices.from_json(recorder.wait_for(Voices.topic()).payload)
    assert voices.id == "v-1"
    assert [v.voice_id for v in voices.voices] == ["tone-a", "tone-b", "en"]  # and the eSpeak NG voice, as Wyoming
    assert voices.voices[-1].description == "espeak-ng fallback (en)"
