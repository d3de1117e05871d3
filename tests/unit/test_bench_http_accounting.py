"""``bench/http_api.py``'s accounting: each answer against its audit row, found by the text."""

from __future__ import annotations

from bench.http_api import Answer, account
from daemon.core.audit import text_sha256


def row(text: str, outcome: str, request_id: str | None = None, reason: str = "") -> dict:
    return {"protocol": "http", "text_sha256": text_sha256(text), "outcome": outcome, "request_id": request_id,
            "reason": reason}


def test_agreeing_rows_are_sound() -> None:
    answers = [Answer("a", 200, None, "id-a", 0.1), Answer("b", 503, "5", None, 0.01)]
    found = account(answers, [row("a", "done", "id-a"), row("b", "rejected", reason="queue full")])
    assert found["statuses"] == {"200": 1, "503": 1} and found["errors_by_status"] == {"503": 1}
    assert found["audit_outcomes"] == {"done": 1, "rejected": 1}
    assert found["lost"] == found["duplicated"] == found["mismatched"] == found["undocumented"] == 0


def test_missing_repeated_and_disagreeing_rows_and_undocumented_answers_are_counted() -> None:
    answers = [
        Answer("lost", 200, None, "id-1", 0.1),
        Answer("twice", 200, None, "id-2", 0.1),
        Answer("other id", 200, None, "id-3", 0.1),
        Answer("no retry-after", 503, None, None, 0.1),
        Answer("reset", "ReadError", None, None, 0.1),
    ]
    records = [row("twice", "done", "id-2"), row("twice", "done", "id-2"), row("other id", "done", "id-9"),
               row("no retry-after", "rejected", reason="queue full"), row("reset", "failed"),
               {**row("lost", "done", "id-1"), "protocol": "mqtt"}]  # another protocol's row does not count
    found = account(answers, records)
    assert found["lost"] == 1 and found["duplicated"] == 1
    assert found["mismatched"] == 3  # another request id, a 503 without Retry-After, no response at all
    assert found["undocumented"] == 2 and found["statuses"]["ReadError"] == 1
