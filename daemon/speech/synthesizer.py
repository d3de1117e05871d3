"""The engine interface: what the daemon needs from any voice (GPT-SoVITS bundle or eSpeak NG fallback).

Keeping it this small lets the service swap engines, fall back between them and test with doubles.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class VoiceInfo:
    name: str
    languages: list[str] = field(default_factory=list)
    description: str = ""


class UnknownVoice(ValueError):
    """The requested voice is not provided by this engine."""


class SynthesisError(RuntimeError):
    """The engine could not turn the text into audio."""


class Synthesizer(Protocol):
    name: str
    sample_rate: int

    def voices(self) -> list[VoiceInfo]: ...

    def synthesize(self, text: str, voice: str | None, lang: str | None, speed: float = 1.0) -> Iterator[np.ndarray]:
        """Yield float32 mono chunks in [-1, 1] (e.g. one per sentence) so playback can start early."""
        ...
