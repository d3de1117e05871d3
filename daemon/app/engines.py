"""The daemon's engines, built in one place for start-up and reload: the configured GPT-SoVITS engine (warm)
and the eSpeak NG fallback beside it.

At start-up a bundle that cannot be used degrades the daemon to the fallback, loudly (``error`` says why);
a reload is refused instead, so the engine that works keeps serving.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from daemon.config import ConfigError, Settings
from daemon.speech.espeak import EspeakVoice
from daemon.speech.synthesizer import Synthesizer, UnknownVoice

log = logging.getLogger(__name__)


class EngineUnavailable(Exception):
    """The configured bundle cannot be used; the message names it and the reason."""


@dataclass(frozen=True)
class Engines:
    engine: Synthesizer  # the fallback itself when no bundle is configured or it cannot be used
    fallback: Synthesizer
    error: str | None = None  # why the configured bundle is not the one speaking

    @property
    def neural(self) -> bool:
        return self.engine is not self.fallback


def fallback_voice(settings: Settings) -> Synthesizer:
    try:
        return EspeakVoice(settings.engine.fallback_voice)
    except UnknownVoice as exc:
        raise ConfigError(f"engine.fallback_voice: {exc}") from exc


def build_engines(settings: Settings, shared_threads: bool = False, degrade: bool = True) -> Engines:
    """Raises :class:`ConfigError` for what the configuration asks and the engine lacks (an unknown fallback
    voice, an ``engine.default_voice`` not registered); a bundle that cannot be loaded degrades to the fallback
    when ``degrade``, else raises :class:`EngineUnavailable`."""
    fallback = fallback_voice(settings)
    bundle = settings.engine.bundle
    if bundle is None:
        return Engines(fallback, fallback)
    try:
        from daemon.model.engine import load_engine
    except Exception as exc:  # a missing package, or a data file missing from the installation
        error = f"GPT-SoVITS engine unavailable in this installation: {type(exc).__name__}: {exc}"
    else:
        try:
            return Engines(load_engine(settings, shared_threads), fallback)
        except ConfigError:
            raise
        except Exception as exc:
            error = f"cannot load bundle {bundle}: {exc}"
    if not degrade:
        raise EngineUnavailable(error)
    log.error("%s; speaking with the %s", error, fallback.name)
    return Engines(fallback, fallback, error)
