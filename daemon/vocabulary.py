"""Words every layer shares: request priorities, speaking rates, outputs, audio formats, the protocols requests
arrive on, the front end's language modes, the model versions a bundle is made from and the scopes of the HTTP API's
tokens.

It sits beside ``config.py`` at the bottom of the daemon and imports nothing of it, so the configuration, the
queue, the protocol parsers, the engine, the command line and the offline converter all name these the same way.
"""

from __future__ import annotations

from typing import Literal, get_args

Priority = Literal["emergency", "high", "normal", "low"]
Output = Literal["play", "publish", "both"]
AudioFormat = Literal["wav", "pcm"]
Source = Literal["native", "hermes", "wyoming", "http"]

PRIORITY_RANK: dict[str, int] = {"emergency": 0, "high": 1, "normal": 2, "low": 3}
MIN_SPEED, MAX_SPEED = 0.25, 4.0  # the speaking rates the engine takes (1 = as the voice speaks)
MAX_BATCH = 8  # the most sequences one T2S decode step takes (a hardware profile's or engine.max_batch)


def speed_within_range(speed: float) -> float:
    """A rate clamped to the engine's range: for upstream's APIs, whose clients send any stretch factor."""
    return min(max(speed, MIN_SPEED), MAX_SPEED)


LanguageMode = Literal["zh", "en", "all_zh", "ja", "all_ja", "ko", "all_ko", "yue", "all_yue", "auto", "auto_yue"]
"""How the GPT-SoVITS front end reads text (upstream's v2 modes, api_v2's ``text_lang``): ``zh``/``ja``/``ko``/``yue``
are that language with English mixed in, ``all_*`` that language only (Latin words still read as English), ``en``
English only, ``auto`` decided run by run from the script, ``auto_yue`` the same with Chinese read as Cantonese."""
LANGUAGE_MODES: tuple[str, ...] = get_args(LanguageMode)
SEGMENT_LANGUAGES: tuple[str, ...] = ("zh", "en", "ja", "ko", "yue")
"""The languages a segment of text is read in (each with its own front end); the modes above combine them."""


def mode_language(mode: str) -> str | None:
    """The language a mode reads its text in (English runs aside); None for ``auto``, decided run by run."""
    return None if mode == "auto" else mode.removeprefix("all_").removeprefix("auto_")

def language_mode(lang: str) -> str:
    """The mode a request's ``lang`` is read in: a mode as it is; a language code such as ``ja-JP`` or ``en_US``
    (Wyoming, Home Assistant) as its language's mode when there is one; anything else ``auto``."""
    if lang in LANGUAGE_MODES:
        return lang
    base = lang.lower().replace("_", "-").split("-")[0]
    return base if base in LANGUAGE_MODES else "auto"


SOVITS_VERSIONS = ("v1", "v2", "v2Pro", "v2ProPlus")  # a bundle's model_version; upstream's v3/v4 are not supported
PRO_VERSIONS = ("v2Pro", "v2ProPlus")  # their voice style also takes a speaker-verification embedding

Scope = Literal["speak", "voices", "admin"]
"""What a bearer token may do on the HTTP API: make the box speak, manage voices, or anything (``admin``)."""
SCOPES: tuple[str, ...] = get_args(Scope)
