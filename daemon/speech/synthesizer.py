"""The engine interface: what the daemon needs from any voice (GPT-SoVITS bundle or eSpeak NG fallback).

Everything the pipeline, the audio cache, the status and voice registration ask of an engine is here, so none
of them has to know which engine it holds; the service swaps engines, falls back between them and is tested
with doubles through this alone.
"""

from __future__ import annotations

import re
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from daemon.vocabulary import LANGUAGE_MODES

VOICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # a registered voice's name is its directory's


@dataclass(frozen=True)
class VoiceInfo:
    """A voice as lists show it; a registered one also says its reference clip's length and transcript, and when
    (ISO 8601, UTC) and by whom (a token's name or an OS user) through which protocol, where its record keeps it
    (voices registered before it did say None)."""

    name: str
    languages: list[str] = field(default_factory=list)
    description: str = ""
    created_at: str | None = None
    created_by: str | None = None
    created_via: str | None = None
    clip_s: float | None = None
    transcript: str | None = None


@dataclass(frozen=True)
class Sampling:
    """How a request asks the neural engine to choose its tokens (upstream's inference fields); a field left
    None keeps the engine's default, a seed makes the result repeatable. eSpeak NG has nothing to sample."""

    top_k: int | None = None
    top_p: float | None = None
    temperature: float | None = None
    repetition_penalty: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.temperature is not None and self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.repetition_penalty is not None and self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be within 0 .. 2**63-1, got {self.seed}")


@dataclass(frozen=True)
class RegistrationProblem:
    """Why a voice registration is refused before its clip is read: the field at fault and what to do."""

    field: str  # name, text or lang
    message: str


def voice_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a registered voice, or None."""
    if not isinstance(name, str) or not VOICE_NAME.fullmatch(name) or ".." in name:
        return (f"voice name {name!r} is invalid: use 1-64 letters, digits, '_', '-' or '.', starting with a "
                "letter or digit (no '/', '..', '+', '#')")
    return None


def registration_problem(name: str, text: str, lang: str) -> RegistrationProblem | None:
    """The engine's checks on a registration's name, language and transcript, in its order: every way in
    (the command line, MQTT, HTTP) is refused with the same words."""
    if problem := voice_name_problem(name):
        return RegistrationProblem("name", problem)
    if lang not in LANGUAGE_MODES:
        return RegistrationProblem("lang", f"voice language must be {', '.join(LANGUAGE_MODES[:-1])} or "
                                           f"{LANGUAGE_MODES[-1]}, got {lang!r}")
    if not text or not text.strip():
        return RegistrationProblem("text", "the transcript of the reference clip is empty")
    return None


class UnknownVoice(ValueError):
    """The requested voice is not provided by this engine."""


class SynthesisError(RuntimeError):
    """The engine could not turn the text into audio."""


class RegisteredVoice(Protocol):
    """A voice just cloned from a reference clip, as its registration reports it."""

    @property
    def name(self) -> str: ...

    @property
    def seconds(self) -> float:
        """Length of the reference clip."""
        ...


class Synthesizer(Protocol):
    name: str
    sample_rate: int
    """The rate of every chunk :meth:`synthesize` yields; fixed for the engine's life."""
    can_register_voices: bool
    """Whether :meth:`register_voice` clones voices (GPT-SoVITS) or refuses (eSpeak NG)."""
    concurrency: int
    """How many requests it synthesises usefully at once (its decodes batched); 1: one after another."""

    @property
    def identity(self) -> str | None:
        """What makes this engine's audio what it is (model, weights, precision, library version): the audio
        cache keys rendered audio by it. None: the cache cannot tell, so nothing is cached."""
        ...

    @property
    def precision(self) -> str | dict[str, str] | None:
        """The loaded model's precision (one name, or per graph when they differ); None without a model."""
        ...

    @property
    def provider(self) -> str | None:
        """The onnxruntime execution provider the model runs on; None without a model."""
        ...

    def voices(self) -> list[VoiceInfo]: ...

    def default_voice(self) -> str:
        """The voice of a request that names none; raises UnknownVoice when there is none."""
        ...

    def voice_language(self, voice: str) -> str:
        """The language ``voice`` speaks when a request gives none; raises UnknownVoice for a voice not here."""
        ...

    def voice_identity(self, voice: str | None, lang: str | None) -> str | None:
        """The voice a request naming ``voice`` (None: the default) in ``lang`` is spoken with, spelled so that
        other audio means another string (a voice registered again under its name is a new one). Raises a
        ValueError (UnknownVoice among them) when the engine could not speak it."""
        ...

    def register_voice(self, name: str, wav_bytes: bytes, text: str, lang: str, clip_name: str = "clip",
                       description: str = "", *, created_by: str = "", created_via: str = "") -> RegisteredVoice:
        """Clone a voice from a reference clip and its transcript, noting who registered it (``created_by``,
        through the protocol ``created_via``); raises a ValueError naming what is wrong with
        the clip or the transcript, or SynthesisError from an engine that cannot (see
        :attr:`can_register_voices`)."""
        ...

    def remove_voice(self, name: str) -> None:
        """Delete a registered voice; raises UnknownVoice when none has that name, SynthesisError from an engine
        whose voices are built in."""
        ...

    def synthesize(self, text: str, voice: str | None, lang: str | None, speed: float = 1.0,
                   sampling: Sampling | None = None, background: bool = False) -> Generator[np.ndarray, None, None]:
        """Yield float32 mono chunks in [-1, 1] at :attr:`sample_rate` (e.g. one per sentence) so playback can
        start early; closed early when the request is cut. ``sampling``: the request's own token sampling, for
        an engine that samples. ``background``: the audio goes to no speaker, so an engine that synthesises
        several requests at once lets the others go first."""
        ...
