"""Compact read-only copies of jieba's and pypinyin's dictionaries, installed into both libraries.

jieba keeps its prefix dictionary (~500k words and word prefixes with frequencies) and its part-of-speech table as
Python dicts, and pypinyin its phrase readings as nested lists: a large share of every process that speaks Chinese
(docs/performance.md, levers kept). Here the same entries sit in sorted tables (one string of keys plus offset and
value arrays), looked up by bisection in a few microseconds. The tables are built once, from the installed libraries'
own loaders, in a child process (so this process never holds both copies), and cached as one ``.npz`` in the
directory given to :func:`use_cache_dir` (the engine passes its state cache; default: the temp directory, as
jieba's own cache). Same keys and values as the libraries' dicts: the tests compare every entry.

:func:`install` must run before pypinyin is first imported (``chinese`` and ``g2pw`` import pypinyin after
this module): pypinyin's phrase table is skipped at import (``PYPINYIN_NO_PHRASES``) and replaced. If the
tables cannot be built or read, the libraries' own dictionaries are loaded instead, with a warning.
"""

from __future__ import annotations

import bisect
import functools
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from array import array
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

TABLES_VERSION = 1
LOOKUP_CACHE = 8192
_cache_dir = Path(tempfile.gettempdir())
_installed = False


def use_cache_dir(path: Path) -> None:
    """Where the built tables are cached (created if missing); call before the first Chinese text."""
    global _cache_dir
    _cache_dir = Path(path)


class SortedKeys:
    """Unique keys in code-point order, stored as one string and an offset array."""

    def __init__(self, text: str, starts: array):
        self.text, self.starts = text, starts
        self.n = len(starts) - 1
        # the same fragments recur (jieba looks each one up several times per sentence): a small cache remembers them
        self.index = functools.lru_cache(maxsize=LOOKUP_CACHE)(self._index)  # type: ignore[method-assign]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> str:
        return self.text[self.starts[i] : self.starts[i + 1]]

    def _index(self, key: str) -> int:
        """Position of ``key``, or -1."""
        i = bisect.bisect_left(self, key)
        return i if i < self.n and self[i] == key else -1

    def has_prefix(self, prefix: str) -> bool:
        """Whether some key starts with ``prefix``."""
        i = bisect.bisect_left(self, prefix)
        return i < self.n and self[i].startswith(prefix)

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(self.n))


class SortedMapping(Mapping[str, Any]):
    """A read-only mapping over :class:`SortedKeys`; a subclass says what the i-th key's value is."""

    def __init__(self, keys: SortedKeys):
        self.keys_ = keys

    def value(self, i: int) -> Any:
        raise NotImplementedError

    def __getitem__(self, key: str) -> Any:
        i = self.keys_.index(key)
        if i < 0:
            raise KeyError(key)
        return self.value(i)

    def get(self, key: str, default: Any = None) -> Any:
        i = self.keys_.index(key)
        return default if i < 0 else self.value(i)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.keys_.index(key) >= 0

    def __len__(self) -> int:
        return len(self.keys_)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys_)


class FrequencyTable(SortedMapping):
    """jieba's ``FREQ``: every dictionary word with its count and every word prefix with 0."""

    def __init__(self, keys: SortedKeys, counts: array):
        super().__init__(keys)
        self.counts = counts

    def value(self, i: int) -> int:
        return self.counts[i]


class TagTable(Mapping[str, str]):
    """jieba.posseg's ``word_tag_tab`` over the same keys (prefixes that are no word have no tag)."""

    def __init__(self, keys: SortedKeys, codes: array, names: list[str]):
        self.keys_, self.codes, self.names = keys, codes, names  # names[0] = "": no tag

    def get(self, key: str, default: Any = None) -> Any:
        i = self.keys_.index(key)
        return default if i < 0 or not self.codes[i] else self.names[self.codes[i]]

    def __getitem__(self, key: str) -> str:
        tag = self.get(key)
        if tag is None:
            raise KeyError(key)
        return tag

    def __len__(self) -> int:
        return sum(1 for c in self.codes if c)

    def __iter__(self) -> Iterator[str]:
        return (self.keys_[i] for i, c in enumerate(self.codes) if c)


class Readings(str):
    """A phrase's readings, space-separated per character ("," between alternatives). pypinyin deep-copies
    each table value before use; the copy is its usual ``[[reading, ...], ...]``."""

    __slots__ = ()

    def __deepcopy__(self, memo: dict) -> list[list[str]]:
        return [syllable.split(",") for syllable in self.split(" ")]


class PhraseTable(SortedMapping):
    """pypinyin's ``PHRASES_DICT``."""

    def __init__(self, keys: SortedKeys, readings: SortedKeys):
        super().__init__(keys)
        self.readings = readings  # not sorted: the i-th phrase's readings, stored the same way as keys

    def value(self, i: int) -> Readings:
        return Readings(self.readings[i])


class PhrasePrefixes:
    """pypinyin's mmseg prefix set: every prefix of a phrase, answered from the sorted phrases."""

    def __init__(self, keys: SortedKeys):
        self.keys_ = keys

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.keys_.has_prefix(key)


# -- building (in a child process) ---------------------------------------------------------------------


def _packed(strings: list[str]) -> tuple[np.ndarray, np.ndarray]:
    starts = np.zeros(len(strings) + 1, np.int64)
    np.cumsum([len(s) for s in strings], out=starts[1:])
    return np.frombuffer("".join(strings).encode("utf-8"), np.uint8), starts.astype(np.int32)


def build(out: Path) -> None:
    """Write the tables, read through the libraries' own loaders (so entries are exactly theirs). Run in a
    fresh process, before pypinyin is imported."""
    os.environ.pop("PYPINYIN_NO_PHRASES", None)
    import jieba
    import jieba.posseg
    from pypinyin.constants import PHRASES_DICT

    freq, total = jieba.dt.gen_pfdict(jieba.dt.get_dict_file())
    tags = jieba.posseg.dt.word_tag_tab
    words = sorted(freq)
    names = [""] + sorted(set(tags.values()))
    code = {name: i for i, name in enumerate(names)}
    phrases = sorted(PHRASES_DICT)
    if not phrases or not words:
        raise RuntimeError("pypinyin or jieba gave an empty dictionary")
    arrays: dict[str, Any] = {}
    arrays["word_text"], arrays["word_starts"] = _packed(words)
    arrays["phrase_text"], arrays["phrase_starts"] = _packed(phrases)
    arrays["reading_text"], arrays["reading_starts"] = _packed(
        [" ".join(",".join(alternatives) for alternatives in PHRASES_DICT[p]) for p in phrases])
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp.npz")
    np.savez(tmp, counts=np.array([freq[w] for w in words], np.int64), tags=np.array(
        [code[tags[w]] if w in tags else 0 for w in words], np.uint8), tag_names=np.array(names),
        total=np.array(total, np.int64), libraries=np.array(_libraries()), **arrays)
    tmp.replace(out)


def _libraries() -> str:
    from importlib.metadata import version

    return f"jieba {version('jieba')}, pypinyin {version('pypinyin')}"


# -- loading and installing -----------------------------------------------------------------------------


def _keys(data: Any, name: str) -> SortedKeys:
    text = bytes(data[f"{name}_text"]).decode("utf-8")
    return SortedKeys(text, array("i", data[f"{name}_starts"].astype(np.int32).tobytes()))


@dataclass(frozen=True)
class Tables:
    """What :func:`install` puts into jieba (``freq``, ``total``, ``tags``) and pypinyin (the rest)."""

    freq: FrequencyTable
    total: int
    tags: TagTable
    phrases: PhraseTable
    prefixes: PhrasePrefixes


def load_tables(path: Path) -> Tables:
    with np.load(path) as data:
        words, phrases = _keys(data, "word"), _keys(data, "phrase")
        return Tables(
            freq=FrequencyTable(words, array("q", data["counts"].astype(np.int64).tobytes())),
            total=int(data["total"]),
            tags=TagTable(words, array("B", data["tags"].tobytes()), [str(n) for n in data["tag_names"]]),
            phrases=PhraseTable(phrases, _keys(data, "reading")),
            prefixes=PhrasePrefixes(phrases),
        )


def _tables_file() -> Path:
    path = _cache_dir / f"zh-dictionaries-v{TABLES_VERSION}.npz"
    if path.is_file():
        try:
            with np.load(path) as data:
                if str(data["libraries"]) == _libraries():
                    return path
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
            log.warning("%s is unreadable (%s); building it again", path, exc)
    _cache_dir.mkdir(parents=True, exist_ok=True)
    log.info("building compact Chinese dictionaries in %s (once)", path)
    done = subprocess.run([sys.executable, "-m", __name__, str(path)], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"building {path} failed: {done.stderr.strip()[-500:]}")
    return path


def install() -> None:
    """Put the compact tables into jieba and pypinyin (once per process). Falls back to their own dicts."""
    global _installed
    if _installed:
        return
    _installed = True
    if "pypinyin" in sys.modules:  # imported before us: its phrase dict is loaded already, keep it
        log.debug("pypinyin was imported first; its phrase table stays a dict")
    else:
        os.environ["PYPINYIN_NO_PHRASES"] = "1"  # read by pypinyin.constants at import, then not again
    import jieba
    import pypinyin.constants
    from pypinyin import converter, core
    from pypinyin.seg import mmseg, simpleseg

    os.environ.pop("PYPINYIN_NO_PHRASES", None)  # not handed on to child processes

    try:
        tables = load_tables(_tables_file())
    except (OSError, RuntimeError, KeyError, ValueError, zipfile.BadZipFile, subprocess.TimeoutExpired) as exc:
        log.warning("compact Chinese dictionaries unavailable (%s); loading jieba's and pypinyin's own", exc)
        if not pypinyin.constants.PHRASES_DICT:
            _load_pypinyin_phrases()
        return
    if not pypinyin.constants.PHRASES_DICT:
        for module in (pypinyin.constants, converter, core, mmseg, simpleseg):
            module.PHRASES_DICT = tables.phrases  # type: ignore[attr-defined]
        mmseg.p_set._set = tables.prefixes  # type: ignore[assignment]
    jieba.dt.FREQ, jieba.dt.total, jieba.dt.initialized = tables.freq, tables.total, True
    _without_word_tags(jieba)
    import jieba.posseg

    jieba.posseg.dt.word_tag_tab = tables.tags


def _without_word_tags(jieba: Any) -> None:
    """Import jieba.posseg without its import-time read of the dictionary into a tag dict (replaced after)."""
    if "jieba.posseg" in sys.modules:
        return
    dictionary = jieba.dt.dictionary
    jieba.dt.dictionary = os.devnull
    try:
        import jieba.posseg  # noqa: F401
    finally:
        jieba.dt.dictionary = dictionary


def _load_pypinyin_phrases() -> None:
    import json

    import pypinyin
    from pypinyin.constants import PHRASES_DICT
    from pypinyin.seg import mmseg

    source = Path(pypinyin.__file__).with_name("phrases_dict.json")
    PHRASES_DICT.update(json.loads(source.read_text(encoding="utf-8")))
    mmseg.retrain(mmseg.seg)


if __name__ == "__main__":
    build(Path(sys.argv[1]))
