"""The ASGI application: the routes of both client contracts and the box's own, the web console, the health
checks, and one way errors look.

No route serves anything fetched from the internet: FastAPI's interactive ``/docs`` (which loads its scripts
from a CDN) is off; ``/openapi.json`` describes the API; the console is the box's own files. Every error is a
body, never a traceback: under ``/v1/`` in OpenAI's shape (``{"error": {"message", "type", "param", "code"}}``),
elsewhere in api_v2's (``{"message": ...}``).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from daemon.core.events import PayloadOrigin
from daemon.protocols.http import api_v2, audit_trail, configuration, legacy_api, native, openai, schedules
from daemon.protocols.http.access import Caller, Gate, Refusal, invalid_value, peer
from daemon.protocols.http.console import routes as console
from daemon.protocols.http.responses import ClientGone
from daemon.protocols.http.server import HttpServer

log = logging.getLogger(__name__)

_OPENAI_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                 413: "invalid_request_error", 429: "rate_limit_error", 503: "server_error", 500: "server_error"}


def build_app(server: HttpServer) -> FastAPI:
    app = FastAPI(title="gsv-edge", version=server.version, docs_url=None, redoc_url=None)
    app.state.server = server
    app.state.gate = Gate(server.http, server.tokens, server.sessions)
    app.include_router(api_v2.router)
    app.include_router(legacy_api.router)
    app.include_router(openai.router)
    app.include_router(native.router)
    app.include_router(audit_trail.router)
    app.include_router(configuration.router)
    app.include_router(schedules.router)
    app.include_router(console.router)
    app.add_api_route("/healthz", healthz, methods=["GET"])
    app.add_api_route("/readyz", readyz, methods=["GET"])
    app.add_exception_handler(Refusal, _refused)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(ClientGone, _client_gone)
    app.add_exception_handler(Exception, _unexpected)
    if server.http.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=server.http.cors_origins,
                           allow_methods=["GET", "POST", "DELETE"], allow_headers=["Authorization", "Content-Type"],
                           expose_headers=["X-Request-Id"])
    app.add_middleware(BodyLimit, max_bytes=server.http.max_body_bytes)
    return app


def server_of(http_request: HttpRequest) -> HttpServer:
    return http_request.app.state.server


async def healthz(http_request: HttpRequest) -> dict[str, Any]:
    """Up: the server answers (no token needed, for a load balancer or a container runtime)."""
    return {"status": "ok"}


async def readyz(http_request: HttpRequest) -> JSONResponse:
    """Ready: requests will be spoken, by the neural engine or, degraded, by the fallback voice; 503 once the
    box is stopping, so a load balancer sends calls elsewhere."""
    server = server_of(http_request)
    state = server.service.engine_state()
    if server.draining:
        return JSONResponse({"status": "stopping", "engine_state": state}, status_code=503)
    return JSONResponse({"status": "ready", "engine_state": state}, status_code=200)


# -- errors ---------------------------------------------------------------------------------------


def error_response(http_request: HttpRequest, refusal: Refusal) -> JSONResponse:
    body: dict[str, Any]
    if http_request.url.path.startswith("/v1/"):
        kind = _OPENAI_TYPES.get(refusal.status, "invalid_request_error")
        body = {"error": {"message": refusal.message, "type": kind, "param": refusal.param, "code": refusal.code}}
    else:
        body = {**refusal.extra, "message": refusal.message}
    return JSONResponse(body, status_code=refusal.status, headers=refusal.headers)


async def _refused(http_request: HttpRequest, exc: Exception) -> Response:
    assert isinstance(exc, Refusal)
    if not exc.audited:
        caller: Caller | None = getattr(http_request.state, "caller", None)
        origin = PayloadOrigin("http", topic=f"{http_request.method} {http_request.url.path}",
                               client=peer(http_request), token_name=caller.token_name if caller else None)
        server_of(http_request).service.refused(origin, f"{exc.status}: {exc.message}")
    log.info("HTTP %s %s from %s refused: %d %s", http_request.method, http_request.url.path, peer(http_request),
             exc.status, exc.message)
    return error_response(http_request, exc)


async def _invalid(http_request: HttpRequest, exc: Exception) -> Response:
    """A body or query that does not parse: 400 naming the first field at fault."""
    assert isinstance(exc, RequestValidationError)
    error = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request", "type": ""}
    if error.get("type") == "json_invalid":
        detail = error.get("ctx", {}).get("error", "")
        return await _refused(http_request, Refusal(400, f"the body is not valid JSON: {detail}", "invalid_json"))
    if tuple(error.get("loc", ())) == ("body",):
        return await _refused(http_request, Refusal(400, "the body must be a JSON object", "invalid_value"))
    legacy = http_request.url.path == "/"  # upstream api.py's error shape
    return await _refused(http_request, invalid_value(error, legacy))


async def _http_error(http_request: HttpRequest, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = "no such route" if exc.status_code == 404 else str(exc.detail)
    return error_response(http_request, Refusal(exc.status_code, message, "http_error", headers=exc.headers))


async def _client_gone(http_request: HttpRequest, exc: Exception) -> Response:
    return Response(status_code=499)  # nobody reads it: the request is cancelled already


async def _unexpected(http_request: HttpRequest, exc: Exception) -> Response:
    log.exception("HTTP %s %s failed", http_request.method, http_request.url.path)
    refusal = Refusal(500, f"internal error: {type(exc).__name__}: {exc}", "internal_error")
    return error_response(http_request, refusal)


class BodyLimit:
    """413 for a body over ``http.max_body_bytes``, declared or counted, before a handler reads it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise Refusal(413, f"request body over http.max_body_bytes ({self.max_bytes} bytes)", "too_large")
            return message

        await self.app(scope, counted, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = Refusal(413, f"request body over http.max_body_bytes ({self.max_bytes} bytes)", "too_large")
        http_request = HttpRequest(scope, receive)
        response = await _refused(http_request, refusal)
        await response(scope, receive, send)
