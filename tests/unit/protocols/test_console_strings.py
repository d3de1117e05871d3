"""The console's strings: one table per language, each with every key the page and its script use, and the same
placeholders in every language."""

from __future__ import annotations

import json
import re

import pytest

from daemon.core.audit import CHANGE_OUTCOMES
from daemon.protocols.http.console.routes import FILES

LANGUAGES = ("en", "zh")
# Keys the script builds from a value (t(`engine.${state}`)): each value the API may send.
BUILT = {
    "nav": ("status", "speak", "voices", "history", "model"),
    "engine": ("ready", "degraded", "fallback-only"),
    "state": ("idle", "speaking"),
    "request": ("queued", "started", "done", "failed", "expired", "rejected"),
    "change": CHANGE_OUTCOMES,
    "model": ("source_file", "source_environment", "source_given", "source_default"),
    "status": ("queue_current", "queue_next", "queue_queued"),  # a request's place in GET /v1/status's queue
}


def table(lang: str) -> dict[str, str]:
    return json.loads(FILES[f"lang/{lang}.json"])


def used_keys() -> set[str]:
    page = FILES["index.html"].decode()
    script = FILES["console.js"].decode()
    keys = set(re.findall(r'data-t(?:-placeholder|-label)?="([^"]+)"', page))
    keys |= set(re.findall(r'\bt\(\s*"([^"]+)"', script))
    keys |= set(re.findall(r'"((?:timing|unit|speaker|broker|status|events|alert|duration)\.[a-z_]+)"', script))
    keys |= {f"{prefix}.{value}" for prefix, values in BUILT.items() for value in values}
    return keys


def test_the_tables_hold_the_same_keys_and_every_key_used() -> None:
    keys = used_keys()
    assert len(keys) > 100  # the pattern found the page's keys, not nothing
    for lang in LANGUAGES:
        assert not keys - set(table(lang)), f"{lang}: missing {sorted(keys - set(table(lang)))}"
        assert not set(table(lang)) - keys, f"{lang}: unused {sorted(set(table(lang)) - keys)}"
    assert list(table("en")) == list(table("zh"))


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_string_is_written_with_the_english_placeholders(lang: str) -> None:
    english = table("en")
    for key, text in table(lang).items():
        assert text.strip(), f"{lang}: {key} is empty"
        assert set(re.findall(r"\{(\w+)\}", text)) == set(re.findall(r"\{(\w+)\}", english[key])), (lang, key)


def test_the_chinese_table_is_chinese() -> None:
    chinese = table("zh")
    written = [key for key, text in chinese.items() if re.search(r"[\u4e00-\u9fff]", text)]
    assert len(written) > 0.9 * len(chinese)  # only names (English, Hz) stay as they are
