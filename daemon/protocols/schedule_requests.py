"""Adding and removing schedules from outside: the JSON that MQTT's ``<prefix>/<node_id>/schedules/add`` and
``.../schedules/remove`` and HTTP's ``/v1/schedules`` take, read into a checked
:class:`~daemon.core.schedules.Schedule` (or the name to remove).

An addition carries what ``gsv-edge schedule add`` takes, under the keys the schedule list shows::

    {"id": "req-1", "name": "bell", "cron": "0 8 * * 1-5", "tz": "Europe/Berlin", "text": "Classes begin.",
     "priority": "high", "except": ["2026-12-24"], "run_if_late_s": 60}

``at`` (a local ISO time) or ``cron``; ``text`` or ``payload`` (a say payload without an id); ``voice``, ``lang``,
``priority`` laid over it; ``tz`` (default the box's zone), ``start``, ``end``, ``except``, ``run_if_late_s``.
``id`` only names the answer (the event, on MQTT). Every refusal is one line naming the key at fault, as the
command line's name its option; the checks are the same ones (:func:`daemon.core.schedules.make`).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from daemon.core.schedules import FIELDS, Schedule, ScheduleError, local_zone_name, make, say_payload
from daemon.protocols.payloads import MAX_NAME_CHARS, name_problem


class ScheduleRejected(ValueError):
    """A schedule change that is not made; the message is the reason, ``field`` the key at fault (if one is)."""

    def __init__(self, reason: str, field: str | None = None, request_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field
        self.request_id = request_id


@dataclass(frozen=True)
class ScheduleRemoval:
    name: str
    id: str | None = None


class _Addition(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    id: str | None = None
    name: str
    at: str | None = None
    cron: str | None = None
    tz: str | None = None
    text: str | None = None
    payload: dict[str, Any] | None = None
    voice: str | None = None
    lang: str | None = None
    priority: str | None = None
    start: str | None = None
    end: str | None = None
    except_dates: list[str] | None = Field(None, alias="except")
    run_if_late_s: float | None = Field(None, allow_inf_nan=False)


class _Removal(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: str | None = None
    name: str


def json_object(payload: bytes) -> dict[str, Any]:
    """An MQTT payload as the JSON object both topics take."""
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ScheduleRejected(f"payload must be a JSON object: {exc}") from exc
    if not isinstance(data, dict):
        raise ScheduleRejected("payload must be a JSON object")
    return data


def _request_id(data: dict[str, Any]) -> str | None:
    raw = data.get("id")
    return raw[:MAX_NAME_CHARS] if isinstance(raw, str) and not name_problem(raw, "id") else None


def _validated(model: type[BaseModel], data: dict[str, Any]) -> Any:
    try:
        body = model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "payload"
        raise ScheduleRejected(f"{where}: {first['msg']}", where.split(".")[0], _request_id(data)) from exc
    if body.id is not None and (problem := name_problem(body.id, "id")):
        raise ScheduleRejected(problem, "id")
    return body


def parse_addition(data: dict[str, Any], zones: Collection[str],
                   now: float | None = None) -> tuple[Schedule, str | None]:
    """The schedule an addition asks for, checked as the command line checks it (``zones``: the configured zone
    names), and the addition's id."""
    body: _Addition = _validated(_Addition, data)
    try:
        payload = say_payload(body.text, body.payload,
                              {"voice": body.voice, "lang": body.lang, "priority": body.priority}, FIELDS)
        schedule = make(body.name, payload, body.tz or local_zone_name(), at=body.at, cron=body.cron,
                        start=body.start, end=body.end, exceptions=body.except_dates, late_s=body.run_if_late_s,
                        now=now, names=FIELDS, zones=zones)
    except ScheduleError as exc:
        raise ScheduleRejected(str(exc), exc.field and FIELDS[exc.field], body.id) from exc
    return schedule, body.id


def parse_removal(data: dict[str, Any]) -> ScheduleRemoval:
    body: _Removal = _validated(_Removal, data)
    return ScheduleRemoval(body.name, body.id)
