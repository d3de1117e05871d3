"""eSpeak NG through espeakng-loader: the out-of-the-box voice and the safety net for the neural engine."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest

from daemon.speech.espeak import EspeakVoice
from daemon.speech.synthesizer import UnknownVoice
from tests.conftest import Recorder
from tests.doubles import ToneEngine, failing_engine


@pytest.fixture(scope="module")
def espeak() -> EspeakVoice:
    return EspeakVoice("en")


def test_synthesizes_one_chunk_per_sentence(espeak: EspeakVoice) -> None:
    chunks = list(espeak.synthesize("Good morning. The train is late! Sorry?", None, "en-US"))
    assert espeak.sample_rate == 22050 and len(chunks) == 3
    for chunk in chunks:
        assert chunk.dtype == np.float32 and chunk.ndim == 1 and chunk.size > 2205
        assert 0.05 < np.abs(chunk).max() <= 1.0


def test_voices_languages_and_speed(espeak: EspeakVoice) -> None:
    names = {v.name for v in espeak.voices()}
    assert {"en-us", "en-gb", "de", "fr-fr", "cmn"} <= names
    assert espeak.pick_voice(None, "de_AT") == "de"  # falls back to the base language
    assert espeak.pick_voice(None, "zh") == "cmn"
    assert espeak.pick_voice(None, "xx-unknown") == "en-gb"  # the default voice
    with pytest.raises(UnknownVoice):
        list(espeak.synthesize("Hi.", "klingon", None))
    slow = sum(c.size for c in espeak.synthesize("This sentence has a fixed length.", "en-us", None, 0.7))
    fast = sum(c.size for c in espeak.synthesize("This sentence has a fixed length.", "en-us", None, 1.5))
    assert fast < 0.7 * slow


def test_engine_failure_falls_back_and_the_events_say_so(start_daemon, recorder: Recorder) -> None:
    daemon = start_daemon(synth=failing_engine())
    daemon.say({"id": "rescued", "text": "The neural engine is down."})
    done = daemon.wait_event("rescued", "done")
    first = daemon.wait_event("rescued", "first_audio")
    for event in (first, done):
        assert event["engine"] == "espeak-ng fallback" and event["fallback"] is True
        assert event["fallback_reason"] == "SynthesisError: model exploded"
    with wave.open(io.BytesIO(recorder.wait_for(daemon.topics.audio("rescued")).payload)) as wav:
        assert wav.getframerate() == ToneEngine.sample_rate  # resampled to the primary engine's rate
        assert wav.getnframes() / wav.getframerate() == pytest.approx(done["audio_ms"] / 1000, abs=0.01)


def test_unloadable_bundle_degrades_to_the_fallback(start_daemon, recorder: Recorder, tmp_path) -> None:
    daemon = start_daemon(engine={"bundle": str(tmp_path / "missing-bundle")})
    assert daemon.service.engine_state() == "degraded"
    status = recorder.wait_for(daemon.topics.status).json()
    assert status["engine_state"] == "degraded" and "missing-bundle" in status["engine_error"]
    daemon.say({"id": "still", "text": "Still speaking."})
    assert daemon.wait_event("still", "done")["engine"] == "espeak-ng fallback"
