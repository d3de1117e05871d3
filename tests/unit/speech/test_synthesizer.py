"""The engine interface as each engine answers it: GPT-SoVITS on the demo bundle, eSpeak NG and the test double.
Callers (pipeline, audio cache, status, voice registration) ask these and nothing else."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest

from daemon.model.bundle import Bundle
from daemon.model.engine import Engine
from daemon.model.hardware import HardwareProfile
from daemon.speech.espeak import EspeakVoice
from daemon.speech.synthesizer import SynthesisError, Synthesizer, UnknownVoice
from tests.doubles import ToneEngine
from tests.unit.model.test_engine import make_wav

MEMBERS = sorted(
    {name for name in vars(Synthesizer) if not name.startswith("_")} | set(inspect.get_annotations(Synthesizer))
)


@pytest.fixture()
def neural(demo_bundle: Path, tmp_path: Path) -> Engine:  # noqa: F811
    engine = Engine(Bundle.load(demo_bundle), HardwareProfile.load("x86-cpu"), tmp_path / "state")
    engine.register_voice("alice", make_wav(), "Hello there, this is me.", "en")
    engine.register_voice("bob", make_wav(seed=1), "这是一段参考录音。", "zh")
    return engine


def test_every_engine_has_the_whole_interface(neural: Engine) -> None:
    assert {"identity", "precision", "provider", "can_register_voices", "default_voice", "voice_language",
            "voice_identity", "register_voice"} <= set(MEMBERS)
    for engine in (neural, EspeakVoice("en"), ToneEngine()):
        assert [name for name in MEMBERS if not hasattr(engine, name)] == [], type(engine).__name__


def test_gpt_sovits_answers_from_its_bundle_and_voices(neural: Engine) -> None:
    assert neural.precision == "fp32" and neural.provider == "CPUExecutionProvider"
    assert neural.can_register_voices and neural.default_voice() == "alice"
    assert neural.voice_language("bob") == "zh"
    with pytest.raises(UnknownVoice):
        neural.voice_language("nobody")
    key = neural.voices_store.meta("alice").key
    assert neural.voice_identity(None, None) == neural.voice_identity("alice", "en") == f"alice {key}"
    again = neural.register_voice("alice", make_wav(seed=2), "Hello there, this is me.", "en")
    assert again.name == "alice" and again.seconds == 4.0 and neural.voice_identity("alice", None) != f"alice {key}"
    chunks = neural.synthesize("Hi there.", "bob", None)  # the voice's own language, Chinese
    assert next(chunks).dtype == np.float32
    chunks.close()


def test_espeak_has_no_model_and_clones_nothing() -> None:
    espeak = EspeakVoice("en-us")
    assert espeak.precision is None and espeak.provider is None and not espeak.can_register_voices
    assert espeak.default_voice() == "en-us" and espeak.voice_language("de") == "de"
    assert espeak.voice_identity(None, "de") == "de" and espeak.voice_identity(None, None) == "en-us"
    with pytest.raises(UnknownVoice):
        espeak.voice_identity("no-such-voice", None)
    with pytest.raises(SynthesisError, match="GPT-SoVITS"):
        espeak.register_voice("alice", make_wav(), "Hello there.", "en")


def test_the_double_is_a_synthesizer_too() -> None:
    tone = ToneEngine()
    assert tone.identity is None and tone.default_voice() == "tone-a" and tone.voice_language("tone-b") == "en"
    assert tone.voice_identity(None, None) is None and not tone.can_register_voices
    with pytest.raises(SynthesisError):
        tone.register_voice("alice", make_wav(), "Hello there.", "en")
