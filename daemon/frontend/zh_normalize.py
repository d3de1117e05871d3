"""Chinese text normalisation: numbers, dates, times, units and symbols spelled out in Hanzi.

Behaviour follows GPT-SoVITS ``text/zh_normalization`` (itself from PaddleSpeech) rule for
rule, including its quirks, because the acoustic model was trained on text normalised that
way: for example a time range reuses the first minute to decide on "半", and ``400-820-8820``
is read through the arithmetic rule as "四零零减八二零减八八二零".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache

from daemon.frontend.symbols import DATA_DIR

DIGITS = dict(zip("0123456789", "零一二三四五六七八九", strict=True))
# Digit-count exponent -> unit character, smallest first.
UNITS: tuple[tuple[int, str], ...] = ((1, "十"), (2, "百"), (3, "千"), (4, "万"), (8, "亿"))

# Measure words after which an Arabic number is read as a quantity ("两" instead of "二").
_QUANTIFIER_CHARS = (
    "万丈世丘丝两个丸亩人亿代令件伏位例元冬出刀分列刻勺匹千升单卮厘双叠口只台合名吨周啖回场块坡堂堆"
    "堵墙壳壶处夏夜天头套季客家寸对寻封尺尾层山岁岭常幅幢平年床座张忽户所手扎打批把担挑捆撮支斗斛斤"
    "方日旬时春曲更月本朵条杯板枚枝架栋株根桶棵段毛毫江泡注溪炮煲片瓶百盆盏盒盘目石砣碗碟秋秒程窠笼"
    "管箩箱篇篮簋米粒纪线罐网罗群脚腔艘袋袭角课贯贴趟跳身辆辈道里针钟钧钱钵铢铺锅锱间阙队阵面页顶项"
    "颗首"
)
_QUANTIFIER_WORDS = ("公分", "十吨", "小时", "微克", "微米", "美元")

# Unit abbreviations replaced anywhere in a sentence, in this order ("m" before "mm").
MEASURES: tuple[tuple[str, str], ...] = (
    ("cm2", "平方厘米"),
    ("cm²", "平方厘米"),
    ("cm3", "立方厘米"),
    ("cm³", "立方厘米"),
    ("cm", "厘米"),
    ("db", "分贝"),
    ("ds", "毫秒"),
    ("kg", "千克"),
    ("km", "千米"),
    ("m2", "平方米"),
    ("m²", "平方米"),
    ("m³", "立方米"),
    ("m3", "立方米"),
    ("ml", "毫升"),
    ("m", "米"),
    ("mm", "毫米"),
    ("s", "秒"),
)

_GREEK = {
    "α": "阿尔法", "β": "贝塔", "γ": "伽玛", "Γ": "伽玛", "δ": "德尔塔", "Δ": "德尔塔",
    "ε": "艾普西龙", "ζ": "捷塔", "η": "依塔", "θ": "西塔", "Θ": "西塔", "ι": "艾欧塔",
    "κ": "喀帕", "λ": "拉姆达", "Λ": "拉姆达", "μ": "缪", "ν": "拗", "ξ": "克西", "Ξ": "克西",
    "ο": "欧米克伦", "π": "派", "Π": "派", "ρ": "肉", "ς": "西格玛", "Σ": "西格玛",
    "σ": "西格玛", "τ": "套", "υ": "宇普西龙", "φ": "服艾", "Φ": "服艾", "χ": "器",
    "ψ": "普赛", "Ψ": "普赛", "ω": "欧米伽", "Ω": "欧米伽",
}  # fmt: skip
_CIRCLED = dict(zip("①②③④⑤⑥⑦⑧⑨⑩", "一二三四五六七八九十", strict=True))
_OPERATOR_FALLBACK = {"+": "加", "-": "减", "×": "乘", "÷": "除", "=": "等"}
_ASMD_WORDS = {"+": "加", "-": "减", "×": "乘", "÷": "除", "=": "等于"}
_SUPERSCRIPTS = dict(zip("⁰¹²³⁴⁵⁶⁷⁸⁹ˣʸⁿ", "0123456789xyn", strict=True))

_FULLWIDTH = {0xFF10 + i: ord("0") + i for i in range(10)}
_FULLWIDTH.update({0xFF21 + i: ord("A") + i for i in range(26)})
_FULLWIDTH.update({0xFF41 + i: ord("a") + i for i in range(26)})
_FULLWIDTH[0x3000] = ord(" ")


@cache
def _traditional_to_simplified() -> dict[int, str]:
    table: dict[int, str] = {}
    path = DATA_DIR / "zh_traditional_to_simplified.tsv"
    for line in path.read_text(encoding="utf-8").splitlines():
        trad, simp = line.split("\t")
        table[ord(trad)] = simp
    return table


def traditional_to_simplified(text: str) -> str:
    """Upstream ``char_convert.tranditional_to_simplified``, character by character (g2pW uses it too)."""
    return text.translate(_traditional_to_simplified())


# --------------------------------------------------------------------------- numbers


def _cardinal_parts(digits: str, use_zero: bool = True) -> list[str]:
    """Hanzi pieces of a digit string, inserting 零 where leading zeros were dropped."""
    stripped = digits.lstrip("0")
    if not stripped:
        return []
    if len(stripped) == 1:
        if use_zero and len(stripped) < len(digits):
            return [DIGITS["0"], DIGITS[stripped]]
        return [DIGITS[stripped]]
    power, unit = max((p, u) for p, u in UNITS if p < len(stripped))
    return _cardinal_parts(digits[:-power]) + [unit] + _cardinal_parts(digits[-power:])


def verbalize_cardinal(digits: str) -> str:
    """Read an integer string as a number: "105" -> 一百零五, "12" -> 十二."""
    if not digits:
        return ""
    digits = digits.lstrip("0")
    if not digits:
        return DIGITS["0"]
    parts = _cardinal_parts(digits)
    if len(parts) >= 2 and parts[0] == DIGITS["1"] and parts[1] == "十":
        parts = parts[1:]
    return "".join(parts)


def verbalize_digits(digits: str, alt_one: bool = False) -> str:
    """Read a digit string digit by digit, optionally with 幺 for one (phone numbers)."""
    text = "".join(DIGITS[d] for d in digits)
    return text.replace("一", "幺") if alt_one else text


def num2str(value: str) -> str:
    """Read "128.50" as 一百二十八点五零 (a trailing zero run keeps one zero, as upstream)."""
    parts = value.split(".")
    if len(parts) > 2:
        raise ValueError(f"number with more than one point: {value!r}")
    integer, decimal = (parts[0], "") if len(parts) == 1 else (parts[0], parts[1])
    result = verbalize_cardinal(integer)
    decimal = decimal.rstrip("0") + "0" if decimal.endswith("0") else decimal.rstrip("0")
    if decimal:
        result = (result or "零") + "点" + verbalize_digits(decimal)
    return result


def _time_num(value: str) -> str:
    result = num2str(value.lstrip("0"))
    return DIGITS["0"] + result if value.startswith("0") else result


# --------------------------------------------------------------------------- patterns

_TIME = r"([0-1]?[0-9]|2[0-3]):([0-5][0-9])(:([0-5][0-9]))?"
RE_TIME = re.compile(_TIME)
RE_TIME_RANGE = re.compile(_TIME + r"(~|-)" + _TIME)
RE_DATE = re.compile(r"(\d{4}|\d{2})年((0?[1-9]|1[0-2])月)?(((0?[1-9])|((1|2)[0-9])|30|31)([日号]))?")
RE_DATE2 = re.compile(r"(\d{4})([- /.])(0[1-9]|1[012])\2(0[1-9]|[12][0-9]|3[01])")
_UNIT_ALT = r"(%|°C|℃|度|摄氏度|cm2|cm²|cm3|cm³|cm|db|ds|kg|km|m2|m²|m³|m3|ml|m|mm|s)"
_NUM = r"((-?)((\d+)(\.\d+)?)|(\.(\d+)))"
RE_TO_RANGE = re.compile(_NUM + _UNIT_ALT + "[~]" + _NUM + _UNIT_ALT)
RE_TEMPERATURE = re.compile(r"(-?)(\d+(\.\d+)?)(°C|℃|度|摄氏度)")
# An operand of an arithmetic expression (number, decimal or letter, with superscripts); upstream's English
# normaliser uses the same pattern.
OPERAND = r"((-?)((\d+)(\.\d+)?[⁰¹²³⁴⁵⁶⁷⁸⁹ˣʸⁿ]*)|(\.\d+[⁰¹²³⁴⁵⁶⁷⁸⁹ˣʸⁿ]*)|([A-Za-z][⁰¹²³⁴⁵⁶⁷⁸⁹ˣʸⁿ]*))"
RE_ASMD = re.compile(OPERAND + r"([\+\-\×÷=])" + OPERAND)
RE_POWER = re.compile(r"[⁰¹²³⁴⁵⁶⁷⁸⁹ˣʸⁿ]+")
RE_FRAC = re.compile(r"(-?)(\d+)/(\d+)")
RE_PERCENTAGE = re.compile(r"(-?)(\d+(\.\d+)?)%")
RE_MOBILE_PHONE = re.compile(r"(?<!\d)((\+?86 ?)?1([38]\d|5[0-35-9]|7[678]|9[89])\d{8})(?!\d)")
RE_TELEPHONE = re.compile(r"(?<!\d)((0(10|2[1-3]|[3-9]\d{2})-?)?[1-9]\d{6,7})(?!\d)")
RE_NATIONAL_UNIFORM_NUMBER = re.compile(r"(400)(-)?\d{3}(-)?\d{4}")
RE_RANGE = re.compile(r"(?<![\d\+\-\×÷=])((-?)((\d+)(\.\d+)?))[-~]((-?)((\d+)(\.\d+)?))(?![\d\+\-\×÷=])")
RE_INTEGER = re.compile(r"(-)(\d+)")
RE_VERSION_NUM = re.compile(r"((\d+)(\.\d+)(\.\d+)?(\.\d+)+)")
RE_DECIMAL_NUM = re.compile(r"(-?)((\d+)(\.\d+))|(\.(\d+))")
_QUANTIFIER_ALT = "|".join(_QUANTIFIER_WORDS) + "|[" + _QUANTIFIER_CHARS + "]"
RE_POSITIVE_QUANTIFIERS = re.compile(r"(\d+)([多余几\+])?(" + _QUANTIFIER_ALT + ")")
RE_DEFAULT_NUM = re.compile(r"\d{3}\d*")
RE_NUMBER = re.compile(r"(-?)((\d+)(\.\d+)?)|(\.(\d+))")


def _replace_time(m: re.Match[str]) -> str:
    is_range = m.re is RE_TIME_RANGE
    hour, minute, second = m.group(1), m.group(2), m.group(4)
    text = f"{num2str(hour)}点"
    if minute.lstrip("0"):
        text += "半" if int(minute) == 30 else f"{_time_num(minute)}分"
    if second and second.lstrip("0"):
        text += f"{_time_num(second)}秒"
    if is_range:
        hour2, minute2, second2 = m.group(6), m.group(7), m.group(9)
        text += f"至{num2str(hour2)}点"
        if minute2.lstrip("0"):
            # Upstream tests the *first* minute here; kept for identical output.
            text += "半" if int(minute) == 30 else f"{_time_num(minute2)}分"
        if second2 and second2.lstrip("0"):
            text += f"{_time_num(second2)}秒"
    return text


def _replace_date(m: re.Match[str]) -> str:
    year, month, day = m.group(1), m.group(3), m.group(5)
    text = f"{verbalize_digits(year)}年" if year else ""
    if month:
        text += f"{verbalize_cardinal(month)}月"
    if day:
        text += f"{verbalize_cardinal(day)}{m.group(9)}"
    return text


def _replace_date2(m: re.Match[str]) -> str:
    year, month, day = m.group(1), m.group(3), m.group(4)
    return f"{verbalize_digits(year)}年{verbalize_cardinal(month)}月{verbalize_cardinal(day)}日"


def _replace_temperature(m: re.Match[str]) -> str:
    sign = "零下" if m.group(1) else ""
    unit = "摄氏度" if m.group(4) == "摄氏度" else "度"
    return f"{sign}{num2str(m.group(2))}{unit}"


def _replace_measures(sentence: str) -> str:
    for abbr, word in MEASURES:
        sentence = sentence.replace(abbr, word)
    return sentence


def _replace_asmd(m: re.Match[str]) -> str:
    return m.group(1) + _ASMD_WORDS[m.group(8)] + m.group(9)


def _replace_power(m: re.Match[str]) -> str:
    return "的" + "".join(_SUPERSCRIPTS[c] for c in m.group(0)) + "次方"


def _replace_frac(m: re.Match[str]) -> str:
    sign = "负" if m.group(1) else ""
    return f"{sign}{num2str(m.group(3))}分之{num2str(m.group(2))}"


def _replace_percentage(m: re.Match[str]) -> str:
    sign = "负" if m.group(1) else ""
    return f"{sign}百分之{num2str(m.group(2))}"


def _replace_mobile(m: re.Match[str]) -> str:
    return "，".join(verbalize_digits(part, alt_one=True) for part in m.group(0).strip("+").split())


def _replace_phone(m: re.Match[str]) -> str:
    return "，".join(verbalize_digits(part, alt_one=True) for part in m.group(0).split("-"))


def _replace_number(m: re.Match[str]) -> str:
    if m.group(5):
        return num2str(m.group(5))
    sign = "负" if m.group(1) else ""
    return f"{sign}{num2str(m.group(2))}"


def _replace_range(m: re.Match[str]) -> str:
    first = RE_NUMBER.sub(_replace_number, m.group(1))
    second = RE_NUMBER.sub(_replace_number, m.group(6))
    return f"{first}到{second}"


def _replace_negative(m: re.Match[str]) -> str:
    return f"负{num2str(m.group(2))}"


def _replace_version(m: re.Match[str]) -> str:
    return "".join("点" if c == "." else num2str(c) for c in m.group(1))


def _replace_quantifier(m: re.Match[str]) -> str:
    number = num2str(m.group(1))
    number = "两" if number == "二" else number
    more = "多" if m.group(2) == "+" else (m.group(2) or "")
    return f"{number}{more}{m.group(3)}"


def _replace_default_num(m: re.Match[str]) -> str:
    return verbalize_digits(m.group(0), alt_one=True)


_RULES: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str]], ...] = (
    (RE_FRAC, _replace_frac),
    (RE_PERCENTAGE, _replace_percentage),
    (RE_MOBILE_PHONE, _replace_mobile),
    (RE_TELEPHONE, _replace_phone),
    (RE_NATIONAL_UNIFORM_NUMBER, _replace_phone),
    (RE_RANGE, _replace_range),
    (RE_INTEGER, _replace_negative),
    (RE_VERSION_NUM, _replace_version),
    (RE_DECIMAL_NUM, _replace_number),
    (RE_POSITIVE_QUANTIFIERS, _replace_quantifier),
    (RE_DEFAULT_NUM, _replace_default_num),
    (RE_NUMBER, _replace_number),
)

_SPLIT_REMOVE = re.compile(r"[—《》【】<>{}()（）#&@“”^_|\\]")
_POST_REMOVE = re.compile(r"[-—《》【】<=>{}()（）#&@“”^_|\\]")
# Upstream TextNormalizer's SENTENCE_SPLITOR, verbatim for parity: it cuts the text before numbers are read,
# at commas and enumeration marks too, so it is not the segment marks of daemon.frontend.sentences.
_SENTENCE_END = re.compile(r"([：、，；。？！,;?!][”’]?)")


def split_sentences(text: str) -> list[str]:
    """Cut at sentence punctuation after removing spaces and bracket/quote symbols."""
    text = _SPLIT_REMOVE.sub("", text.replace(" ", ""))
    text = _SENTENCE_END.sub(r"\1\n", text).strip()
    return [s.strip() for s in re.split(r"\n+", text)]


def _post_replace(sentence: str) -> str:
    sentence = sentence.replace("/", "每")
    for table in (_CIRCLED, _GREEK, _OPERATOR_FALLBACK):
        for src, dst in table.items():
            sentence = sentence.replace(src, dst)
    return _POST_REMOVE.sub("", sentence)


def normalize_sentence(sentence: str) -> str:
    """Spell out every non-standard word of one sentence, in upstream's rule order."""
    sentence = sentence.translate(_traditional_to_simplified()).translate(_FULLWIDTH)
    sentence = RE_DATE.sub(_replace_date, sentence)
    sentence = RE_DATE2.sub(_replace_date2, sentence)
    sentence = RE_TIME_RANGE.sub(_replace_time, sentence)
    sentence = RE_TIME.sub(_replace_time, sentence)
    sentence = RE_TO_RANGE.sub(lambda m: m.group(0).replace("~", "至"), sentence)
    sentence = RE_TEMPERATURE.sub(_replace_temperature, sentence)
    sentence = _replace_measures(sentence)
    while RE_ASMD.search(sentence):
        sentence = RE_ASMD.sub(_replace_asmd, sentence)
    sentence = RE_POWER.sub(_replace_power, sentence)
    for pattern, repl in _RULES:
        sentence = pattern.sub(repl, sentence)
    return _post_replace(sentence)


def normalize(text: str) -> list[str]:
    """Normalise text into a list of sentences (upstream ``TextNormalizer.normalize``)."""
    return [normalize_sentence(s) for s in split_sentences(text)]
