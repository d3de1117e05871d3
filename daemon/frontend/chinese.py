"""Chinese front end: normalised text -> GPT-SoVITS v2 phones and word2ph.

Mirrors upstream ``text/chinese2.py``: jieba part-of-speech words, upstream's merge rules,
pypinyin initials/finals with neutral tone 5 (its pypinyin branch) or, given a user-supplied
:class:`~daemon.frontend.g2pw.G2PW`, its ``is_g2pw`` branch (g2pW readings per sentence plus the
polyphonic dictionary fixes per word), then tone sandhi, erhua and the opencpop pinyin -> symbol
table. ``word2ph`` has one entry per character of the normalised text (2 for a syllable, 1 for a
punctuation mark), which is what the BERT feature expansion needs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from functools import cache
from typing import TYPE_CHECKING

from daemon.frontend import zh_dictionaries

zh_dictionaries.install()  # before jieba and pypinyin load their own dictionaries

import jieba  # noqa: E402
import jieba.posseg as psg  # noqa: E402
from pypinyin import Style, lazy_pinyin  # noqa: E402
from pypinyin.contrib.tone_convert import to_finals_tone3, to_initials  # noqa: E402

from daemon.frontend import tone_sandhi  # noqa: E402
from daemon.frontend.symbols import DATA_DIR, PUNCTUATION, PUNCTUATION_CLASS, REPEATED_PUNCTUATION_RE  # noqa: E402
from daemon.frontend.zh_normalize import normalize  # noqa: E402

if TYPE_CHECKING:  # g2pW is optional: its module is only imported by whoever builds one
    from daemon.frontend.g2pw import G2PW

jieba.setLogLevel(logging.CRITICAL)


# Punctuation mapping applied after number normalisation (upstream ``rep_map``).
_PUNCT_MAP = {
    "：": ",", "；": ",", "，": ",", "。": ".", "！": "!", "？": "?", "\n": ".", "·": ",",
    "、": ",", "...": "…", "$": ".", "/": ",", "—": "-", "~": "…", "～": "…",
}  # fmt: skip
_PUNCT_MAP_RE = re.compile("|".join(re.escape(k) for k in _PUNCT_MAP))
_NOT_KEPT_RE = re.compile(r"[^\u4e00-\u9fa5" + PUNCTUATION_CLASS + r"]+")
_SENTENCE_CUT_RE = re.compile(f"(?<=[{PUNCTUATION_CLASS}])\\s*")

# Words that always / never take erhua (upstream ``must_erhua`` / ``not_erhua``).
MUST_ERHUA = frozenset({"小院儿", "胡同儿", "范儿", "老汉儿", "撒欢儿", "寻老礼儿", "妥妥儿", "媳妇儿"})
NOT_ERHUA = frozenset(
    "虐儿 为儿 护儿 瞒儿 救儿 替儿 有儿 一儿 我儿 俺儿 妻儿 拐儿 聋儿 乞儿 患儿 幼儿 孤儿 婴儿 婴幼儿 "
    "连体儿 脑瘫儿 流浪儿 体弱儿 混血儿 蜜雪儿 舫儿 祖儿 美儿 应采儿 可儿 侄儿 孙儿 侄孙儿 女儿 男儿 "
    "红孩儿 花儿 虫儿 马儿 鸟儿 猪儿 猫儿 狗儿 少儿".split()
)

_FINAL_AFTER_INITIAL = {"uei": "ui", "iou": "iu", "uen": "un"}
_ZERO_INITIAL_WHOLE = {"ing": "ying", "i": "yi", "in": "yin", "u": "wu"}
_ZERO_INITIAL_PREFIX = {"v": "yu", "e": "e", "i": "y", "u": "w"}


@cache
def pinyin_to_symbols() -> dict[str, tuple[str, str]]:
    """opencpop-strict table: toneless pinyin -> (initial symbol, final symbol)."""
    table: dict[str, tuple[str, str]] = {}
    for line in (DATA_DIR / "zh_pinyin_to_symbols.tsv").read_text(encoding="utf-8").splitlines():
        if line.strip():
            pinyin, phones = line.split("\t")
            initial, final = phones.strip().split(" ")
            table[pinyin] = (initial, final)
    return table


def replace_punctuation(text: str) -> str:
    """Map Chinese punctuation to the ASCII set and drop everything that is not Hanzi."""
    text = text.replace("嗯", "恩").replace("呣", "母")
    text = _PUNCT_MAP_RE.sub(lambda m: _PUNCT_MAP[m.group(0)], text)
    return _NOT_KEPT_RE.sub("", text)


def text_normalize(text: str) -> str:
    """Upstream ``chinese2.text_normalize``: numbers spelled out, punctuation mapped and squashed."""
    text = "".join(replace_punctuation(sentence) for sentence in normalize(text))
    return REPEATED_PUNCTUATION_RE.sub(r"\1", text)


def _merge_erhua(initials: list[str], finals: list[str], word: str, pos: str) -> tuple[list[str], list[str]]:
    for i, final in enumerate(finals):
        if i == len(finals) - 1 and word[i] == "儿" and final == "er1":
            finals[i] = "er2"
    if word not in MUST_ERHUA and (word in NOT_ERHUA or pos in {"a", "j", "nr"}):
        return initials, finals
    if len(finals) != len(word):
        return initials, finals
    new_finals: list[str] = []
    for i, final in enumerate(finals):
        if (
            i == len(finals) - 1
            and word[i] == "儿"
            and final in {"er2", "er5"}
            and word[-2:] not in NOT_ERHUA
            and new_finals
        ):
            final = "er" + new_finals[-1][-1]
        new_finals.append(final)
    return list(initials), new_finals


def _syllable_symbols(initial: str, final: str) -> list[str]:
    """pypinyin initial + toned final -> [initial symbol, final symbol + tone]."""
    bare, tone = final[:-1], final[-1]
    if tone not in "12345":
        raise ValueError(f"unexpected pinyin final {final!r}")
    pinyin = initial + bare
    if initial:
        if bare in _FINAL_AFTER_INITIAL:
            pinyin = initial + _FINAL_AFTER_INITIAL[bare]
    elif pinyin in _ZERO_INITIAL_WHOLE:
        pinyin = _ZERO_INITIAL_WHOLE[pinyin]
    elif pinyin[:1] in _ZERO_INITIAL_PREFIX:
        pinyin = _ZERO_INITIAL_PREFIX[pinyin[0]] + pinyin[1:]
    table = pinyin_to_symbols()
    if pinyin not in table:
        raise ValueError(f"pinyin {pinyin!r} not in the symbol table")
    sym_initial, sym_final = table[pinyin]
    return [sym_initial, sym_final + tone]


def _word_pinyin(word: str, lexicon: Mapping[str, list[str]] | None) -> tuple[list[str], list[str]]:
    """Initials and toned finals of one word, from the user lexicon or pypinyin."""
    if lexicon is not None and word in lexicon:
        syllables = lexicon[word]
        initials = [to_initials(s, strict=True) for s in syllables]
        finals = [to_finals_tone3(s, strict=True, neutral_tone_with_five=True) for s in syllables]
        return initials, finals
    initials = lazy_pinyin(word, neutral_tone_with_five=True, style=Style.INITIALS)
    finals = lazy_pinyin(word, neutral_tone_with_five=True, style=Style.FINALS_TONE3)
    return initials, finals


def _g2pw_word_pinyin(word: str, readings: list[str], g2pw: G2PW) -> tuple[list[str], list[str]]:
    """Upstream's g2pW branch for one word: dictionary fixes over the sentence's readings, then split."""
    initials: list[str] = []
    finals: list[str] = []
    for reading in g2pw.correct(word, readings):
        if reading[0].isalpha():
            initials.append(to_initials(reading))
            finals.append(to_finals_tone3(reading, neutral_tone_with_five=True))
        else:  # punctuation stands for itself
            initials.append(reading)
            finals.append(reading)
    return initials, finals


def g2p(
    norm_text: str, lexicon: Mapping[str, list[str]] | None = None, g2pw: G2PW | None = None
) -> tuple[list[str], list[int]]:
    """Phones and word2ph for normalised Chinese text.

    ``lexicon`` maps a word to its toned pinyin syllables ("行" -> ["hang2"]); a word jieba
    produces that is in it skips pypinyin and g2pW (sandhi still applies, as upstream does for g2pW).
    With ``g2pw`` the other words take its readings, as upstream's default (``is_g2pw``) front end.
    """
    phones: list[str] = []
    word2ph: list[int] = []
    sentences = [re.sub("[a-zA-Z]+", "", s) for s in _SENTENCE_CUT_RE.split(norm_text) if s.strip() != ""]
    # Upstream runs g2pW once over all non-empty sentences, then walks each sentence's words.
    g2pw_readings = iter(g2pw([s for s in sentences if s])) if g2pw is not None else None
    for sentence in sentences:
        readings = next(g2pw_readings) if g2pw_readings is not None and sentence else []
        words = [(pair.word, pair.flag) for pair in psg.lcut(sentence)]
        if lexicon:
            words = _resegment_for_lexicon(words, lexicon)
        segments = tone_sandhi.pre_merge_for_modify(words)
        start = 0
        for word, pos in segments:
            word_readings = readings[start : start + len(word)]
            start += len(word)
            if pos == "eng":
                continue
            if g2pw is None or (lexicon is not None and word in lexicon):
                initials, finals = _word_pinyin(word, lexicon)
            else:
                initials, finals = _g2pw_word_pinyin(word, word_readings, g2pw)
            finals = tone_sandhi.modified_tone(word, pos, finals)
            initials, finals = _merge_erhua(initials, finals, word, pos)
            for initial, final in zip(initials, finals, strict=False):
                if initial == final:
                    if initial not in PUNCTUATION:
                        raise ValueError(f"unexpected non-pinyin token {initial!r} in {sentence!r}")
                    phones.append(initial)
                    word2ph.append(1)
                else:
                    phones.extend(_syllable_symbols(initial, final))
                    word2ph.append(2)
    return phones, word2ph


def _resegment_for_lexicon(words: list[tuple[str, str]], lexicon: Mapping[str, list[str]]) -> list[tuple[str, str]]:
    """Cut lexicon words out whole (longest match first) even where jieba split them otherwise.

    A lexicon word is looked for at every character; text between lexicon hits keeps jieba's
    word boundaries and tags (a piece takes the tag of the jieba word it starts in).
    """
    text = "".join(w for w, _ in words)
    tags: list[str] = []
    boundaries: set[int] = set()
    for word, tag in words:
        boundaries.add(len(tags))
        tags.extend([tag] * len(word))
    longest = max(len(k) for k in lexicon)
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(text):
        hit = next((n for n in range(min(longest, len(text) - i), 0, -1) if text[i : i + n] in lexicon), 0)
        if hit:
            out.append((text[i : i + hit], tags[i]))
            i += hit
            continue
        j = i + 1
        while j < len(text) and j not in boundaries and not any(text[j:].startswith(k) for k in lexicon):
            j += 1
        out.append((text[i:j], tags[i]))
        i = j
    return out
