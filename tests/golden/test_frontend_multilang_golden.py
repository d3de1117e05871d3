"""Japanese, Korean and Cantonese front ends against upstream GPT-SoVITS v2 output (``frontend_v2_multilang.json``).

The golden directory comes from ``GSV_GOLDEN_DIR`` (default ``../shared/golden``), as for the zh/en file.
Two checks per item: the segmentation (languages and texts of the segments, retry included), which needs
no optional package, and the whole result (segments' normalised texts, phones and ids). An item whose
language's front end or extra is not installed here is skipped saying which and how to install it; the
languages in ``MUST_RUN`` ship with the ``dev`` extra, so their items fail instead of skipping.
"""

from __future__ import annotations

import pytest

from daemon.frontend import text_to_phones
from daemon.frontend.language import split_languages
from daemon.frontend.languages import OPTIONAL_LANGUAGES, missing_extra
from tests.golden_data import load, missing

GOLDEN_NAME = "frontend_v2_multilang.json"
MUST_RUN = ("ja", "ko", "yue")
_DATA = load(GOLDEN_NAME)
_ITEMS = _DATA["items"] if _DATA else []
_IDS = [i["id"] for i in _ITEMS] or ["no-golden"]


def _missing() -> None:
    missing(GOLDEN_NAME)


def test_golden_file_covers_every_new_mode() -> None:
    if _DATA is None:
        _missing()
    modes = {item["language"] for item in _ITEMS}
    assert modes == {"ja", "all_ja", "ko", "all_ko", "yue", "all_yue"}
    assert len(_ITEMS) == 85


@pytest.mark.parametrize("item", _ITEMS or [None], ids=_IDS)
def test_segments(item: dict | None) -> None:
    """The split alone: upstream's segment languages and texts (of ``"." + text`` where upstream retried)."""
    if item is None:
        _missing()
    text = "." + item["text"] if item["retried_with_leading_dot"] else item["text"]
    want = [(s["lang"], s["text"]) for s in item["segments"]]
    assert split_languages(text, item["language"]) == want


@pytest.mark.parametrize("item", _ITEMS or [None], ids=_IDS)
def test_frontend_item(item: dict | None) -> None:
    if item is None:
        _missing()
    for language in sorted({s["lang"] for s in item["segments"]} & set(OPTIONAL_LANGUAGES)):
        if (reason := missing_extra(language)) is not None:
            if language in MUST_RUN:
                pytest.fail(f"{item['id']}: {reason}")
            pytest.skip(f"{item['id']}: {reason}")
    result = text_to_phones(item["text"], item["language"])
    got = [(s.lang, s.text, s.norm_text, s.phones, s.phone_ids, s.word2ph) for s in result.segments]
    want = [(s["lang"], s["text"], s["norm_text"], s["phones"], s["phone_ids"], s["word2ph"])
            for s in item["segments"]]
    assert got == want
    assert result.phones == item["phones"]
    assert result.phone_ids == item["phone_ids"]
    assert result.norm_text == item["norm_text"]
    assert result.retried_with_leading_dot == item["retried_with_leading_dot"]


_EN = [(item["id"], i, seg) for item in _ITEMS for i, seg in enumerate(item["segments"]) if seg["lang"] == "en"]


@pytest.mark.parametrize("where", _EN or [None], ids=[f"{i}-seg{n}" for i, n, _ in _EN] or ["no-golden"])
def test_english_segments_of_every_item(where: tuple[str, int, dict] | None) -> None:
    """The English segments of Japanese and Korean items too, which need no extra: ``％`` and ``℃`` are a pause,
    ``、`` between words a space, short ones get the "," prefix."""
    if where is None:
        _missing()
    segment = where[2]
    result = text_to_phones(segment["text"], "en", _final=True)  # one segment, without the whole-text retry
    assert (result.norm_text, result.phones, result.phone_ids) == (segment["norm_text"], segment["phones"],
                                                                   segment["phone_ids"])
