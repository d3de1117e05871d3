"""Test doubles of the engine interface (:class:`daemon.speech.synthesizer.Synthesizer`)."""

from __future__ import annotations

import threading
from collections.abc import Generator

import numpy as np

from daemon.speech.synthesizer import RegisteredVoice, Sampling, SynthesisError, UnknownVoice, VoiceInfo


def tone(seconds: float, sample_rate: int, freq: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    """A sine with 5 ms fades, so any click in the output comes from the daemon, not the source."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    ramp = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.005)
    return (amplitude * np.sin(2 * np.pi * freq * t) * ramp).astype(np.float32)


class ToneEngine:
    """Speaks every sentence as a tone of ``seconds``; can wait on a gate or raise, to stage scenarios.

    With ``pace``, each sentence waits for one release of the semaphore, so a test decides how far
    synthesis gets; ``sentences`` lists those synthesised. Not cached unless a subclass gives an ``identity``.
    ``concurrency`` > 1 stands for an engine that batches: the pipeline then synthesises publish-only requests
    side by side (``background`` lists how each call was asked).
    """

    sample_rate = 16000
    can_register_voices = False
    identity: str | None = None
    precision = None
    provider = None

    def __init__(
        self,
        seconds: float = 0.2,
        gate: threading.Event | None = None,
        error: Exception | None = None,
        name: str = "tone",
        pace: threading.Semaphore | None = None,
        concurrency: int = 1,
    ) -> None:
        self.name = name
        self.seconds = seconds
        self.gate = gate
        self.error = error
        self.pace = pace
        self.calls: list[str] = []
        self.sentences: list[str] = []
        self.samplings: list[Sampling | None] = []
        self.concurrency = concurrency
        self.background: list[bool] = []

    def voices(self) -> list[VoiceInfo]:
        return [VoiceInfo("tone-a", ["en"], "test tone A"), VoiceInfo("tone-b", ["en"], "test tone B")]

    def default_voice(self) -> str:
        return self.voices()[0].name

    def voice_language(self, voice: str) -> str:
        for info in self.voices():
            if info.name == voice:
                return info.languages[0]
        raise UnknownVoice(voice)

    def voice_identity(self, voice: str | None, lang: str | None) -> str | None:
        return voice  # every voice sounds the same

    def register_voice(self, name: str, wav_bytes: bytes, text: str, lang: str, clip_name: str = "clip",
                       description: str = "", *, created_by: str = "", created_via: str = "") -> RegisteredVoice:
        raise SynthesisError("a tone cannot be cloned")

    def remove_voice(self, name: str) -> None:
        raise SynthesisError("a tone is built in")

    def synthesize(self, text: str, voice: str | None, lang: str | None, speed: float = 1.0,
                   sampling: Sampling | None = None, background: bool = False) -> Generator[np.ndarray, None, None]:
        self.calls.append(text)
        self.samplings.append(sampling)
        self.background.append(background)
        if self.gate is not None:
            self.gate.wait(10)
        if self.error is not None:
            raise self.error
        for sentence in text.split("."):
            if sentence.strip():
                if self.pace is not None:
                    self.pace.acquire(timeout=10)
                self.sentences.append(sentence.strip())
                yield tone(self.seconds / speed, self.sample_rate)


def failing_engine(name: str = "broken") -> ToneEngine:
    return ToneEngine(error=SynthesisError("model exploded"), name=name)


class VoiceTones(ToneEngine):
    """A tone engine whose voices sound apart (``FREQS``), so a test can tell from the audio who spoke when."""

    FREQS = {None: 440.0, "tone-a": 440.0, "tone-b": 660.0}

    def synthesize(self, text: str, voice: str | None, lang: str | None, speed: float = 1.0,
                   sampling: Sampling | None = None, background: bool = False) -> Generator[np.ndarray, None, None]:
        for chunk in super().synthesize(text, voice, lang, speed, sampling, background):
            yield tone(chunk.size / self.sample_rate, self.sample_rate, self.FREQS[voice])
