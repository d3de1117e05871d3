"""Cantonese front end: a segment -> GPT-SoVITS v2 phones, as upstream's ``text/cantonese.py`` reads it.

The text is normalised by the Chinese normaliser (:mod:`.zh_normalize`: Traditional characters become
Simplified first, numbers are read the Mandarin way, ``10:30`` -> 十点半), its punctuation mapped to the
marks the model knows and everything else but Han characters deleted, so Latin letters left inside a
Cantonese segment vanish. ToJyutping (``gsv-edge[yue]``) gives each character its Jyutping syllable,
read from the Simplified text as upstream does. Each syllable is cut at the first prefix upstream's
``INITIALS`` list matches (a list with oddities such as ``aa`` or ``ong``, kept for parity), giving the
phones ``Y`` + initial and ``Y`` + final + tone; two phones per character and one per mark (``word2ph``).
Upstream imports cn2an here but never calls it, so it is not needed.
"""

from __future__ import annotations

import re

import ToJyutping

from daemon.frontend.symbols import PUNCTUATION, PUNCTUATION_CLASS
from daemon.frontend.zh_normalize import normalize

# Upstream's rep_map for Cantonese: Chinese marks to the model's, quotes and brackets to "'" (which the
# deletion below then removes, as upstream's does), dashes and tildes to "-".
_PUNCT_MAP = {
    "：": ",", "；": ",", "，": ",", "。": ".", "！": "!", "？": "?", "\n": ".", "·": ",", "、": ",",
    "...": "…", "$": ".", "“": "'", "”": "'", '"': "'", "‘": "'", "’": "'", "（": "'", "）": "'", "(": "'",
    ")": "'", "《": "'", "》": "'", "【": "'", "】": "'", "[": "'", "]": "'", "—": "-", "～": "-", "~": "-",
    "「": "'", "」": "'",
}  # fmt: skip
_PUNCT_MAP_RE = re.compile("|".join(re.escape(k) for k in _PUNCT_MAP))
_NOT_KEPT_RE = re.compile(r"[^\u4e00-\u9fa5" + PUNCTUATION_CLASS + r"]+")
_MARKS_ONLY_RE = re.compile(f"^[{PUNCTUATION_CLASS}]+$")
_JYUTPING_RE = re.compile(r"^([a-z]+[1-6]+[ ]?)+$")  # one syllable or several ("liu4 ge3")

# Upstream's INITIALS, in its order: the first prefix a toneless syllable starts with is its "initial",
# the rest its final (or the prefix's last letter when nothing is left).
INITIALS = (
    "aa", "aai", "aak", "aap", "aat", "aau", "ai", "au", "ap", "at", "ak", "a", "p", "b", "e", "ts", "t", "dz",
    "d", "kw", "k", "gw", "g", "f", "h", "l", "m", "ng", "n", "s", "y", "w", "c", "z", "j", "ong", "on", "ou",
    "oi", "ok", "o", "uk", "ung", "sp", "spl", "spn", "sil",
)  # fmt: skip


def replace_punctuation(text: str) -> str:
    """Map marks to the model's and delete everything that is neither a Han character nor one of them."""
    return _NOT_KEPT_RE.sub("", _PUNCT_MAP_RE.sub(lambda m: _PUNCT_MAP[m.group(0)], text))


def text_normalize(text: str) -> str:
    """Upstream ``cantonese.text_normalize``: the Chinese normaliser, then :func:`replace_punctuation` per
    sentence (repeated marks are kept, unlike Mandarin's)."""
    return "".join(replace_punctuation(sentence) for sentence in normalize(text))


def jyutping(text: str) -> list[str]:
    """A syllable (or upstream's space-joined syllables) per character and each mark on its own."""
    out: list[str] = []
    for word, syllable in ToJyutping.get_jyutping_list(text):
        if _MARKS_ONLY_RE.match(word):
            out.extend(word)
        elif syllable is None or not _JYUTPING_RE.search(syllable):
            raise ValueError(f"no Cantonese reading for {word!r}")
        else:
            out.append(syllable)
    return out


def _syllable_phones(syllable: str) -> list[str] | None:
    """``Y`` + initial and ``Y`` + final + tone, or None when no initial matches (upstream drops it)."""
    tone = syllable[-1] if syllable[-1].isdigit() else ""
    toneless = syllable[:-1] if tone else syllable
    for initial in INITIALS:
        if toneless.startswith(initial):
            if toneless.startswith("nga"):
                initial, final = toneless[:2], toneless[2:] or toneless[-1]
            else:
                final = toneless[len(initial) :] or initial[-1]
            return ["Y" + initial, "Y" + final + (tone if tone != "0" else "")]
    return None


def g2p(norm_text: str) -> tuple[list[str], list[int]]:
    """Phones and phones per character of normalised Cantonese text."""
    phones: list[str] = []
    word2ph: list[int] = []
    for syllable in jyutping(norm_text):
        if syllable in PUNCTUATION or syllable == "_":
            phones.append(syllable if syllable in PUNCTUATION else "Y_")
            word2ph.append(1)
            continue
        if (found := _syllable_phones(syllable)) is not None:
            phones.extend(found)
            word2ph.append(len(found))
    return phones, word2ph
