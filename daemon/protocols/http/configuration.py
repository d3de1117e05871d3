"""The box's configuration over HTTP, for an admin: the model bundle that speaks, the effective settings with
where each value came from, and the safe reload that re-reads both.

``GET /v1/model`` and ``GET /v1/settings`` only read; ``POST /v1/reload`` runs the same reload as SIGHUP and
``gsv-edge reload`` (:mod:`daemon.app.reload`): 200 when the new configuration was switched in, 409 with the
reason when it was refused and the previous one keeps serving; the audit trail records either with the caller's
token. docs/http.md lists the bodies.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from starlette.requests import Request as HttpRequest

from daemon.protocols.http.access import Caller, Refusal, needs
from daemon.protocols.http.server import HttpServer

router = APIRouter()
Admin = Annotated[Caller, Depends(needs("admin"))]

ENGINE_KEYS = ("engine_state", "engine_error", "model", "precision", "provider", "fallback", "sample_rate")


def _server(http_request: HttpRequest) -> HttpServer:
    return http_request.app.state.server


@router.get("/v1/model")
async def model(http_request: HttpRequest, caller: Admin) -> dict[str, Any]:
    """The engine that speaks and the manifest of its bundle (``bundle`` null: no bundle's engine speaks, the
    eSpeak NG fallback does; ``configured_bundle`` says whether one was asked for)."""
    service = _server(http_request).service
    status = service.status()
    configured = service.current_bundle()
    return {"engine": {key: status.get(key) for key in ENGINE_KEYS},
            "configured_bundle": str(configured) if configured is not None else None,
            "bundle": service.loaded_bundle()}


@router.get("/v1/settings")
async def settings(http_request: HttpRequest, caller: Admin) -> dict[str, Any]:
    """Every key of the running configuration, its value (secrets masked) and where it came from."""
    current = _server(http_request).service.settings
    config_file = current.config_file
    return {"config_file": str(config_file) if config_file is not None else None,
            "settings": [{"key": key, "value": value, "source": source}
                         for key, value, source in current.effective()]}


@router.post("/v1/reload")
async def reload(http_request: HttpRequest, caller: Admin) -> dict[str, Any]:
    """Re-read the config file and the bundle: 200 ``{"reloaded": true, "message"}`` once switched in, else 409
    with the reason (a bad file or bundle, or a daemon not started by ``gsv-edge serve``)."""
    switched, message = await asyncio.to_thread(partial(_server(http_request).service.reload, by=caller.actor()))
    if not switched:
        raise Refusal(409, message, "reload_refused")
    return {"reloaded": True, "message": message}
