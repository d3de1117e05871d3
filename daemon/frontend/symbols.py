"""GPT-SoVITS v2 phone symbol table (732 symbols, id = index in the list).

The list is read from ``data/symbols_v2.txt`` (generated from upstream ``text/symbols2.py``)
and checked against the sha256 upstream's list gives, so a damaged table fails loudly
instead of silently shifting every phone id.
"""

from __future__ import annotations

import hashlib
import re
from importlib.resources import files

DATA_DIR = files(__package__) / "data"  # package data: installed with the code, read wherever that is

SYMBOLS_V2_SHA256 = "0771f6cd6f6201e8c2b0de921dc69cc04caf3f346c599d4a41413967d5674da7"

# Punctuation marks both language front ends keep as phones.
PUNCTUATION: tuple[str, ...] = ("!", "?", "…", ",", ".", "-")
PUNCTUATION_CLASS = "".join(re.escape(p) for p in PUNCTUATION)  # the marks inside a regex "[...]"
# A run of those marks, which upstream squashes to its first (so a reference's "!!!" cannot leak into the prompt).
REPEATED_PUNCTUATION_RE = re.compile(f"([{PUNCTUATION_CLASS}])([{PUNCTUATION_CLASS}])+")


def _load_symbols() -> list[str]:
    lines = (DATA_DIR / "symbols_v2.txt").read_text(encoding="utf-8").split("\n")
    symbols = [line for line in lines if line != ""]
    digest = hashlib.sha256("\n".join(symbols).encode("utf-8")).hexdigest()
    if len(symbols) != 732 or digest != SYMBOLS_V2_SHA256:
        raise RuntimeError(f"symbols_v2.txt is corrupt: {len(symbols)} symbols, sha256 {digest}")
    return symbols


SYMBOLS: list[str] = _load_symbols()
SYMBOL_TO_ID: dict[str, int] = {s: i for i, s in enumerate(SYMBOLS)}


def phones_to_ids(phones: list[str]) -> list[int]:
    """Map phone symbols to ids (upstream ``cleaned_text_to_sequence`` for v2)."""
    return [SYMBOL_TO_ID[p] for p in phones]
