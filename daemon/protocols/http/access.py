"""Who may call what: bearer tokens with scopes, the web console's sessions, the anonymous rule, and a rate
limit per caller.

A token (``gsv-edge token add``) is sent as ``Authorization: Bearer <token>``; clients that only know how to
send an API key (the OpenAI package, api_v2 plugins) send exactly that. The web console's session cookie
(:mod:`~daemon.protocols.http.sessions`) counts as the token it was opened with, with its CSRF token on every
call that may change something; a bearer token wins over a cookie. A call without either is anonymous: it
may speak when ``http.allow_anonymous`` is set, or while no token exists and the server listens on loopback
only (a fresh box, used from itself); managing voices and the box always needs a token. Where anonymous calls
may speak, a bearer value that is no token counts as anonymous (clients insist on sending some key). Every refusal is
audited with the caller's address and token name, as every request is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request as HttpRequest

from daemon.config import HttpSettings
from daemon.core.audit import Actor
from daemon.core.rate_limit import RateLimiter
from daemon.core.tokens import TokenStore
from daemon.protocols.http.sessions import COOKIE, CSRF_HEADER, Session, Sessions, cookie_header, needs_csrf

ANONYMOUS_SCOPES = frozenset({"speak"})


@dataclass(frozen=True)
class Caller:
    """Who is calling: the token's name (None: anonymous), what it may do, from where, and through which
    console session (None: a bearer token or nothing)."""

    token_name: str | None
    scopes: frozenset[str]
    client: str
    session: Session | None = None

    def may(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    def actor(self) -> Actor:
        """The caller as the audit trail names who made a change."""
        return Actor.http(self.token_name, self.client)


class Refusal(Exception):
    """A call answered with an error status instead of audio; each API words the body its own way."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None,
                 headers: dict[str, str] | None = None, audited: bool = False,
                 extra: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.extra = extra or {}  # more keys for a body in upstream's shape (api.py's "code")
        self.audited = audited  # the request it answers is in the audit trail already
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers or {}


def invalid_value(error: Mapping[str, Any], legacy: bool = False) -> Refusal:
    """400 naming the first field a body or query fails on; ``legacy``: upstream api.py's body shape ("code")."""
    field = ".".join(str(part) for part in error.get("loc", ()) if part not in ("body", "query"))
    message = f"{field}: {error['msg']}" if field else str(error["msg"])
    return Refusal(400, message, "invalid_value", param=field or None, extra={"code": 400} if legacy else None)


class Gate:
    """Identifies the caller of each call and checks its scope and rate."""

    def __init__(self, settings: HttpSettings, tokens: TokenStore, sessions: Sessions) -> None:
        self.settings = settings
        self.tokens = tokens
        self.sessions = sessions
        self._limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)

    def identify(self, authorization: str | None, client: str, session_id: str | None = None) -> Caller:
        """The caller, or :class:`Refusal` 401 for a token that is not (or no longer) valid, or a session cookie
        that names no open session."""
        secret = _bearer(authorization)
        if secret is None and session_id is not None:
            return self._session_caller(session_id, client)
        info = self.tokens.verify(secret) if secret is not None else None
        if info is not None:
            return Caller(info.name, frozenset(info.scopes), client)
        anonymous = self._anonymous_scopes()
        if secret is not None and not anonymous:
            raise Refusal(401, "invalid or revoked token", "invalid_token", headers={"WWW-Authenticate": "Bearer"})
        # Where anonymous calls may speak, a key that is no token is ignored: clients such as Open WebUI
        # insist on sending some API key.
        return Caller(None, anonymous, client)

    def _session_caller(self, session_id: str, client: str) -> Caller:
        session = self.sessions.get(session_id)
        info = self.tokens.verify_digest(session.token_digest) if session is not None else None
        if session is None or info is None:  # expired, logged out, the daemon restarted, or the token revoked
            if session is not None:
                self.sessions.close(session.id)
            raise Refusal(401, "the console session has expired or ended: log in again", "session_expired",
                          headers={"Set-Cookie": cookie_header("", 0)})
        return Caller(info.name, frozenset(info.scopes), client, session)

    def check_csrf(self, caller: Caller, method: str, path: str, sent: str | None) -> None:
        """:class:`Refusal` 403 for a call made with the session cookie that may change something and lacks the
        session's CSRF token."""
        if caller.session is not None and needs_csrf(method, path) and not caller.session.csrf_matches(sent):
            raise Refusal(403, f"a call made with the console's session needs its CSRF token in {CSRF_HEADER}",
                          "csrf_failed")

    def _anonymous_scopes(self) -> frozenset[str]:
        if self.settings.allow_anonymous or (self.settings.loopback and not self.tokens.any_tokens()):
            return ANONYMOUS_SCOPES
        return frozenset()

    def admit(self, caller: Caller, scope: str) -> None:
        """Raise :class:`Refusal` (401, 403 or 429) unless ``caller`` may do ``scope`` now."""
        if not caller.may(scope):
            if caller.token_name is None:
                raise Refusal(401, f"this call needs a token with the '{scope}' scope: send 'Authorization: "
                              "Bearer <token>' (gsv-edge token add)", "missing_token",
                              headers={"WWW-Authenticate": "Bearer"})
            raise Refusal(403, f"token '{caller.token_name}' lacks the '{scope}' scope", "insufficient_scope")
        self.throttle(caller)

    def throttle(self, caller: Caller) -> None:
        """:class:`Refusal` 429 when the caller (its token, else its address) calls too often."""
        key = caller.token_name or caller.client.rsplit(":", 1)[0]
        if not self._limiter.allow(key):
            retry = max(1, round(1 / self.settings.rate_limit_per_s))
            raise Refusal(429, f"too many requests from {caller.token_name or 'this address'}: at most "
                          f"{self.settings.rate_limit_per_s:g} per second", "rate_limited",
                          headers={"Retry-After": str(retry)})


def admit(http_request: HttpRequest, scope: str) -> Caller:
    """The caller of this call, allowed to do ``scope`` now (else :class:`Refusal`)."""
    caller = identify(http_request)
    http_request.app.state.gate.admit(caller, scope)
    return caller


def identify(http_request: HttpRequest) -> Caller:
    """The caller of this call, whatever it may do; :class:`Refusal` for a bad token or session, or a call made
    with the session cookie that lacks the CSRF token it needs."""
    gate: Gate = http_request.app.state.gate
    caller = gate.identify(http_request.headers.get("authorization"), peer(http_request),
                           http_request.cookies.get(COOKIE))
    http_request.state.caller = caller
    gate.check_csrf(caller, http_request.method, http_request.url.path, http_request.headers.get(CSRF_HEADER))
    return caller


def needs(scope: str, *also: str) -> Callable[[HttpRequest], Caller]:
    """A route dependency: the caller, allowed to do ``scope`` (or one of the scopes ``also``; a refusal names
    ``scope``); checked before the body is read or validated, so a stranger learns nothing from a malformed body."""

    def dependency(http_request: HttpRequest) -> Caller:
        caller = identify(http_request)
        http_request.app.state.gate.admit(caller, next((other for other in also if caller.may(other)), scope))
        return caller

    return dependency


def peer(http_request: HttpRequest) -> str:
    client = http_request.client
    return f"{client.host}:{client.port}" if client else "unknown"


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
