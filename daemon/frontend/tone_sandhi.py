"""Mandarin tone sandhi over jieba word segments (不, 一, third-tone chains, neutral tones).

Rules and their order follow GPT-SoVITS ``text/tone_sandhi.py`` (from PaddleSpeech), since the
v2 models were trained on its output. Finals carry the tone as a trailing digit ("ao3").
"""

from __future__ import annotations

import json
from functools import cache

import jieba
from pypinyin import Style, lazy_pinyin

from daemon.frontend.symbols import DATA_DIR

Segment = list[str]  # [word, pos]

_PUNCT = "：，；。？！“”‘’':,;.?!"  # upstream ToneSandhi.punc, verbatim: what stops 一 taking the 4th tone
_MODAL_PARTICLES = "吧呢哈啊呐噻嘛吖嗨呐哦哒额滴哩哟喽啰耶喔诶"


@cache
def _word_lists() -> tuple[frozenset[str], frozenset[str]]:
    data = json.loads((DATA_DIR / "zh_neutral_tone_words.json").read_text(encoding="utf-8"))
    return frozenset(data["must_neutral"]), frozenset(data["must_not_neutral"])


def _set_tone(final: str, tone: str) -> str:
    return final[:-1] + tone


def _all_tone_three(finals: list[str]) -> bool:
    return all(f[-1] == "3" for f in finals)


def _is_reduplication(word: str) -> bool:
    return len(word) == 2 and word[0] == word[1]


def finals_tone3(word: str) -> list[str]:
    """pypinyin finals with tone digits and 5 for the neutral tone."""
    return lazy_pinyin(word, neutral_tone_with_five=True, style=Style.FINALS_TONE3)


def split_word(word: str) -> list[str]:
    """Cut a word into its shortest search sub-word and the remainder (two pieces)."""
    pieces = sorted(jieba.cut_for_search(word), key=len)
    first = pieces[0]
    if word.find(first) == 0:
        return [first, word[len(first) :]]
    return [word[: -len(first)], first]


def _neutral_sandhi(word: str, pos: str, finals: list[str]) -> list[str]:
    must, must_not = _word_lists()
    for j in range(1, len(word)):
        if word[j] == word[j - 1] and pos[0] in {"n", "v", "a"} and word not in must_not:
            finals[j] = _set_tone(finals[j], "5")
    ge_idx = word.find("个")
    if word and word[-1] in _MODAL_PARTICLES:
        finals[-1] = _set_tone(finals[-1], "5")
    elif word and word[-1] in "的地得":
        finals[-1] = _set_tone(finals[-1], "5")
    elif len(word) == 1 and word in "了着过" and pos in {"ul", "uz", "ug"}:
        finals[-1] = _set_tone(finals[-1], "5")
    elif len(word) > 1 and word[-1] in "们子" and pos in {"r", "n"} and word not in must_not:
        finals[-1] = _set_tone(finals[-1], "5")
    elif len(word) > 1 and word[-1] in "上下里" and pos in {"s", "l", "f"}:
        finals[-1] = _set_tone(finals[-1], "5")
    elif len(word) > 1 and word[-1] in "来去" and word[-2] in "上下进出回过起开":
        finals[-1] = _set_tone(finals[-1], "5")
    elif (ge_idx >= 1 and (word[ge_idx - 1].isnumeric() or word[ge_idx - 1] in "几有两半多各整每做是")) or (
        word == "个"
    ):
        finals[ge_idx] = _set_tone(finals[ge_idx], "5")
    elif word in must or word[-2:] in must:
        finals[-1] = _set_tone(finals[-1], "5")

    parts = split_word(word)
    groups = [finals[: len(parts[0])], finals[len(parts[0]) :]]
    for i, part in enumerate(parts):
        if part in must or part[-2:] in must:
            groups[i][-1] = _set_tone(groups[i][-1], "5")
    return groups[0] + groups[1]


def _bu_sandhi(word: str, finals: list[str]) -> list[str]:
    if len(word) == 3 and word[1] == "不":  # 看不懂
        finals[1] = _set_tone(finals[1], "5")
    else:
        for i, char in enumerate(word):
            if char == "不" and i + 1 < len(word) and finals[i + 1][-1] == "4":  # 不怕
                finals[i] = _set_tone(finals[i], "2")
    return finals


def _yi_sandhi(word: str, finals: list[str]) -> list[str]:
    if "一" in word and all(c.isnumeric() for c in word if c != "一"):
        return finals  # number sequences keep yi1
    if len(word) == 3 and word[1] == "一" and word[0] == word[-1]:  # 看一看
        finals[1] = _set_tone(finals[1], "5")
    elif word.startswith("第一"):
        finals[1] = _set_tone(finals[1], "1")
    else:
        for i, char in enumerate(word):
            if char == "一" and i + 1 < len(word):
                if finals[i + 1][-1] == "4":
                    finals[i] = _set_tone(finals[i], "2")
                elif word[i + 1] not in _PUNCT:
                    finals[i] = _set_tone(finals[i], "4")
    return finals


def _three_sandhi(word: str, finals: list[str]) -> list[str]:
    if len(word) == 2 and _all_tone_three(finals):
        finals[0] = _set_tone(finals[0], "2")
    elif len(word) == 3:
        parts = split_word(word)
        if _all_tone_three(finals):
            if len(parts[0]) == 2:  # 蒙古/包
                finals[0] = _set_tone(finals[0], "2")
                finals[1] = _set_tone(finals[1], "2")
            elif len(parts[0]) == 1:  # 纸/老虎
                finals[1] = _set_tone(finals[1], "2")
        else:
            groups = [finals[: len(parts[0])], finals[len(parts[0]) :]]
            for i, sub in enumerate(groups):
                if _all_tone_three(sub) and len(sub) == 2:  # 所有/人
                    sub[0] = _set_tone(sub[0], "2")
                elif i == 1 and not _all_tone_three(sub) and sub[0][-1] == "3" and groups[0][-1][-1] == "3":
                    groups[0][-1] = _set_tone(groups[0][-1], "2")  # 好/喜欢
            finals = groups[0] + groups[1]
    elif len(word) == 4:  # idioms: two halves of two characters
        halves = [finals[:2], finals[2:]]
        for half in halves:
            if _all_tone_three(half):
                half[0] = _set_tone(half[0], "2")
        finals = halves[0] + halves[1]
    return finals


def modified_tone(word: str, pos: str, finals: list[str]) -> list[str]:
    """Apply the four sandhi rules to one word's finals, in upstream order."""
    finals = _bu_sandhi(word, finals)
    finals = _yi_sandhi(word, finals)
    finals = _neutral_sandhi(word, pos, finals)
    return _three_sandhi(word, finals)


# --------------------------------------------------------------------------- segment merging


def _merge_bu(seg: list[Segment]) -> list[Segment]:
    out: list[Segment] = []
    last = ""
    for word, pos in seg:
        if last == "不":
            word = last + word
        if word != "不":
            out.append([word, pos])
        last = word
    if last == "不":
        out.append([last, "d"])
    return out


def _merge_yi(seg: list[Segment]) -> list[Segment]:
    out: list[Segment] = []
    i = 0
    while i < len(seg):  # 听 一 听 -> 听一听
        word, pos = seg[i]
        if i >= 1 and word == "一" and i + 1 < len(seg):
            last = out[-1]
            nxt = seg[i + 1]
            if last[0] == nxt[0] and last[1] == "v" and nxt[1] == "v":
                out[-1] = [last[0] + "一" + nxt[0], last[1]]
                i += 2
                continue
        out.append([word, pos])
        i += 1
    merged: list[Segment] = []
    for word, pos in out:  # a lone 一 joins the next word
        if merged and merged[-1][0] == "一":
            merged[-1][0] += word
        else:
            merged.append([word, pos])
    return merged


def _merge_reduplication(seg: list[Segment]) -> list[Segment]:
    out: list[Segment] = []
    for word, pos in seg:
        if out and word == out[-1][0]:
            out[-1][0] += word
        else:
            out.append([word, pos])
    return out


def _merge_three_tones(seg: list[Segment], whole_words: bool) -> list[Segment]:
    """Join neighbours in third tone (whole words, or last/first syllable) up to 3 characters."""
    finals = [finals_tone3(word) for word, _ in seg]
    out: list[Segment] = []
    merged_last = [False] * len(seg)
    for i, (word, pos) in enumerate(seg):
        if i >= 1 and not merged_last[i - 1]:
            if whole_words:
                both = _all_tone_three(finals[i - 1]) and _all_tone_three(finals[i])
            else:
                both = finals[i - 1][-1][-1] == "3" and finals[i][0][-1] == "3"
            if both:
                prev = seg[i - 1][0]
                if not _is_reduplication(prev) and len(prev) + len(word) <= 3:
                    out[-1][0] += word
                    merged_last[i] = True
                    continue
        out.append([word, pos])
    return out


def _merge_er(seg: list[Segment]) -> list[Segment]:
    out: list[Segment] = []
    for i, (word, pos) in enumerate(seg):
        if i >= 1 and word == "儿" and seg[i - 1][0] != "#":
            out[-1][0] += word
        else:
            out.append([word, pos])
    return out


def pre_merge_for_modify(seg: list[tuple[str, str]]) -> list[Segment]:
    """Re-group jieba's words so that the sandhi rules see 不X, 一X, AA, third-tone pairs, X儿."""
    merged = _merge_bu([[w, p] for w, p in seg])
    merged = _merge_yi(merged)
    merged = _merge_reduplication(merged)
    merged = _merge_three_tones(merged, whole_words=True)
    merged = _merge_three_tones(merged, whole_words=False)
    return _merge_er(merged)
