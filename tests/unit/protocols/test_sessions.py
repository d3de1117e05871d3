"""Console sessions on their own: expiry, logout, the cap, and which calls need the CSRF token."""

from __future__ import annotations

import pytest

from daemon.protocols.http.sessions import MAX_SESSIONS, Sessions, cookie_header, needs_csrf


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_lasts_its_lifetime_then_is_forgotten() -> None:
    clock = Clock()
    sessions = Sessions(60, clock)
    session = sessions.open("digest")
    assert session.expires_at == 1060 and session.token_digest == "digest"
    assert session.id != session.csrf and len(session.id) >= 32
    clock.now = 1059.9
    assert sessions.get(session.id) == session
    clock.now = 1060
    assert sessions.get(session.id) is None and len(sessions) == 0
    assert sessions.get("no such id") is None


def test_closing_ends_a_session_and_the_oldest_goes_beyond_the_cap() -> None:
    clock = Clock()
    sessions = Sessions(60, clock)
    first = sessions.open("a")
    second = sessions.open("b")
    sessions.close(first.id)
    assert sessions.get(first.id) is None and sessions.get(second.id) == second
    sessions.close("never opened")  # nothing to do
    clock.now += 1
    opened = [sessions.open(str(n)) for n in range(MAX_SESSIONS)]
    assert len(sessions) == MAX_SESSIONS and sessions.get(second.id) is None  # it ended soonest
    assert sessions.get(opened[0].id) == opened[0]


def test_the_csrf_token_is_compared_whole() -> None:
    session = Sessions(60).open("a")
    assert session.csrf_matches(session.csrf)
    assert not session.csrf_matches(None) and not session.csrf_matches("") and not session.csrf_matches(
        session.csrf[:-1])


@pytest.mark.parametrize(("method", "path", "needed"), [
    ("GET", "/v1/status", False), ("HEAD", "/v1/requests/x/audio", False), ("GET", "/v1/events", False),
    ("POST", "/v1/say", True), ("DELETE", "/v1/session", True), ("DELETE", "/v1/voices/a", True),
    ("GET", "/tts", True), ("GET", "/control", True), ("GET", "/", True),  # api_v2's and api.py's GETs speak
])
def test_only_reads_under_v1_go_without_the_csrf_token(method: str, path: str, needed: bool) -> None:
    assert needs_csrf(method, path) is needed


def test_the_cookie_is_http_only_and_strict() -> None:
    assert cookie_header("abc", 60) == "gsv_session=abc; Max-Age=60; Path=/; HttpOnly; SameSite=Strict"
    assert cookie_header("abc", 60, secure=True).endswith("; SameSite=Strict; Secure")
    assert cookie_header("", 0).startswith("gsv_session=; Max-Age=0;")
