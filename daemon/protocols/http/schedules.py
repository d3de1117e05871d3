"""``/v1/schedules``: the box's schedules for an admin, as ``gsv-edge schedule`` and MQTT's ``schedules/...`` manage
them (:mod:`daemon.protocols.schedule_requests` reads the body; the same checks, the same list, the same audit rows
with the caller's token as who).
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response

from daemon.core.schedules import FIELDS, NEXT_COUNT, NoSuchSchedule, ScheduleExists, upcoming
from daemon.core.state_db import StateDbError
from daemon.protocols.http.access import Caller, Refusal, needs
from daemon.protocols.http.responses import STATE_WRITE_RETRY_AFTER_S
from daemon.protocols.http.server import HttpServer
from daemon.protocols.schedule_requests import ScheduleRejected, parse_addition

router = APIRouter()
Admin = Annotated[Caller, Depends(needs("admin"))]
MAX_NEXT = 50  # due times ``GET /v1/schedules/next`` gives per schedule at most


def _server(http_request: HttpRequest) -> HttpServer:
    return http_request.app.state.server


@router.get("/v1/schedules")
async def schedules(http_request: HttpRequest, caller: Admin) -> dict[str, Any]:
    """Every schedule, by name, with its next due time and that run's id (MQTT's retained list)."""
    return {"schedules": await asyncio.to_thread(_server(http_request).service.schedules)}


@router.post("/v1/schedules", status_code=201)
async def add_schedule(http_request: HttpRequest, caller: Admin) -> JSONResponse:
    """Add a schedule from MQTT's ``schedules/add`` JSON: 201 the schedule as listed, 400 naming the key at fault,
    409 when the name is taken."""
    server = _server(http_request)
    try:
        data = json.loads(await http_request.body())
    except ValueError as exc:  # not JSON, or not UTF-8
        raise Refusal(400, f"the body is not valid JSON: {exc}", "invalid_json") from exc
    if not isinstance(data, dict):
        raise Refusal(400, "the body must be a JSON object", "invalid_value")
    try:
        schedule, _ = parse_addition(data, server.service.intake_policy().zones)
        await asyncio.to_thread(partial(server.service.add_schedule, schedule, by=caller.actor()))
    except ScheduleRejected as exc:
        raise Refusal(400, exc.reason, "invalid_value", param=exc.field) from exc
    except ScheduleExists as exc:
        raise Refusal(409, str(exc), "schedule_exists", param="name") from exc
    except StateDbError as exc:
        raise _not_recorded(exc) from exc
    return JSONResponse(schedule.listed(datetime.now(timezone.utc)), status_code=201,
                        headers={"Location": f"/v1/schedules/{schedule.name}"})


@router.delete("/v1/schedules/{name}", status_code=204)
async def remove_schedule(name: str, http_request: HttpRequest, caller: Admin) -> Response:
    """Delete a schedule: its future runs do not happen (one already queued plays). 204, 404."""
    try:
        await asyncio.to_thread(partial(_server(http_request).service.remove_schedule, name, by=caller.actor()))
    except NoSuchSchedule as exc:
        raise Refusal(404, f"{exc}: GET /v1/schedules lists them", "schedule_not_found", param=FIELDS["name"]) from exc
    except StateDbError as exc:
        raise _not_recorded(exc) from exc
    return Response(status_code=204)


def _not_recorded(exc: StateDbError) -> Refusal:
    """The state database cannot take the change (a full or failing disk): the box's fault, as for a say."""
    return Refusal(503, f"cannot record the change (state directory full?): {exc}", "state_write_failed",
                   headers={"Retry-After": STATE_WRITE_RETRY_AFTER_S})


@router.get("/v1/schedules/next")
async def next_runs(http_request: HttpRequest, caller: Admin,
                    count: Annotated[int, Query(ge=1, le=MAX_NEXT)] = NEXT_COUNT) -> dict[str, Any]:
    """The next ``count`` due times of each schedule, soonest first, as ``gsv-edge schedule next`` prints them."""
    now = datetime.now(timezone.utc)
    stored = await asyncio.to_thread(_server(http_request).service.schedule_store.list)
    return {"next": [{"due": due.isoformat(), "due_utc": due.astimezone(timezone.utc).isoformat(),
                      "schedule": schedule.name, "id": schedule.run_id(due)}
                     for due, schedule in upcoming(stored, now, count)]}
