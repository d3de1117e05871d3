"""The console's page and its session routes.

``GET /console/`` is the page (a bare ``GET /`` is sent there); its files are read once from the package and
served with a Content-Security-Policy that lets the page load nothing from anywhere but the box. ``POST
/v1/session`` exchanges a token for a session cookie, ``GET /v1/session`` says who the caller is (and the
session's CSRF token), ``DELETE /v1/session`` logs out. A refused login is audited as every refusal is.
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, RedirectResponse, Response

from daemon.core.tokens import digest
from daemon.protocols.http.access import Caller, Gate, Refusal, identify, peer
from daemon.protocols.http.sessions import cookie_header
from daemon.vocabulary import SCOPES

log = logging.getLogger(__name__)
router = APIRouter()

CONSOLE_PATH = "/console/"
INDEX = "index.html"
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
               ".js": "text/javascript; charset=utf-8", ".json": "application/json"}
HEADERS = {
    # Nothing but the box: no CDN, font or script from elsewhere can load even if a file named one.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "media-src 'self' blob:; connect-src 'self'; form-action 'self'; base-uri 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidated: a new version of the daemon serves its own page at once
}


def _files() -> dict[str, bytes]:
    """The page's files by their path under ``/console/``."""
    root = resources.files(__package__) / "static"
    found: dict[str, bytes] = {}

    def walk(node: Any, prefix: str) -> None:
        for child in node.iterdir():
            if child.is_dir():
                walk(child, f"{prefix}{child.name}/")
            elif any(child.name.endswith(suffix) for suffix in MEDIA_TYPES):
                found[prefix + child.name] = child.read_bytes()

    walk(root, "")
    return found


FILES = _files()


@router.get("/console")
async def console_root() -> RedirectResponse:
    return RedirectResponse(CONSOLE_PATH, status_code=308)


@router.get(CONSOLE_PATH + "{name:path}")
async def console_file(name: str) -> Response:
    name = name or INDEX
    data = FILES.get(name)
    if data is None:
        raise Refusal(404, f"no console file {name!r}", "not_found")
    media_type = next(kind for suffix, kind in MEDIA_TYPES.items() if name.endswith(suffix))
    return Response(data, media_type=media_type, headers=HEADERS)


# -- sessions -------------------------------------------------------------------------------------


@router.post("/v1/session")
async def log_in(http_request: HttpRequest) -> JSONResponse:
    """Exchange ``{"token": ...}`` for a session cookie; 401 (audited) for a token that is none."""
    gate: Gate = http_request.app.state.gate
    gate.throttle(Caller(None, frozenset(), peer(http_request)))  # guessing is as slow as any other call
    if http_request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        # a form another page posts cannot log this browser in to someone else's session
        raise Refusal(400, "the body must be JSON (Content-Type: application/json)", "invalid_json")
    try:
        body = json.loads(await http_request.body())
    except ValueError as exc:
        raise Refusal(400, f"the body is not valid JSON: {exc}", "invalid_json") from exc
    token = body.get("token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token.strip():
        raise Refusal(400, "token: a token is required (gsv-edge token add NAME --scope admin)", "invalid_value",
                      param="token")
    info = gate.tokens.verify(token.strip())
    if info is None:
        raise Refusal(401, "invalid or revoked token", "invalid_token", param="token")
    session = gate.sessions.open(digest(token.strip()))
    caller = Caller(info.name, frozenset(info.scopes), peer(http_request), session)
    log.info("console: token %r logged in from %s", info.name, caller.client)
    secure = http_request.app.state.server.http.tls_cert_file is not None
    cookie = cookie_header(session.id, round(gate.sessions.lifetime_s), secure)
    return JSONResponse(_who(caller), headers={"Set-Cookie": cookie})


@router.get("/v1/session")
async def whoami(http_request: HttpRequest) -> dict[str, Any]:
    """Who the caller is: its token's name and scopes (none: it must log in), and its session's CSRF token."""
    caller = identify(http_request)
    http_request.app.state.gate.throttle(caller)
    return _who(caller)


@router.delete("/v1/session", status_code=204)
async def log_out(http_request: HttpRequest) -> Response:
    caller = identify(http_request)
    if caller.session is not None:
        http_request.app.state.gate.sessions.close(caller.session.id)
        log.info("console: token %r logged out from %s", caller.token_name, caller.client)
    return Response(status_code=204, headers={"Set-Cookie": cookie_header("", 0)})


def _who(caller: Caller) -> dict[str, Any]:
    session = caller.session
    return {"token_name": caller.token_name, "scopes": [scope for scope in SCOPES if scope in caller.scopes],
            "csrf_token": session.csrf if session else None, "expires_at": session.expires_at if session else None}
