"""English text normalisation as GPT-SoVITS v2 does it (``text/en_normalization/expend.py``).

Numbers, money, ordinals, times, measures and fractions are spelled out with ``inflect``;
upstream's quirks are kept on purpose because the model was trained on them: times always get
"a.m."/"p.m." appended ("10:30 am" -> "ten thirty a.m. am"), a number followed by ". " becomes
an ordinal, and capital letters inside a word are split off ("WiFi" -> "Wi Fi", "ICU" -> "I C U").
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache
from typing import TYPE_CHECKING

from daemon.frontend.symbols import PUNCTUATION_CLASS
from daemon.frontend.zh_normalize import OPERAND

if TYPE_CHECKING:
    import inflect


@cache
def _engine() -> inflect.engine:
    """Imported on the first English number: inflect costs memory and start-up time that a box speaking only
    Chinese never needs."""
    import inflect

    return inflect.engine()


_MEASUREMENTS = {
    "m": ("meter", "meters"),
    "km": ("kilometer", "kilometers"),
    "km/h": ("kilometer per hour", "kilometers per hour"),
    "ft": ("feet", "feet"),
    "L": ("liter", "liters"),
    "tbsp": ("tablespoon", "tablespoons"),
    "tsp": ("teaspoon", "teaspoons"),
    "h": ("hour", "hours"),
    "min": ("minute", "minutes"),
    "s": ("second", "seconds"),
    "°C": ("degree celsius", "degrees celsius"),
    "°F": ("degree fahrenheit", "degrees fahrenheit"),
}

_ORDINAL_NUMBER_RE = re.compile(r"\b([0-9]+)\. ")
_COMMA_NUMBER_RE = re.compile(r"([0-9][0-9\,]+[0-9])")
_TIME_RE = re.compile(r"\b([01]?[0-9]|2[0-3]):([0-5][0-9])\b")
_MEASUREMENT_RE = re.compile(r"\b([0-9]+(\.[0-9]+)?(m|km|km/h|ft|L|tbsp|tsp|h|min|s|°C|°F))\b")
_POUNDS_START_RE = re.compile(r"£([0-9\.\,]*[0-9]+)")
_POUNDS_END_RE = re.compile(r"([0-9\.\,]*[0-9]+)£")
_DOLLARS_START_RE = re.compile(r"\$([0-9\.\,]*[0-9]+)")
_DOLLARS_END_RE = re.compile(r"([(0-9\.\,]*[0-9]+)\$")
_DECIMAL_RE = re.compile(r"([0-9]+\.\s*[0-9]+)")
_FRACTION_RE = re.compile(r"([0-9]+/[0-9]+)")
_ORDINAL_RE = re.compile(r"[0-9]+(st|nd|rd|th)")
_NUMBER_RE = re.compile(r"[0-9]+")
_ASMD_RE = re.compile(OPERAND + r"\s+([\+\-\×÷=])\s+" + OPERAND)
_ASMD_WORDS = {"+": " plus ", "-": " minus ", "×": " times ", "÷": " divided by ", "=": " Equals "}
_NEGATIVE_RE = re.compile(r"(?:^|\s+)(-)(\d+)")
_NOT_KEPT_RE = re.compile(r"[^ A-Za-z'.,?!\-]")
_INNER_CAPITAL_RE = re.compile(r"(?<!^)(?<![\s])([A-Z])")

# Upstream builds its punctuation pattern from re.escape()d character-class strings, so only
# the literal strings below (never a lone ";" or ":") and the three full-width marks map.
_PUNCT_MAP = {"[;:：，；]": ",", '["’]': "'", "。": ".", "！": "!", "？": "?"}
_PUNCT_MAP_RE = re.compile("|".join(re.escape(k) for k in _PUNCT_MAP))
_REPEATED_PUNCT_RE = re.compile(f"([{PUNCTUATION_CLASS}\\s])([{PUNCTUATION_CLASS}])+")


def _ordinal_number(m: re.Match[str]) -> str:
    return _engine().ordinal(m.group(1)) + ", "


def _expand_time(m: re.Match[str]) -> str:
    hours, minutes = int(m.group(1)), int(m.group(2))
    period = "a.m." if hours < 12 else "p.m."
    if hours > 12:
        hours -= 12
    hour_word = _engine().number_to_words(hours)
    if minutes == 0:
        return f"{hour_word} o'clock {period}"
    return f"{hour_word} {_engine().number_to_words(minutes)} {period}"


def _expand_measurement(m: re.Match[str]) -> str:
    unit = m.group(3)
    amount = int(m.group(1).replace(unit, "").replace(".", ""))
    plural = not (m.group(2) is None and amount == 1)
    return m.group(1).replace(unit, " " + _MEASUREMENTS[unit][int(plural)])


def _expand_currency(m: re.Match[str], major: tuple[str, str], minor: tuple[str, str]) -> str:
    parts = m.group(1).split(".")
    if len(parts) > 2:
        return m.group(1) + " " + major[1]
    whole = int(parts[0]) if parts[0] else 0
    cents = int(parts[1].ljust(2, "0")) if len(parts) > 1 and parts[1] else 0
    major_word = major[0] if whole == 1 else major[1]
    minor_word = minor[0] if cents == 1 else minor[1]
    if whole and cents:
        return f"{whole} {major_word} and {cents} {minor_word}"
    if whole:
        return f"{whole} {major_word}"
    if cents:
        return f"{cents} {minor_word}"
    return "zero " + major[1]


def _expand_pounds(m: re.Match[str]) -> str:
    return _expand_currency(m, ("pound", "pounds"), ("penny", "pence"))


def _expand_dollars(m: re.Match[str]) -> str:
    return _expand_currency(m, ("dollar", "dollars"), ("cent", "cents"))


def _expand_decimal(m: re.Match[str]) -> str:
    whole, fraction = m.group(1).split(".")[:2]
    return whole + " point " + " ".join(fraction)


def _expand_fraction(m: re.Match[str]) -> str:
    numerator, denominator = (int(x) for x in m.group(0).split("/"))
    numerator_words = _engine().number_to_words(numerator)
    if denominator == 1:
        return numerator_words
    if denominator == 2:
        denominator_words = "half" if numerator == 1 else "halves"
    else:
        denominator_words = _engine().ordinal(_engine().number_to_words(denominator))
        if numerator > 1:
            denominator_words += "s"
    return f"{numerator_words} {denominator_words}"


def _expand_ordinal(m: re.Match[str]) -> str:
    return _engine().number_to_words(m.group(0))


def _expand_number(m: re.Match[str]) -> str:
    """Years 1001-2999 are read in pairs ("nineteen ninety-eight"), other numbers in full."""
    num = int(m.group(0))
    words = _engine().number_to_words
    if 1000 < num < 3000:
        if num == 2000:
            return "two thousand"
        if 2000 < num < 2010:
            return "two thousand " + words(num % 100)
        if num % 100 == 0:
            return words(num // 100) + " hundred"
        return words(num, andword="", zero="oh", group=2).replace(", ", " ")
    return words(num, andword="")


def normalize(text: str) -> str:
    """Upstream ``expend.normalize``: spell out numbers and symbols, keep [A-Za-z '.,?!-]."""
    text = _ORDINAL_NUMBER_RE.sub(_ordinal_number, text)
    while _ASMD_RE.search(text):
        text = _ASMD_RE.sub(lambda m: m.group(1) + _ASMD_WORDS[m.group(8)] + m.group(9), text)
    text = _NEGATIVE_RE.sub(lambda m: f"negative {m.group(2)}", text)
    text = _COMMA_NUMBER_RE.sub(lambda m: m.group(1).replace(",", ""), text)
    text = _TIME_RE.sub(_expand_time, text)
    text = _MEASUREMENT_RE.sub(_expand_measurement, text)
    text = _POUNDS_START_RE.sub(_expand_pounds, text)
    text = _POUNDS_END_RE.sub(_expand_pounds, text)
    text = _DOLLARS_START_RE.sub(_expand_dollars, text)
    text = _DOLLARS_END_RE.sub(_expand_dollars, text)
    text = _DECIMAL_RE.sub(_expand_decimal, text)
    text = _FRACTION_RE.sub(_expand_fraction, text)
    text = _ORDINAL_RE.sub(_expand_ordinal, text)
    text = _NUMBER_RE.sub(_expand_number, text)
    text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    text = text.replace("%", " percent")
    text = _NOT_KEPT_RE.sub("", text)
    text = re.sub(r"(?i)i\.e\.", "that is", text)
    text = re.sub(r"(?i)e\.g\.", "for example", text)
    return _INNER_CAPITAL_RE.sub(r" \1", text)


def text_normalize(text: str) -> str:
    """Upstream ``english.text_normalize``: punctuation map, normalise, squash repeated marks."""
    text = _PUNCT_MAP_RE.sub(lambda m: _PUNCT_MAP[m.group(0)], text)
    text = normalize(text)
    return _REPEATED_PUNCT_RE.sub(r"\1", text)
