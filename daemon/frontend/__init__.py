"""GPT-SoVITS v2 text front end: text -> phone ids, identical to upstream's pypinyin branch.

``text_to_phones`` follows upstream ``get_phones_and_bert(text, language, "v2")`` step by step,
without BERT: squash double spaces, split into language segments (see :mod:`.language`),
normalise and convert each segment (Chinese segments through :mod:`.chinese`, English ones
through :mod:`.english`, which prefixes "," when a segment has fewer than 4 phones, Japanese,
Korean and Cantonese ones through the optional modules of :mod:`.languages`), join,
and redo the whole call on ``"." + text`` when fewer than 6 phones came out. BERT features
are computed elsewhere from each Chinese segment's ``norm_text`` and ``word2ph``.

Offline only: no module here opens a socket or fetches data at run time.

May import: ``daemon.config``, ``daemon.vocabulary`` (its language modes are the vocabulary's).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from daemon.frontend import en_normalize, english, languages
from daemon.frontend.language import split_languages
from daemon.frontend.languages import installed_languages
from daemon.frontend.sentences import split_sentences
from daemon.frontend.symbols import SYMBOL_TO_ID, SYMBOLS, phones_to_ids
from daemon.frontend.unavailable import FrontendUnavailable
from daemon.vocabulary import LANGUAGE_MODES

if TYPE_CHECKING:  # optional; build one with daemon.frontend.g2pw.G2PW(model_dir)
    from daemon.frontend.g2pw import G2PW

__all__ = [
    "FrontendResult",
    "FrontendUnavailable",
    "Lexicon",
    "Segment",
    "SYMBOLS",
    "installed_languages",
    "split_sentences",
    "text_to_phones",
]

# Full-width yen / caret in Chinese text: every "," phone becomes this pause symbol instead.
_SPECIAL_PAUSES = (("￥", "SP2"), ("^", "SP3"))


@dataclass
class Segment:
    """One language segment: its text as cut, normalised text, phones and ids."""

    lang: str
    text: str
    norm_text: str
    phones: list[str]
    phone_ids: list[int]
    word2ph: list[int] | None  # Chinese and Cantonese: phones per normalised character (for Chinese BERT)


@dataclass
class FrontendResult:
    segments: list[Segment]
    phones: list[str]
    phone_ids: list[int]
    norm_text: str
    retried_with_leading_dot: bool = False


@dataclass
class Lexicon:
    """User pronunciations: English word -> ARPAbet phones, Chinese word -> toned pinyin.

    Loaded from JSON (``{"english": {"nginx": "EH1 N JH IH0 N EH1 K S"}, "chinese":
    {"银行": "yin2 hang2"}}``) or TSV (``word<TAB>phones``; a word containing Han characters is
    Chinese and its phones are pinyin syllables, anything else is English ARPAbet).
    """

    english: dict[str, list[str]] = field(default_factory=dict)
    chinese: dict[str, list[str]] = field(default_factory=dict)

    def add(self, word: str, phones: str | list[str]) -> None:
        items = phones.split() if isinstance(phones, str) else list(phones)
        if re.search(r"[\u4e00-\u9fff]", word):
            self.chinese[word] = items
        else:
            bad = [p for p in items if p not in SYMBOL_TO_ID]
            if bad:
                raise ValueError(f"lexicon entry {word!r}: phones not in the symbol table: {bad}")
            self.english[word.lower()] = items

    @classmethod
    def load(cls, path: str | Path) -> Lexicon:
        path = Path(path)
        lexicon = cls()
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".json":
            data = json.loads(text)
            for section in ("english", "chinese"):
                for word, phones in data.get(section, {}).items():
                    lexicon.add(word, phones)
            return lexicon
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if "\t" not in line:
                raise ValueError(f"{path}:{number}: expected 'word<TAB>phones'")
            word, phones = line.split("\t", 1)
            lexicon.add(word.strip(), phones)
        return lexicon


def _clean_segment(text: str, lang: str, lexicon: Lexicon | None, g2pw: G2PW | None) -> Segment:
    """Upstream ``clean_text`` + ``cleaned_text_to_sequence`` for one segment."""
    if lang not in ("zh", "en", *languages.OPTIONAL_LANGUAGES):  # upstream: unknown -> English of a single space
        lang, text = "en", " "
    if lang in languages.OPTIONAL_LANGUAGES:
        module = languages.load(lang)
        norm = module.text_normalize(text)
        phones, word2ph = module.g2p(norm)
        if word2ph is not None and (len(phones) != sum(word2ph) or len(norm) != len(word2ph)):
            raise AssertionError(f"word2ph mismatch for {norm!r}")
        phones = [p if p in SYMBOL_TO_ID else "UNK" for p in phones]
        return Segment(lang, text, norm, phones, phones_to_ids(phones), word2ph)
    if lang == "zh":
        # imported on first Chinese text: jieba's and pypinyin's dictionaries are large, and an English-only
        # box never needs them
        from daemon.frontend import chinese

        zh_lexicon = lexicon.chinese if lexicon else None
        for mark, pause in _SPECIAL_PAUSES:
            if mark in text:
                norm = chinese.text_normalize(text.replace(mark, ","))
                phones, word2ph = chinese.g2p(norm, zh_lexicon, g2pw)
                phones = [pause if p == "," else p for p in phones]
                return Segment(lang, text, norm, phones, phones_to_ids(phones), word2ph)
        norm = chinese.text_normalize(text)
        phones, word2ph = chinese.g2p(norm, zh_lexicon, g2pw)
        if len(phones) != sum(word2ph) or len(norm) != len(word2ph):
            raise AssertionError(f"word2ph mismatch for {norm!r}")
    else:
        norm = en_normalize.text_normalize(text)
        phones = english.g2p(norm, lexicon.english if lexicon else None)
        if len(phones) < 4:
            phones = [","] + phones
        word2ph = None
    phones = [p if p in SYMBOL_TO_ID else "UNK" for p in phones]
    return Segment(lang, text, norm, phones, phones_to_ids(phones), word2ph)


def text_to_phones(
    text: str, language: str, lexicon: Lexicon | None = None, *, g2pw: G2PW | None = None, _final: bool = False
) -> FrontendResult:
    """Phones and ids of ``text`` for ``language``, one of :data:`~daemon.vocabulary.LANGUAGE_MODES`.

    Chinese follows upstream's pypinyin branch, or its default g2pW branch when ``g2pw`` (a
    user-supplied polyphone model, see :mod:`.g2pw`) is given.

    Raises ValueError for empty or whitespace-only text (upstream fails there with an
    IndexError); punctuation-only text gives upstream's result (e.g. "。。。" -> ["."]).
    Raises FrontendUnavailable (a ValueError) for a segment whose language's extra is not installed.
    """
    if language not in LANGUAGE_MODES:
        raise ValueError(f"language must be one of {LANGUAGE_MODES}, got {language!r}")
    if not text or not text.strip():
        raise ValueError("text is empty")
    text = re.sub(r" {2,}", " ", text)
    segments = [_clean_segment(run, lang, lexicon, g2pw) for lang, run in split_languages(text, language)]
    phones = [p for s in segments for p in s.phones]
    if not _final and len(phones) < 6:
        result = text_to_phones("." + text, language, lexicon, g2pw=g2pw, _final=True)
        result.retried_with_leading_dot = True
        return result
    return FrontendResult(
        segments=segments,
        phones=phones,
        phone_ids=[i for s in segments for i in s.phone_ids],
        norm_text="".join(s.norm_text for s in segments),
    )
