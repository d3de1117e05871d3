"""Script-based language split, standing in for upstream's LangSegmenter (split-lang + fastText).

Upstream cuts text into runs (Han/kana, Hangul, digits, punctuation, newlines, anything else),
glues punctuation and newlines to the run before them, asks a language detector about each
run and then gives digit runs the language of a neighbour. The detector is a downloaded
fastText model, so here the script decides instead: Han and kana are Japanese ("ja") in a text with
any kana in it and Chinese ("zh") otherwise, Hangul (syllables or jamo) is Korean ("ko"), and everything
else that is not a digit or punctuation (Latin letters, symbols such as ``°``/``℃``/``％``, emoji)
English. The boundary and digit rules are upstream's, so ``72.5kg`` is one English run while
``PM2.5 指数`` gives ``PM`` + ``2.5 指数``.

Only ``auto`` keeps these labels. The other modes keep just "English or not", which is all upstream
keeps either (``ja``/``ko``/``yue``/``zh`` give every non-English run the mode's language,
``all_*`` every run without a Latin letter), so the detector's guesses between Chinese and
Japanese Han text do not reach them. In ``auto`` the kana rule is the documented difference: upstream's
detector guesses per run, so it may call Han runs of a Japanese sentence Chinese (``目的`` of
``目的地まで``) and reads a Chinese sentence with a Japanese clause as both; here a text with kana is
Japanese throughout (English and Korean runs aside). The detector never answers Cantonese (upstream
maps ``yue`` to Chinese), so Cantonese-only characters in ``auto`` are read as Mandarin, as upstream
does; ``auto_yue`` reads every Chinese run as Cantonese.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# split-lang's punctuation set (a run of its own that then joins the run before it).
_SPLIT_PUNCTUATION = frozenset(
    """〜~,.;:!?，。！？；：、·([{<（【《〈「『“‘)]}>）】》〉」』”’"-_——#$%&……￥'*+<=>?@[\\]^_`{|}~"""
)
_ZH_JA_RE = re.compile(r"[\u4e00-\u9fff\u3040-\u30ff々]")
_KANA_RE = re.compile(r"[\u3040-\u30ff々]")
_HANGUL_RE = re.compile(r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")  # jamo, compatibility jamo, syllables
_FULL_EN_RE = re.compile(
    r"^(?=.*[A-Za-z])[A-Za-z0-9\s\u0020-\u007E\u2000-\u206F\u3000-\u303F\uFF00-\uFFEF]+$", re.DOTALL
)
# split-lang's marks for giving a digit run its neighbour's language, verbatim for parity (not the segment
# marks of daemon.frontend.sentences, which include "~", ":" and "…").
_SENTENCE_MARKS = (",", ".", "!", "?", "，", "。", "！", "？")

# Run kinds (split-lang's LangSectionType).
ZH_JA, KO, DIGIT, PUNCT, NEWLINE, OTHERS = "zh_ja", "ko", "digit", "punctuation", "newline", "others"


@dataclass
class _Piece:
    lang: str
    text: str


@dataclass
class _Section:
    kind: str
    pieces: list[_Piece] = field(default_factory=list)


def _initial_lang(kind: str, japanese: bool) -> str:
    if kind == ZH_JA:
        return "ja" if japanese else "zh"
    if kind == OTHERS:
        return "en"
    return kind  # "ko", "digit", "punctuation", "newline"


def _pre_split(text: str) -> list[_Section]:
    """Cut into typed runs; spaces stay with the run they follow."""
    sections: list[_Section] = []
    japanese = bool(_KANA_RE.search(text))
    kind = OTHERS
    chars: list[str] = []

    def flush() -> None:
        if chars:
            run = "".join(chars)
            sections.append(_Section(kind, [_Piece(_initial_lang(kind, japanese), run)]))
            chars.clear()

    for i, ch in enumerate(text):
        if _ZH_JA_RE.match(ch):
            new_kind = ZH_JA
        elif _HANGUL_RE.match(ch):
            new_kind = KO
        elif ch.isdigit():
            new_kind = DIGIT
        elif ch in _SPLIT_PUNCTUATION:
            if ch == "'" and i > 0 and not text[i - 1].isspace():
                chars.append(ch)  # apostrophe inside a word
                continue
            flush()  # every punctuation mark starts a run of its own
            kind = PUNCT
            chars.append(ch)
            continue
        elif ch.isspace():
            if ch in "\n\r":
                flush()
                kind = NEWLINE
            chars.append(ch)
            continue
        else:
            new_kind = OTHERS
        if new_kind != kind:
            flush()
            kind = new_kind
        chars.append(ch)
    flush()
    return sections


def _merge_marks(sections: list[_Section], mark_kind: str) -> list[_Section]:
    """Join punctuation (or newline) runs to the run before them, or the next one at the start."""
    if not sections:
        return sections
    merged = [sections[0]]
    for cur in sections[1:]:
        prev = merged[-1]
        if prev.kind == mark_kind:
            prev.kind = cur.kind
            if mark_kind == PUNCT:
                prev.pieces[-1].text += cur.pieces[0].text
                prev.pieces[-1].lang = cur.pieces[0].lang
                prev.pieces.extend(cur.pieces[1:])
            else:
                prev.pieces.extend(cur.pieces)
        elif cur.kind == mark_kind:
            if mark_kind == PUNCT:
                prev.pieces[-1].text += cur.pieces[0].text
                prev.pieces.extend(cur.pieces[1:])
            else:
                prev.pieces.extend(cur.pieces)
        else:
            merged.append(cur)
    grouped = [merged[0]]
    for sec in merged[1:]:
        if sec.kind == grouped[-1].kind:
            grouped[-1].pieces.extend(sec.pieces)
        else:
            grouped.append(sec)
    for sec in grouped:
        sec.pieces = _merge_pieces(sec.pieces, mark_kind)
    return grouped


def _merge_pieces(pieces: list[_Piece], mark_lang: str) -> list[_Piece]:
    out: list[_Piece] = []
    last = ""
    for piece in pieces:
        if out and piece.lang == mark_lang:
            out[-1].text += piece.text
        elif out and (piece.lang == last or last == ""):
            out[-1].text += piece.text
            if out[-1].lang == mark_lang:
                out[-1].lang = piece.lang
        else:
            out.append(_Piece(piece.lang, piece.text))
        last = piece.lang
    return out


def split_by_script(text: str) -> list[tuple[str, str]]:
    """split-lang's ``split_by_lang`` with a script detector: [(lang, text), ...]."""
    sections = _pre_split(text.strip())
    sections = _merge_marks(sections, PUNCT)
    sections = _merge_marks(sections, NEWLINE)
    return [(p.lang, p.text) for sec in sections for p in sec.pieces]


def _merge_same(items: list[_Piece], piece: _Piece) -> None:
    if items and items[-1].lang == piece.lang:
        items[-1].text += piece.text
    else:
        items.append(piece)


def get_texts(text: str, default_lang: str = "") -> list[tuple[str, str]]:
    """Upstream ``LangSegmenter.getTexts``: label runs, then give digit runs a neighbour's language."""
    items: list[_Piece] = []
    have_num = False
    for lang, run in split_by_script(text):
        piece = _Piece(lang, run)
        if lang == "digit":
            if default_lang:
                piece.lang = default_lang
            else:
                have_num = True
        elif _FULL_EN_RE.match(run):
            piece.lang = "en"
        elif default_lang:
            piece.lang = default_lang
        _merge_same(items, piece)

    if have_num:
        pending, items = items, []
        for i, piece in enumerate(pending):
            if piece.lang == "digit":
                piece.lang = _digit_lang(items, pending, i)
            _merge_same(items, piece)
    return [(p.lang, p.text) for p in items]


def _digit_lang(done: list[_Piece], pending: list[_Piece], i: int) -> str:
    last = len(pending) - 1
    if done and i == last:
        return done[-1].lang
    if not done and i < last:
        return pending[1].lang
    if done and i < last:
        prev, nxt, cur = done[-1], pending[i + 1], pending[i]
        if prev.lang == nxt.lang:
            return prev.lang
        if prev.text[-1] in _SENTENCE_MARKS:
            return nxt.lang
        if nxt.text[0] in _SENTENCE_MARKS:
            return prev.lang
        if cur.text[-1] in ("。", "."):
            return prev.lang
        return prev.lang if len(prev.text) >= len(nxt.text) else nxt.lang
    return "zh"


def split_languages(text: str, mode: str) -> list[tuple[str, str]]:
    """Segments [(lang, text)] the way ``get_phones_and_bert`` builds them for ``mode``.

    ``mode``: one of :data:`daemon.vocabulary.LANGUAGE_MODES`. The segment languages are "zh", "en",
    "ja", "ko", "yue", or (``auto`` only) a run upstream gives no language, such as punctuation alone.
    """
    if mode == "en":
        return [("en", text)]
    if mode.startswith("all_"):
        base = mode.removeprefix("all_")
        runs = get_texts(text, "zh" if base == "yue" else base)
        return [("yue" if base == "yue" and lang == "zh" else lang, run) for lang, run in runs]
    if mode in ("auto", "auto_yue"):
        return [("yue" if mode == "auto_yue" and lang == "zh" else lang, run) for lang, run in get_texts(text)]
    if mode not in ("zh", "ja", "ko", "yue"):
        raise ValueError(f"unsupported language mode {mode!r}")
    segments: list[list[str]] = []
    for lang, run in get_texts(text):
        is_en = lang == "en"
        if segments and (segments[-1][0] == "en") == is_en:
            segments[-1][1] += run
            continue
        segments.append(["en" if is_en else mode, run])
    return [(lang, run) for lang, run in segments]
