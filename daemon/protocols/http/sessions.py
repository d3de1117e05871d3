"""Web console sessions: a token exchanged once for a cookie, kept in memory until it expires or is ended.

The browser never keeps the token: ``POST /v1/session`` checks it and sets an HttpOnly, SameSite=Strict cookie
(Secure under TLS) holding a random session id. A session keeps the token's digest, not the token; the gate
checks that digest against the token table on every call, so a session has its token's scopes and a revoked
token ends its sessions at once. Each session has a CSRF token, which the page sends in ``X-CSRF-Token``: a call
made with the cookie alone (what a browser attaches to a form or link of another page on the same site) may only
read ``/v1/`` (``GET``, as ``<audio>``, ``EventSource`` and a download link ask), never change anything. Sessions
live in memory: a restart logs everyone out.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

COOKIE = "gsv_session"
CSRF_HEADER = "X-CSRF-Token"
MAX_SESSIONS = 1000  # beyond this the session closest to its end goes first
READ_METHODS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True)
class Session:
    id: str
    csrf: str  # sent back by the page in CSRF_HEADER
    token_digest: str  # the SHA-256 of the token it was opened with (daemon.core.tokens.digest)
    expires_at: float  # Unix seconds

    def csrf_matches(self, sent: str | None) -> bool:
        return sent is not None and hmac.compare_digest(sent.encode(), self.csrf.encode())


def needs_csrf(method: str, path: str) -> bool:
    """A call made with the session cookie must carry the CSRF token, unless it only reads ``/v1/``."""
    return method not in READ_METHODS or not path.startswith("/v1/")


def cookie_header(session_id: str, max_age_s: int, secure: bool = False) -> str:
    """The ``Set-Cookie`` value carrying ``session_id`` (an empty one with no age: the browser forgets it)."""
    return f"{COOKIE}={session_id}; Max-Age={max_age_s}; Path=/; HttpOnly; SameSite=Strict" + ("; Secure" * secure)


class Sessions:
    """Open sessions by id; safe from the server's event loop and the threads handlers run in."""

    def __init__(self, lifetime_s: float, clock: Callable[[], float] = time.time) -> None:
        self.lifetime_s = lifetime_s
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def open(self, token_digest: str) -> Session:
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), token_digest,
                          self._clock() + self.lifetime_s)
        with self._lock:
            self._prune()
            if len(self._sessions) >= MAX_SESSIONS:
                del self._sessions[min(self._sessions.values(), key=lambda s: s.expires_at).id]
            self._sessions[session.id] = session
        return session

    def get(self, session_id: str) -> Session | None:
        """The session, or None when there is none by that id or it has expired (it is then forgotten)."""
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None and session.expires_at <= self._clock():
                del self._sessions[session_id]
                return None
            return session

    def close(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def _prune(self) -> None:
        now = self._clock()
        for session_id in [s.id for s in self._sessions.values() if s.expires_at <= now]:
            del self._sessions[session_id]
