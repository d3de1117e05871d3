"""A say's ``zones``: named zones in config order, ``"all"``, and refusals that name the zone or field at fault."""

from __future__ import annotations

import json

import pytest

from daemon.protocols.payloads import IntakePolicy, RejectedPayload, parse_native

POLICY = IntakePolicy(max_text_chars=100, default_ttl_s=60, voices=(), has_audio_device=False,
                      zones=("lobby", "ward3", "garden"))


def say(**fields: object) -> bytes:
    return json.dumps({"id": "z", "text": "Hello.", **fields}).encode()


def test_named_zones_are_kept_once_in_config_order_and_play() -> None:
    request = parse_native(say(zones=["garden", "lobby", "garden"]), POLICY)
    assert request.zones == ("lobby", "garden") and request.output == "play"


@pytest.mark.parametrize("zones", ["all", ["all"]])
def test_all_is_every_configured_zone(zones: object) -> None:
    assert parse_native(say(zones=zones), POLICY).zones == ("lobby", "ward3", "garden")


def test_no_zones_is_todays_request() -> None:
    request = parse_native(say(), POLICY)
    assert request.zones == () and request.output == "publish"


@pytest.mark.parametrize(
    ("fields", "policy", "reason"),
    [
        ({"zones": ["ward3", "ward9"]}, POLICY, "zones: unknown zone 'ward9'"),
        ({"zones": "ward9"}, POLICY, "zones: unknown zone 'ward9'"),
        ({"zones": []}, POLICY, 'zones: name at least one zone, or "all"'),
        ({"zones": [3]}, POLICY, "zones"),
        ({"zones": ["lobby"], "output": "publish"}, POLICY, "output: not with zones"),
        ({"zones": "all"}, IntakePolicy(max_text_chars=100, default_ttl_s=60, voices=(), has_audio_device=True),
         "zones: this box has no [[zones]] configured"),
    ],
)
def test_bad_zones_are_rejected_naming_them(fields: dict, policy: IntakePolicy, reason: str) -> None:
    with pytest.raises(RejectedPayload) as refused:
        parse_native(say(**fields), policy)
    assert refused.value.reason.startswith(reason) and refused.value.request_id == "z"
