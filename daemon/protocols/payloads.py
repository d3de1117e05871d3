"""Turning MQTT payloads (native JSON or plain text, Hermes ``say``) into validated requests.

Anything a broker can deliver is either a :class:`~daemon.core.request_queue.Request` or a
:class:`RejectedPayload` with a reason for the ``rejected`` event; nothing here may raise anything
else, because the daemon must keep serving after any payload.
"""

from __future__ import annotations

import json
import math
import re
import time
import unicodedata
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import AliasGenerator, BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from daemon.config import ALL_ZONES
from daemon.core.request_queue import Part, Request
from daemon.vocabulary import (
    LANGUAGE_MODES,
    MAX_SPEED,
    MIN_SPEED,
    AudioFormat,
    Output,
    Priority,
    language_mode,
    mode_language,
)

MAX_NAME_CHARS = 128
MAX_PARTS = 20  # items of a multi-part announcement
MAX_REPEAT = 5  # plays of its sequence
MAX_PAUSE_S = 30.0  # a pause part, and the silence between repeats
CLIENT_GONE = "client disconnected"  # why a request whose Wyoming or HTTP client hung up ends failed
_LANG = re.compile(r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{1,8})*$")


class RejectedPayload(ValueError):
    """A payload the daemon will not speak; ``reason`` goes into the ``rejected`` event."""

    def __init__(
        self,
        reason: str,
        request_id: str | None = None,
        site_id: str | None = None,
        session_id: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.request_id = request_id
        self.site_id = site_id
        self.session_id = session_id


@dataclass(frozen=True)
class IntakePolicy:
    """What the running daemon accepts: limits, defaults and what it can actually do."""

    max_text_chars: int
    default_ttl_s: float
    voices: Collection[str]
    has_audio_device: bool
    default_chime: bool = False
    zones: tuple[str, ...] = ()  # the configured [[zones]] names, in config order
    unspoken: Mapping[str, str] = field(default_factory=dict)
    """Languages the engine cannot read here and why, naming the extra to install (``{"ja": "... gsv-edge[ja]"}``):
    a request in a mode of one is refused instead of failing in synthesis."""


def name_problem(value: str, what: str) -> str | None:
    """Why an id, voice or site name is unsafe (it may end up in a topic), or None if it is fine."""
    if not value:
        return f"{what} is empty"
    if len(value) > MAX_NAME_CHARS:
        return f"{what} is longer than {MAX_NAME_CHARS} characters"
    for bad in ("+", "#", "/", "\0"):
        if bad in value:
            return f"{what} contains a forbidden character {bad!r}"
    if ".." in value:
        return f"{what} contains '..'"
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in value):
        return f"{what} contains control characters"
    return None


def _text_problem(text: str, max_chars: int) -> str | None:
    stripped = text.strip()
    if not stripped:
        return "empty text"
    if len(stripped) > max_chars:
        return f"text too long ({len(stripped)} > {max_chars} characters)"
    if any(unicodedata.category(c) in ("Cc", "Cs") and c not in "\t\n\r" for c in stripped):
        return "text contains control characters"
    return None


def _first_error(error: ValidationError) -> str:
    item = error.errors()[0]
    loc = ".".join(str(part) for part in item["loc"])
    return f"{loc}: {item['msg']}" if loc else item["msg"]


def _decode(payload: bytes) -> str:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RejectedPayload("payload is not valid UTF-8") from exc


_JSON_KINDS = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", str: "a string",
               list: "an array", dict: "an object"}


def _not_json(constant: str) -> Any:
    """Python's reader takes NaN and Infinity; JSON has neither, and no field here means anything by them."""
    raise ValueError(f"{constant} is not a JSON value")


def _load_json(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_not_json)
    except json.JSONDecodeError as exc:
        raise RejectedPayload(f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from exc
    except ValueError as exc:  # e.g. an integer beyond Python's digit limit
        raise RejectedPayload(f"invalid JSON: {exc}") from exc


def _object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise RejectedPayload(f"JSON payload must be an object, not {_JSON_KINDS[type(data)]}")
    return data


def _load_object(text: str) -> dict[str, Any]:
    return _object(_load_json(text))


def _native_object(text: str) -> dict[str, Any] | None:
    """The JSON object of a native payload, or None for plain text (anything that is not JSON at all)."""
    if text.lstrip().startswith("{"):  # meant as JSON: an error in it is reported, not spoken
        return _load_object(text)
    try:
        data = json.loads(text, parse_constant=_not_json)
    except ValueError:
        return None
    return _object(data)


def _raw_id(data: dict[str, Any]) -> str | None:
    """The id as given, for naming the request in a rejection; a number is named by its JSON text."""
    raw = data.get("id")
    if isinstance(raw, str):
        return raw[:MAX_NAME_CHARS]
    if isinstance(raw, bool | int | float):
        return json.dumps(raw)[:MAX_NAME_CHARS]
    return None


def _normalize_id(data: dict[str, Any], context: dict[str, Any]) -> None:
    """Integer ids become their decimal string; any other non-string id is refused (bools, floats, ...)."""
    raw = data.get("id")
    if isinstance(raw, int) and not isinstance(raw, bool):
        data["id"] = str(raw)
    elif raw is not None and not isinstance(raw, str):
        raise RejectedPayload("id: must be a string or an integer", **context)


class NativeSay(BaseModel):
    """The JSON body of ``<prefix>/<node_id>/say``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: str | None = None
    text: str | None = None
    parts: list[Any] | None = None  # checked item by item by _parts, which names the item at fault
    repeat: int | None = None
    repeat_gap_s: float | None = None
    voice: str | None = None
    lang: str | None = None
    priority: Priority = "normal"
    interrupt: bool = False
    ttl_s: float | None = Field(None, gt=0, le=7 * 86400)
    expires_at: float | str | None = None  # Unix seconds or ISO 8601 with a time zone
    volume: float = Field(1.0, ge=0.0, le=2.0)
    speed: float = Field(1.0, ge=MIN_SPEED, le=MAX_SPEED)
    chime: bool | None = None
    output: Output | None = None
    format: AudioFormat = "wav"
    zones: list[str] | str | None = None  # [[zones]] names, or "all"


def _zones(say: NativeSay, policy: IntakePolicy) -> tuple[str, ...]:
    """The zones a say names, each once in config order; raises ValueError naming the zone at fault."""
    if say.zones is None:
        return ()
    if not policy.zones:
        raise ValueError("zones: this box has no [[zones]] configured")
    if say.output is not None:
        raise ValueError("output: not with zones (each zone plays on its own device or topic)")
    wanted = [say.zones] if isinstance(say.zones, str) else say.zones
    if not wanted:
        raise ValueError(f'zones: name at least one zone, or "{ALL_ZONES}"')
    if ALL_ZONES in wanted:
        return policy.zones
    if unknown := next((name for name in wanted if name not in policy.zones), None):
        raise ValueError(f"zones: unknown zone {unknown[:MAX_NAME_CHARS]!r}")
    return tuple(name for name in policy.zones if name in wanted)


def _expiry(say: NativeSay, now: float, default_ttl_s: float) -> float:
    if say.ttl_s is not None and say.expires_at is not None:
        raise RejectedPayload("give ttl_s or expires_at, not both", say.id)
    if say.ttl_s is not None:
        return now + say.ttl_s
    if isinstance(say.expires_at, str):
        try:
            moment = datetime.fromisoformat(say.expires_at.replace("Z", "+00:00"))
        except ValueError as exc:
            raise RejectedPayload("expires_at: not an ISO 8601 time", say.id) from exc
        if moment.tzinfo is None:
            raise RejectedPayload("expires_at: needs a time zone", say.id)
        return moment.timestamp()
    if say.expires_at is not None:
        return float(say.expires_at)
    return now + default_ttl_s


def parse_native(payload: bytes, policy: IntakePolicy, now: float | None = None) -> Request:
    """A native ``say``: a JSON object, or any other UTF-8 payload as the text itself."""
    now = time.time() if now is None else now
    text = _decode(payload)
    if (data := _native_object(text)) is not None:
        _normalize_id(data, {"request_id": _raw_id(data)})
        try:
            say = NativeSay.model_validate(data)
        except ValidationError as exc:
            raise RejectedPayload(_first_error(exc), _raw_id(data)) from exc
    else:
        say = NativeSay(text=text)
    if say.id is not None and (problem := name_problem(say.id, "id")):
        raise RejectedPayload(problem, say.id[:MAX_NAME_CHARS])
    request_id = say.id or uuid.uuid4().hex
    if say.text is not None and say.parts is not None:
        raise RejectedPayload("give text or parts, not both", request_id)
    if say.text is None and say.parts is None:
        raise RejectedPayload("text: Field required (or give parts)", request_id)
    if say.text is not None and (problem := _text_problem(say.text, policy.max_text_chars)):
        raise RejectedPayload(problem, request_id)
    if problem := _voice_problem(say.voice, policy) or lang_problem(say.lang, policy):
        raise RejectedPayload(problem, request_id)
    try:
        zones = _zones(say, policy)
    except ValueError as exc:
        raise RejectedPayload(str(exc), request_id) from exc
    output = say.output or ("play" if policy.has_audio_device or zones else "publish")
    if output != "publish" and not policy.has_audio_device and not zones:
        raise RejectedPayload(f"output {output!r} needs an audio device (audio.output_device)", request_id)
    chime = policy.default_chime if say.chime is None else say.chime
    try:
        parts = _sequence(say, chime, policy)
    except ValueError as exc:
        raise RejectedPayload(str(exc), request_id) from exc
    texts = [part.text for part in parts if part.text is not None]
    return Request(
        id=request_id,
        text="\n".join(texts) if parts else (say.text or "").strip(),
        expires_at=_expiry(say, now, policy.default_ttl_s),
        voice=say.voice,
        lang=say.lang,
        priority=say.priority,
        interrupt=say.interrupt,
        volume=say.volume,
        speed=say.speed,
        chime=chime and not parts,
        output=output,
        format=say.format,
        parts=parts,
        repeat=say.repeat or 1,
        repeat_gap_s=say.repeat_gap_s or 0.0,
        zones=zones,
    )


def _voice_problem(voice: str | None, policy: IntakePolicy, where: str = "") -> str | None:
    """Why ``voice`` cannot be spoken; ``where`` names the part that asks for it (a prefix: ``parts[0].``)."""
    if voice is None:
        return None
    if problem := name_problem(voice, f"{where}voice"):
        return problem
    return None if voice in policy.voices else f"{where}{'voice: ' if where else ''}unknown voice {voice!r}"


def lang_problem(lang: str | None, policy: IntakePolicy, where: str = "") -> str | None:
    """Why ``lang`` (a language mode, or a language code such as ``en-US``) cannot be spoken, or None."""
    if lang is None:
        return None
    if lang not in LANGUAGE_MODES and not _LANG.fullmatch(lang):
        return f"{where}{'lang: ' if where else ''}invalid lang {lang[:32]!r}"
    if reason := policy.unspoken.get(mode_language(language_mode(lang)) or ""):
        return f"{where}lang: {lang} is not spoken on this box: {reason}"
    return None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _seconds_problem(value: Any, where: str) -> str | None:
    if not _number(value) or not 0 <= value <= MAX_PAUSE_S:
        return f"{where}: must be between 0 and {MAX_PAUSE_S:g} seconds"
    return None


def _sequence(say: NativeSay, chime: bool, policy: IntakePolicy) -> tuple[Part, ...]:
    """The parts to play, checked; a plain text asked to repeat becomes its chime and itself. Empty: a plain
    say. Raises ValueError naming the field at fault."""
    if say.repeat is not None and not 1 <= say.repeat <= MAX_REPEAT:
        raise ValueError(f"repeat: must be between 1 and {MAX_REPEAT}")
    if say.repeat_gap_s is not None and (problem := _seconds_problem(say.repeat_gap_s, "repeat_gap_s")):
        raise ValueError(problem)
    if say.parts is None:
        if (say.repeat or 1) == 1:
            return ()
        return ((Part(chime=True),) if chime else ()) + (Part(text=(say.text or "").strip(), voice=say.voice,
                                                               lang=say.lang, speed=say.speed),)
    if say.chime is not None:
        raise ValueError('chime: give the chime as a part ({"chime": true}) when parts are given')
    if not 1 <= len(say.parts) <= MAX_PARTS:
        raise ValueError(f"parts: must hold 1 to {MAX_PARTS} items, got {len(say.parts)}")
    parts = tuple(_part(item, f"parts[{index}]", say, policy) for index, item in enumerate(say.parts))
    chars = sum(len(part.text) for part in parts if part.text is not None)
    if chars > policy.max_text_chars:
        raise ValueError(f"parts: texts too long together ({chars} > {policy.max_text_chars} characters)")
    return parts


_PART_KEYS = {"chime": {"chime"}, "pause_s": {"pause_s"}, "text": {"text", "voice", "lang", "speed"}}


def _part(item: Any, where: str, say: NativeSay, policy: IntakePolicy) -> Part:
    """One item of ``parts``: exactly one of ``chime``, ``text`` (with its voice, lang, speed) or ``pause_s``."""
    if not isinstance(item, dict):
        raise ValueError(f"{where}: must be an object, not {_JSON_KINDS.get(type(item), 'that')}")
    kinds = [kind for kind in _PART_KEYS if kind in item]
    if len(kinds) != 1:
        raise ValueError(f"{where}: must hold exactly one of chime, text or pause_s")
    kind = kinds[0]
    for key in item:
        if key not in _PART_KEYS[kind]:
            raise ValueError(f"{where}.{key}: not allowed in a {kind} part")
    if kind == "chime":
        if item["chime"] is not True:
            raise ValueError(f"{where}.chime: must be true")
        return Part(chime=True)
    if kind == "pause_s":
        if problem := _seconds_problem(item["pause_s"], f"{where}.pause_s"):
            raise ValueError(problem)
        return Part(pause_s=float(item["pause_s"]))
    text, voice, lang, speed = (item.get(key) for key in ("text", "voice", "lang", "speed"))
    for key, value in (("text", text), ("voice", voice), ("lang", lang)):
        if not isinstance(value, str) and (value is not None or key == "text"):
            raise ValueError(f"{where}.{key}: must be a string")
    assert isinstance(text, str)
    if problem := _text_problem(text, policy.max_text_chars):
        raise ValueError(f"{where}.text: {problem}")
    if problem := _voice_problem(voice, policy, f"{where}.") or lang_problem(lang, policy, f"{where}."):
        raise ValueError(problem)
    if speed is not None and (not _number(speed) or not MIN_SPEED <= speed <= MAX_SPEED):
        raise ValueError(f"{where}.speed: must be between {MIN_SPEED:g} and {MAX_SPEED:g}")
    return Part(text=text.strip(), voice=say.voice if voice is None else voice,
                lang=say.lang if lang is None else lang, speed=say.speed if speed is None else float(speed))


class HermesSay(BaseModel):
    """``hermes/tts/say`` as Rhasspy sends it (camelCase keys; unknown keys ignored)."""

    model_config = ConfigDict(extra="ignore", strict=True, alias_generator=AliasGenerator(validation_alias=to_camel))

    text: str
    site_id: str = "default"
    lang: str | None = None
    id: str | None = None
    session_id: str | None = None
    volume: float | None = Field(None, ge=0.0, le=1.0)


def _for_us(data: dict[str, Any], site_ids: Collection[str]) -> bool:
    return not site_ids or data.get("siteId", "default") in site_ids


def _hermes_context(data: dict[str, Any]) -> dict[str, Any]:
    """What names a Hermes say in its ``error/tts`` and ``sayFinished``, as far as the payload is usable."""
    site = data.get("siteId", "default")
    return {
        "request_id": _raw_id(data),
        "site_id": site if isinstance(site, str) and not name_problem(site, "siteId") else None,
        "session_id": data.get("sessionId") if isinstance(data.get("sessionId"), str) else None,
    }


def refusal(payload: bytes, reason: str, hermes: bool, site_ids: Collection[str] = ()) -> RejectedPayload | None:
    """A say refused before it is parsed in full (rate limit), named as far as its payload says: the
    refusal must reach whoever waits for that request. None for a Hermes say to another site."""
    try:
        data = _load_object(_decode(payload))
    except RejectedPayload:  # plain text, or nothing readable: nothing names it
        return RejectedPayload(reason)
    if not hermes:
        return RejectedPayload(reason, _raw_id(data))
    return RejectedPayload(reason, **_hermes_context(data)) if _for_us(data, site_ids) else None


def parse_hermes(
    payload: bytes, policy: IntakePolicy, site_ids: Collection[str], priority: Priority, now: float | None = None
) -> Request | None:
    """A Hermes ``say`` for one of our sites, or None when it is for another site."""
    now = time.time() if now is None else now
    data = _load_object(_decode(payload))
    if not _for_us(data, site_ids):
        return None
    context = _hermes_context(data)
    _normalize_id(data, context)
    try:
        say = HermesSay.model_validate(data)
    except ValidationError as exc:
        raise RejectedPayload(_first_error(exc), **context) from exc
    for value, what in ((say.id, "id"), (say.site_id, "siteId")):
        if value is not None and (problem := name_problem(value, what)):
            raise RejectedPayload(problem, **context)
    request_id = say.id or uuid.uuid4().hex
    context["request_id"] = request_id
    if problem := _text_problem(say.text, policy.max_text_chars):
        raise RejectedPayload(problem, **context)
    if problem := lang_problem(say.lang, policy):
        raise RejectedPayload(problem, **context)
    return Request(
        id=request_id,
        text=say.text.strip(),
        expires_at=now + policy.default_ttl_s,
        lang=say.lang,
        priority=priority,
        volume=1.0 if say.volume is None else say.volume,
        chime=policy.default_chime,
        output="play" if policy.has_audio_device else "publish",
        source="hermes",
        site_id=say.site_id,
        session_id=say.session_id,
    )
