"""Local playback through sounddevice/PortAudio onto ALSA file devices the tests define (see conftest)."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from daemon.audio.crossfade import crossfade
from daemon.audio.output import fade_out
from daemon.audio.resample import LinearResampler, resample
from daemon.audio.wav import encode_wav
from tests.conftest import AlsaCapture, Recorder
from tests.doubles import ToneEngine, tone
from tests.integration.test_mqtt_native import read_wav

with warnings.catch_warnings():  # rhasspy-hermes imports audioop, deprecated since Python 3.11
    warnings.simplefilter("ignore", DeprecationWarning)
    from rhasspyhermes.tts import TtsSay, TtsSayFinished

RATE = ToneEngine.sample_rate
QUIET = {"lead_in_ms": 100, "tail_ms": 100}


def test_resampler_is_seamless_across_chunks() -> None:
    audio = tone(1.0, 22050)
    whole = LinearResampler(22050, 48000).process(audio)
    streamed = LinearResampler(22050, 48000)
    pieces = np.split(audio, [100, 101, 5000, 12345])
    joined = np.concatenate([streamed.process(p) for p in pieces])
    assert abs(whole.size - 48000) <= 3  # the stream ends on the last input sample
    np.testing.assert_allclose(joined, whole, atol=1e-6)
    assert np.abs(np.diff(joined)).max() < 0.05  # a 440 Hz sine at 48 kHz, no seams


def test_crossfade_fades_the_tail_out_under_the_head() -> None:
    joined = crossfade(np.ones(100, np.float32), np.zeros(40, np.float32))
    assert joined.size == 40 and joined[0] == 1.0 and joined[-1] == 0.0  # as long as the shorter piece
    assert np.all(np.diff(joined) < 0)
    np.testing.assert_allclose(crossfade(np.full(8, 0.5, np.float32), np.full(8, 0.5, np.float32)), 0.5, atol=1e-7)


def spectrum_peak(audio: np.ndarray, rate: int, hz: float) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.size)))
    return float(spectrum[np.abs(np.fft.rfftfreq(audio.size, 1 / rate) - hz) < 50].max())


def test_a_chime_file_at_another_rate_is_resampled_without_aliasing(
    start_daemon, recorder: Recorder, tmp_path: Path
) -> None:
    """The chime goes through the same band-limited resampler as a voice's reference clip: a 12 kHz overtone
    of a 44.1 kHz chime is filtered out at the voice's 16 kHz, not folded back to 4 kHz as linear
    interpolation would (-2 dB there, measured)."""
    t = np.arange(int(0.5 * 44100)) / 44100
    chime = (0.3 * np.sin(2 * np.pi * 1000 * t) + 0.3 * np.sin(2 * np.pi * 12000 * t)).astype(np.float32)
    (tmp_path / "ding.wav").write_bytes(encode_wav(chime, 44100))
    daemon = start_daemon(synth=ToneEngine(seconds=0.2), audio={"chime_file": str(tmp_path / "ding.wav")})
    daemon.say({"id": "chimed", "text": "Attention.", "chime": True})
    assert daemon.wait_event("chimed", "done")["audio_ms"] == 500 + 200
    samples, rate = read_wav(recorder.wait_for(daemon.topics.audio("chimed")).payload)
    played = samples[: rate // 2] / 32767.0
    assert rate == RATE and spectrum_peak(played, rate, 4000) < 1e-3 * spectrum_peak(played, rate, 1000)
    np.testing.assert_allclose(played, resample(chime, 44100, RATE), atol=1e-4)


def test_fade_out_reaches_silence_without_a_jump() -> None:
    pending = np.full(50, 0.8, np.float32)
    faded = fade_out(pending, 0.8, 200)  # fewer samples pending than the fade: hold, then ramp
    assert faded[0] == pytest.approx(0.8) and faded[-1] == pytest.approx(0.0, abs=1e-6)
    assert np.abs(np.diff(faded)).max() < 0.02


def test_playback_on_a_named_alsa_device(start_daemon, alsa: AlsaCapture) -> None:
    daemon = start_daemon(synth=ToneEngine(seconds=0.3), audio={"output_device": "gsvtest", **QUIET})
    daemon.say({"id": "local", "text": "Played here."})
    done = daemon.wait_event("local", "done")
    assert done["audio_ms"] == 300
    (played,) = AlsaCapture.streams(alsa.good)
    assert played.size == pytest.approx(0.5 * RATE, abs=2)  # lead-in + tone + tail at the voice's rate
    lead = int(0.1 * RATE)
    assert np.abs(played[:lead]).max() == 0.0 and np.abs(played[-lead:]).max() == 0.0
    np.testing.assert_allclose(played[lead:-lead], tone(0.3, RATE), atol=1e-6)
    assert not daemon.recorder.on(daemon.topics.audio("local") + "/#")  # played, not published


def test_resampled_when_the_device_runs_at_another_rate(start_daemon, alsa: AlsaCapture) -> None:
    audio = {"output_device": "gsvtest", "sample_rate": 48000, **QUIET}
    daemon = start_daemon(synth=ToneEngine(seconds=0.3), audio=audio)
    daemon.say({"id": "48k", "text": "Resampled."})
    daemon.wait_event("48k", "done")
    (played,) = AlsaCapture.streams(alsa.good)
    assert played.size == pytest.approx(0.5 * 48000, abs=4)
    assert np.abs(played).max() == pytest.approx(0.5, abs=0.01)


def test_chime_volume_and_output_both(start_daemon, alsa: AlsaCapture, recorder: Recorder) -> None:
    daemon = start_daemon(synth=ToneEngine(seconds=0.3), audio={"output_device": "gsvtest", **QUIET})
    daemon.say({"id": "ding", "text": "Attention.", "chime": True, "volume": 0.5, "output": "both"})
    daemon.wait_event("ding", "done")
    (played,) = AlsaCapture.streams(alsa.good)
    assert played.size == pytest.approx((0.2 + 0.85 + 0.3) * RATE, abs=2)  # lead/tail + chime + tone
    assert np.abs(played[-int(0.4 * RATE) :]).max() == pytest.approx(0.25, abs=0.01)
    recorder.wait_for(daemon.topics.audio("ding"))


def test_interrupt_cuts_playback_cleanly(start_daemon, alsa: AlsaCapture) -> None:
    daemon = start_daemon(synth=ToneEngine(seconds=3.0), audio={"output_device": "gsvtest", **QUIET})
    daemon.say({"id": "long", "text": "A long announcement."})
    daemon.wait_event("long", "first_audio")
    time.sleep(0.4)
    began = time.monotonic()
    daemon.say({"id": "urgent", "text": "Now.", "interrupt": True, "speed": 4.0})  # a 0.75 s tone
    assert daemon.wait_event("long", "failed")["reason"] == "interrupted by urgent"
    assert time.monotonic() - began < 0.6
    daemon.wait_event("urgent", "done", timeout=10)
    cut, urgent = AlsaCapture.streams(alsa.good)
    assert cut.size < 1.5 * RATE  # well short of the 3 s it would have taken
    assert np.abs(np.diff(cut)).max() < 0.12  # no click: a 440 Hz, 0.5 sine moves at most 0.087/sample
    assert np.abs(cut[-50:]).max() < 1e-3
    assert urgent.size == pytest.approx(0.95 * RATE, abs=2)


def test_device_error_is_reported_and_the_request_survives(start_daemon, alsa: AlsaCapture) -> None:
    audio = {"output_device": "gsvbroken", "retry_initial_s": 0.1, "retry_max_s": 0.2, **QUIET}
    daemon = start_daemon(synth=ToneEngine(seconds=0.3), audio=audio)
    daemon.say({"id": "patient", "text": "Eventually."})
    error = daemon.wait_event("patient", "failed")
    assert error["retrying"] is True and error["attempt"] == 1 and "audio device error" in error["reason"]
    alsa.repair()
    daemon.wait_event("patient", "done")
    played = AlsaCapture.streams(alsa.broken)
    assert played[-1].size == pytest.approx(0.5 * RATE, abs=2)


def test_hermes_say_plays_locally_when_a_device_is_configured(
    start_daemon, alsa: AlsaCapture, recorder: Recorder
) -> None:
    recorder.subscribe("hermes/#")
    start_daemon(synth=ToneEngine(seconds=0.3), audio={"output_device": "gsvtest", **QUIET})
    recorder.publish(TtsSay.topic(), TtsSay(text="Local.", id="h-local").to_json())
    finished = TtsSayFinished.from_json(recorder.wait_for(TtsSayFinished.topic()).payload)
    assert finished.id == "h-local"
    assert len(AlsaCapture.streams(alsa.good)) == 1
    assert not recorder.on("hermes/audioServer/#")
