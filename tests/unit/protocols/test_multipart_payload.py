"""The ``parts`` of a native say: each item exactly one of chime, text (its own voice, language, speed) or pause, the
request's voice, language and speed where a text part names none, ``repeat`` and ``repeat_gap_s``; and one clear
line naming the field at fault for everything else."""

from __future__ import annotations

import json
from typing import Any

import pytest

from daemon.core.request_queue import Part
from daemon.protocols.payloads import (
    MAX_PARTS,
    MAX_PAUSE_S,
    MAX_REPEAT,
    IntakePolicy,
    RejectedPayload,
    parse_hermes,
    parse_native,
)

POLICY = IntakePolicy(max_text_chars=200, default_ttl_s=60, voices={"alto", "tenor"}, has_audio_device=False)


def parse(body: dict[str, Any], policy: IntakePolicy = POLICY):  # noqa: ANN201 - a Request
    return parse_native(json.dumps(body).encode(), policy)


def test_parts_take_the_requests_voice_language_and_speed_where_they_name_none() -> None:
    request = parse({"id": "pa", "voice": "tenor", "lang": "en", "speed": 1.5, "repeat": 2, "repeat_gap_s": 1,
                     "parts": [{"chime": True}, {"text": " 请注意 ", "lang": "zh", "voice": "alto", "speed": 0.8},
                               {"pause_s": 0.5}, {"text": "Attention please."}]})
    assert request.parts == (Part(chime=True), Part(text="请注意", voice="alto", lang="zh", speed=0.8),
                             Part(pause_s=0.5), Part(text="Attention please.", voice="tenor", lang="en", speed=1.5))
    assert (request.repeat, request.repeat_gap_s) == (2, 1.0)
    assert request.text == "请注意\nAttention please."  # what the audit trail records
    assert request.chime is False  # the parts say where the chime goes


def test_a_plain_say_has_no_parts_and_a_repeated_one_becomes_its_chime_and_its_text() -> None:
    plain = parse({"text": "Hello."})
    assert plain.parts == () and plain.repeat == 1 and plain.text == "Hello."
    repeated = parse({"text": "Hello.", "chime": True, "repeat": 3, "repeat_gap_s": 2, "voice": "alto"})
    assert repeated.parts == (Part(chime=True), Part(text="Hello.", voice="alto"))
    assert (repeated.repeat, repeated.repeat_gap_s, repeated.chime) == (3, 2.0, False)
    default_chime = IntakePolicy(max_text_chars=200, default_ttl_s=60, voices=(), has_audio_device=False,
                                 default_chime=True)
    assert parse({"parts": [{"text": "Hi."}]}, default_chime).parts == (Part(text="Hi."),)  # no chime added


def test_a_chime_alone_is_an_announcement() -> None:
    bell = parse({"parts": [{"chime": True}, {"pause_s": 0}, {"chime": True}]})
    assert bell.parts == (Part(chime=True), Part(pause_s=0.0), Part(chime=True)) and bell.text == ""


BAD: list[tuple[dict[str, Any], str]] = [
    ({"text": "Hi.", "parts": [{"text": "Hi."}]}, "give text or parts, not both"),
    ({"voice": "alto"}, "text: Field required (or give parts)"),
    ({"parts": "Hi."}, "parts: Input should be a valid list"),
    ({"parts": []}, f"parts: must hold 1 to {MAX_PARTS} items, got 0"),
    ({"parts": [{"text": "a."}] * (MAX_PARTS + 1)}, f"parts: must hold 1 to {MAX_PARTS} items, got {MAX_PARTS + 1}"),
    ({"parts": [{"text": "a" * 150}, {"text": "b" * 60}]}, "parts: texts too long together (210 > 200 characters)"),
    ({"parts": [{"chime": True}, "Hi."]}, "parts[1]: must be an object, not a string"),
    ({"parts": [{}]}, "parts[0]: must hold exactly one of chime, text or pause_s"),
    ({"parts": [{"chime": True, "pause_s": 1}]}, "parts[0]: must hold exactly one of chime, text or pause_s"),
    ({"parts": [{"chime": False}]}, "parts[0].chime: must be true"),
    ({"parts": [{"chime": 1}]}, "parts[0].chime: must be true"),
    ({"parts": [{"chime": True, "volume": 2}]}, "parts[0].volume: not allowed in a chime part"),
    ({"parts": [{"pause_s": 0.5, "text_": "x"}]}, "parts[0].text_: not allowed in a pause_s part"),
    ({"parts": [{"text": "a", "priority": "high"}]}, "parts[0].priority: not allowed in a text part"),
    ({"parts": [{"chime": True}, {"pause_s": MAX_PAUSE_S + 1}]},
     f"parts[1].pause_s: must be between 0 and {MAX_PAUSE_S:g} seconds"),
    ({"parts": [{"chime": True}, {"text": "a"}, {"pause_s": -0.5}]},
     f"parts[2].pause_s: must be between 0 and {MAX_PAUSE_S:g} seconds"),
    ({"parts": [{"pause_s": "1"}]}, "parts[0].pause_s: must be between 0"),
    ({"parts": [{"pause_s": True}]}, "parts[0].pause_s: must be between 0"),
    ({"parts": [{"text": None}]}, "parts[0].text: must be a string"),
    ({"parts": [{"text": 5}]}, "parts[0].text: must be a string"),
    ({"parts": [{"text": "  "}]}, "parts[0].text: empty text"),
    ({"parts": [{"text": "x" * 201}]}, "parts[0].text: text too long (201 > 200 characters)"),
    ({"parts": [{"text": "a\x00b"}]}, "parts[0].text: text contains control characters"),
    ({"parts": [{"text": "a", "voice": "bass"}]}, "parts[0].voice: unknown voice 'bass'"),
    ({"parts": [{"text": "a", "voice": "a/b"}]}, "parts[0].voice contains a forbidden character '/'"),
    ({"parts": [{"text": "a", "voice": 3}]}, "parts[0].voice: must be a string"),
    ({"parts": [{"text": "a", "lang": "!!"}]}, "parts[0].lang: invalid lang '!!'"),
    ({"parts": [{"text": "a", "speed": 9}]}, "parts[0].speed: must be between 0.25 and 4"),
    ({"parts": [{"text": "a", "speed": "fast"}]}, "parts[0].speed: must be between 0.25 and 4"),
    ({"parts": [{"text": "a"}], "chime": True}, 'chime: give the chime as a part ({"chime": true})'),
    ({"parts": [{"text": "a"}], "repeat": 0}, f"repeat: must be between 1 and {MAX_REPEAT}"),
    ({"parts": [{"text": "a"}], "repeat": MAX_REPEAT + 1}, f"repeat: must be between 1 and {MAX_REPEAT}"),
    ({"parts": [{"text": "a"}], "repeat": 2.5}, "repeat: Input should be a valid integer"),
    ({"parts": [{"text": "a"}], "repeat": True}, "repeat: Input should be a valid integer"),
    ({"text": "a", "repeat": 2, "repeat_gap_s": MAX_PAUSE_S * 2},
     f"repeat_gap_s: must be between 0 and {MAX_PAUSE_S:g} seconds"),
    ({"parts": [{"text": "a"}], "repeat_gap_s": "1"}, "repeat_gap_s: Input should be a valid number"),
]


@pytest.mark.parametrize(("body", "message"), BAD, ids=[message for _, message in BAD])
def test_bad_parts_are_refused_with_one_line_naming_the_field(body: dict[str, Any], message: str) -> None:
    with pytest.raises(RejectedPayload) as refused:
        parse({"id": "bad", **body})
    assert refused.value.reason.startswith(message) and "\n" not in refused.value.reason
    assert refused.value.request_id == "bad"


def test_hermes_says_are_text_only() -> None:
    """A Hermes say has no parts: the keys are ignored (as any unknown key there is) and the text is spoken."""
    payload = json.dumps({"text": "Hello.", "parts": [{"chime": True}], "repeat": 3}).encode()
    request = parse_hermes(payload, POLICY, [], "normal")
    assert request is not None and request.text == "Hello." and request.parts == () and request.repeat == 1
