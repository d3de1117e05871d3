"""Payload parsing never lets anything but a valid request or a reasoned rejection through."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.protocols.payloads import IntakePolicy, RejectedPayload, name_problem, parse_hermes, parse_native
from daemon.vocabulary import LANGUAGE_MODES

POLICY = IntakePolicy(max_text_chars=200, default_ttl_s=60, voices={"alto"}, has_audio_device=False)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
say_objects = st.fixed_dictionaries(
    {},
    optional={
        "id": st.text(max_size=20) | json_values,
        "text": st.text(max_size=250) | json_values,
        "voice": st.sampled_from(["alto", "tenor", "a/b", "+"]) | json_values,
        "lang": st.sampled_from(["en", "zh-CN", "e n"]) | json_values,
        "priority": st.sampled_from(["emergency", "high", "normal", "low", "urgent"]),
        "ttl_s": json_values,
        "volume": json_values,
        "output": st.sampled_from(["play", "publish", "both", "x"]),
        "parts": st.lists(st.fixed_dictionaries({}, optional={
            "chime": st.just(True) | json_values, "text": st.text(max_size=60) | json_values,
            "voice": st.sampled_from(["alto", "tenor"]) | json_values, "pause_s": json_values,
            "speed": json_values}), max_size=4) | json_values,
        "repeat": json_values,
        "repeat_gap_s": json_values,
    },
)


def _check(parse) -> None:  # noqa: ANN001 - a parse call
    try:
        request = parse()
    except RejectedPayload as rejection:
        assert rejection.reason
        return
    if request is None:
        return
    assert name_problem(request.id, "id") is None
    assert (request.text.strip() or request.parts) and len(request.text) <= POLICY.max_text_chars + len(request.parts)
    assert all(part.chime + (part.text is not None) + (part.pause_s is not None) == 1 for part in request.parts)
    assert all(part.voice in (None, "alto") and (part.text is None or part.text.strip()) for part in request.parts)
    assert request.voice in (None, "alto") and request.output == "publish"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes(payload: bytes) -> None:
    _check(lambda: parse_native(payload, POLICY))
    _check(lambda: parse_hermes(payload, POLICY, [], "normal"))


@settings(max_examples=300, deadline=None)
@given(say_objects)
def test_arbitrary_json_objects(body: dict) -> None:
    payload = json.dumps(body).encode()
    _check(lambda: parse_native(payload, POLICY))
    hermes = {("siteId" if k == "voice" else k): v for k, v in body.items()}
    _check(lambda: parse_hermes(json.dumps(hermes).encode(), POLICY, [], "normal"))


def test_integer_ids_are_accepted_as_their_decimal_string() -> None:
    assert parse_native(b'{"id": 42, "text": "hi"}', POLICY).id == "42"
    hermes = parse_hermes(b'{"id": -7, "text": "hi", "siteId": "default"}', POLICY, [], "normal")
    assert hermes is not None and hermes.id == "-7"
    for raw, named in ((b"1.5", "1.5"), (b"true", "true"), (b"[1]", None)):
        try:
            parse_native(b'{"id": ' + raw + b', "text": "hi"}', POLICY)
        except RejectedPayload as rejection:
            assert rejection.reason == "id: must be a string or an integer" and rejection.request_id == named
        else:
            raise AssertionError(f"id {raw!r} accepted")


def test_nan_and_infinity_are_not_json() -> None:
    for constant in ("NaN", "Infinity", "-Infinity"):
        payload = b'{"text": "hi", "expires_at": ' + constant.encode() + b"}"
        for parse in (lambda p=payload: parse_native(p, POLICY),
                      lambda p=payload: parse_hermes(p, POLICY, [], "normal")):
            try:
                parse()
            except RejectedPayload as rejection:
                assert rejection.reason == f"invalid JSON: {constant} is not a JSON value", rejection.reason
            else:
                raise AssertionError(f"{constant} accepted")
    assert parse_native(b"NaN", POLICY).text == "NaN"  # plain text that happens to be the word


def test_a_language_code_is_all_there_is_in_lang() -> None:
    for lang in ("en\n", "zh-CN\n", " en"):
        try:
            parse_native(json.dumps({"text": "hi", "lang": lang}).encode(), POLICY)
        except RejectedPayload as rejection:
            assert rejection.reason == f"invalid lang {lang!r}", rejection.reason
        else:
            raise AssertionError(f"lang {lang!r} accepted")
    assert parse_native(b'{"text": "hi", "lang": "zh-CN"}', POLICY).lang == "zh-CN"


def test_every_language_mode_is_a_lang_and_one_without_its_extra_is_refused_naming_it() -> None:
    for mode in LANGUAGE_MODES:  # "auto" and "auto_yue" are no language codes, but modes
        assert parse_native(json.dumps({"text": "hi", "lang": mode}).encode(), POLICY).lang == mode
    reason = "Japanese text needs the optional packages of gsv-edge[ja]: pip install 'gsv-edge[ja]'"
    lacking = IntakePolicy(max_text_chars=200, default_ttl_s=60, voices={"alto"}, has_audio_device=False,
                           unspoken={"ja": reason})
    for mode in ("ja", "all_ja"):
        try:
            parse_native(json.dumps({"text": "こんにちは", "lang": mode}).encode(), lacking)
        except RejectedPayload as rejection:
            assert rejection.reason == f"lang: {mode} is not spoken on this box: {reason}"
        else:
            raise AssertionError(f"{mode} accepted without its extra")
    parts = {"parts": [{"text": "Hello."}, {"text": "こんにちは", "lang": "ja"}]}
    try:
        parse_native(json.dumps(parts).encode(), lacking)
    except RejectedPayload as rejection:
        assert rejection.reason.startswith("parts[1].lang: ja is not spoken on this box: "), rejection.reason
    else:
        raise AssertionError("a part in a language without its extra was accepted")
    hermes = {"text": "こんにちは", "lang": "ja", "siteId": "default"}
    try:
        parse_hermes(json.dumps(hermes).encode(), lacking, {"default"}, "normal")
    except RejectedPayload as rejection:
        assert "gsv-edge[ja]" in rejection.reason
    else:
        raise AssertionError("a Hermes say in a language without its extra was accepted")
    assert parse_native(json.dumps({"text": "你好", "lang": "yue"}).encode(), lacking).lang == "yue"


def test_json_that_is_not_an_object_is_refused_and_plain_text_spoken() -> None:
    for payload, kind in ((b"null", "null"), (b" 42", "a number"), (b"[1, 2, 3]", "an array"), (b'"hi"', "a string")):
        try:
            parse_native(payload, POLICY)
        except RejectedPayload as rejection:
            assert rejection.reason == f"JSON payload must be an object, not {kind}"
        else:
            raise AssertionError(f"{payload!r} was spoken")
    assert parse_native(b"[beep] the door is open", POLICY).text == "[beep] the door is open"


def test_an_integer_beyond_pythons_digit_limit_is_invalid_json_not_a_crash() -> None:
    payload = b'{"text": "hi", "id": ' + b"1" * 5000 + b"}"
    for parse in (lambda: parse_native(payload, POLICY), lambda: parse_hermes(payload, POLICY, [], "normal")):
        try:
            parse()
        except RejectedPayload as rejection:
            assert rejection.reason.startswith("invalid JSON: Exceeds the limit")
        else:
            raise AssertionError("accepted")
