"""Text front end against upstream GPT-SoVITS v2 output (``frontend_v2.json``).

The golden directory comes from ``GSV_GOLDEN_DIR`` (default ``../shared/golden`` next to the
repository). Without it the tests are skipped with a reason; with ``GSV_GOLDEN_DIR`` set and
the file missing they fail.
"""

from __future__ import annotations

import pytest

from daemon.frontend import text_to_phones
from daemon.frontend.symbols import SYMBOLS
from tests.golden_data import load, missing

GOLDEN_NAME = "frontend_v2.json"
_DATA = load(GOLDEN_NAME)
_ITEMS = _DATA["items"] if _DATA else []


def _missing() -> None:
    missing(GOLDEN_NAME)


def test_golden_file_present() -> None:
    if _DATA is None:
        _missing()
    assert _DATA["meta"]["symbols_version"] == "v2"


def test_symbol_table_matches_golden_meta() -> None:
    if _DATA is None:
        _missing()
    import hashlib

    meta = _DATA["meta"]
    assert len(SYMBOLS) == meta["n_symbols_v2"]
    assert hashlib.sha256("\n".join(SYMBOLS).encode()).hexdigest() == meta["symbols_v2_sha256"]


@pytest.mark.parametrize("item", _ITEMS or [None], ids=[i["id"] for i in _ITEMS] or ["no-golden"])
def test_frontend_item(item: dict | None) -> None:
    if item is None:
        _missing()
    result = text_to_phones(item["text"], item["language"])
    assert result.phones == item["phones"]
    assert result.phone_ids == item["phone_ids"]
    assert result.norm_text == item["norm_text"]
    got = [(s.lang, s.norm_text, s.word2ph) for s in result.segments]
    want = [(s["lang"], s["norm_text"], s["word2ph"]) for s in item["segments"]]
    assert got == want
