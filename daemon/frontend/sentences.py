"""Cut input text into synthesis chunks the way upstream's ``TextPreprocessor.preprocess`` does.

Mimics ``replace_consecutive_punctuation`` + ``pre_seg_text`` with the ``cut5`` method
(api_v2's default: cut after every punctuation mark, keeping decimal points), or ``cut0``
(no cutting, only the checks). Chunks shorter than 5 characters are merged into the next one,
chunks of only symbols are dropped, each chunk ends with a sentence mark ("。", or "." for
English) and chunks over 510 characters are cut at punctuation.
"""

from __future__ import annotations

import re

_CONSECUTIVE = re.compile(r"([!?…,.\-])([!?…,.\-])+")
# Upstream's ``splits``: the marks a segment may end with (else one is added); the engine closes a voice's
# transcript with one the same way.
SENTENCE_ENDS = frozenset("，。？！,.?!~:：—…")
_CUT5_MARKS = frozenset(",.;?!、，。？！;：…")
_CUT0_PUNCT = frozenset("!?…,.- ")
_MAX_CHUNK = 510


def _cut5(text: str) -> list[str]:
    text = text.strip("\n")
    chunks: list[str] = []
    current: list[str] = []
    for i, ch in enumerate(text):
        current.append(ch)
        if ch not in _CUT5_MARKS:
            continue
        if ch == "." and 0 < i < len(text) - 1 and text[i - 1].isdigit() and text[i + 1].isdigit():
            continue  # decimal point
        chunks.append("".join(current))
        current = []
    if current:
        chunks.append("".join(current))
    return [c for c in chunks if not set(c) <= _CUT5_MARKS]


def _cut0(text: str) -> list[str]:
    return ["\n"] if set(text) <= _CUT0_PUNCT else [text]


def _split_big(text: str) -> list[str]:
    pieces = re.split("([" + re.escape("".join(sorted(SENTENCE_ENDS))) + "])", text)
    out: list[str] = []
    current = ""
    for piece in pieces:
        if len(current + piece) > _MAX_CHUNK:
            out.append(current)
            current = piece
        else:
            current += piece
    if current:
        out.append(current)
    return out


def _merge_short(chunks: list[str], threshold: int = 5) -> list[str]:
    if len(chunks) < 2:
        return chunks
    out: list[str] = []
    buf = ""
    for chunk in chunks:
        buf += chunk
        if len(buf) >= threshold:
            out.append(buf)
            buf = ""
    if buf:
        if out:
            out[-1] += buf
        else:
            out.append(buf)
    return out


def split_sentences(text: str, language: str = "zh", method: str = "cut5") -> list[str]:
    """Synthesis chunks of ``text``; ``language`` "en" uses "." instead of "。" as filler mark."""
    if method not in ("cut0", "cut5"):
        raise ValueError(f"unsupported split method {method!r} (cut0, cut5)")
    mark = "." if language == "en" else "。"
    text = _CONSECUTIVE.sub(r"\1", text).strip("\n")
    if not text:
        return []
    first = re.split("[" + re.escape("".join(sorted(SENTENCE_ENDS))) + "]", text)[0].strip()
    if text[0] not in SENTENCE_ENDS and len(first) < 4:
        text = mark + text
    joined = "\n".join(_cut5(text) if method == "cut5" else _cut0(text))
    while "\n\n" in joined:
        joined = joined.replace("\n\n", "\n")
    chunks = joined.split("\n")
    if all(c in (" ", "\n", "") for c in chunks):
        raise ValueError("text has nothing to say")
    chunks = _merge_short([c for c in chunks if c not in (" ", "")])
    out: list[str] = []
    for chunk in chunks:
        if not chunk.strip() or not re.sub(r"\W+", "", chunk):
            continue
        if chunk[-1] not in SENTENCE_ENDS:
            chunk += mark
        out.extend(_split_big(chunk) if len(chunk) > _MAX_CHUNK else [chunk])
    return out
