"""The web console's sessions over real sockets with httpx: a token exchanged for a cookie, the cookie as good as
the token (its scopes, its revocation), the CSRF token on every call that may change something, expiry, logout,
an audited refused login; and the page itself at ``/`` and ``/console/``, beside api.py's ``GET /``."""

from __future__ import annotations

import ssl
import subprocess
import time
from pathlib import Path

import httpx

from daemon.core.audit import read_records
from daemon.core.state_db import StateDb
from daemon.core.tokens import TokenStore
from daemon.protocols.http.sessions import COOKIE, CSRF_HEADER
from tests.http_fixtures import no_traceback
from tests.integration.test_http_native import error, tokens

MANY = {"rate_limit_burst": 500}


def log_in(client: httpx.Client, url: str, token_headers: dict[str, str]) -> dict:
    """The session's body; the client keeps the cookie."""
    token = token_headers["Authorization"].removeprefix("Bearer ")
    answer = client.post(f"{url}/v1/session", json={"token": token})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_token_becomes_a_session_cookie_with_its_scopes(http_daemon, tmp_path: Path) -> None:
    made = tokens(tmp_path, kiosk=["speak"], boss=["admin"])
    daemon, url = http_daemon(**MANY)
    with httpx.Client() as client:
        who = log_in(client, url, made["kiosk"])
        assert who["token_name"] == "kiosk" and who["scopes"] == ["speak"] and len(who["csrf_token"]) >= 32
        assert who["expires_at"] > time.time() + 43000  # http.session_s: twelve hours
        cookie = client.cookies[COOKIE]
        assert cookie and cookie not in made["kiosk"]["Authorization"]  # the token is never the cookie
        assert client.get(f"{url}/v1/session").json() == who
        assert client.get(f"{url}/v1/status").status_code == 200
        assert error(client.get(f"{url}/v1/events"), 403)["code"] == "insufficient_scope"
        csrf = {CSRF_HEADER: who["csrf_token"]}
        assert error(client.delete(f"{url}/v1/voices/tone-a", headers=csrf), 403)["code"] == "insufficient_scope"

        said = client.post(f"{url}/v1/say", json={"id": "c1", "text": "Hi.", "output": "response"}, headers=csrf)
        assert said.status_code == 202, said.text
        daemon.wait_event("c1", "done")
        audio = client.get(f"{url}/v1/requests/c1/audio")  # what an <audio> element asks: no header
        assert audio.status_code == 200 and audio.content.startswith(b"RIFF")
        assert httpx.get(f"{url}/v1/requests/c1", headers=made["kiosk"]).status_code == 200  # the token's own

    with httpx.Client() as admin:
        log_in(admin, url, made["boss"])
        with admin.stream("GET", f"{url}/v1/events") as stream:
            assert stream.status_code == 200 and next(stream.iter_lines()).startswith(":")
    [row] = [r for r in read_records(daemon.service.settings.state_dir) if r["request_id"] == "c1"]
    assert row["token_name"] == "kiosk" and row["outcome"] == "done"


def test_the_cookie_alone_changes_nothing(http_daemon, tmp_path: Path) -> None:
    made = tokens(tmp_path, boss=["admin"])
    daemon, url = http_daemon(**MANY)
    with httpx.Client() as client:
        who = log_in(client, url, made["boss"])
        for call in (lambda h: client.post(f"{url}/v1/say", json={"text": "Hi."}, headers=h),
                     lambda h: client.delete(f"{url}/v1/voices/tone-a", headers=h),
                     lambda h: client.delete(f"{url}/v1/session", headers=h)):
            for headers in ({}, {CSRF_HEADER: "guessed"}, {CSRF_HEADER: who["csrf_token"][:-1]}):
                refused = error(call(headers), 403)
                assert refused["code"] == "csrf_failed" and CSRF_HEADER in refused["message"]
        # api_v2's GET /tts speaks: outside /v1/ a GET with the cookie needs the token too
        tts = client.get(f"{url}/tts", params={"text": "Hi.", "text_lang": "en", "ref_audio_path": "tone-a",
                                               "prompt_lang": "en"})
        assert tts.status_code == 403 and "CSRF" in tts.json()["message"]
        no_traceback(tts)
        assert client.get(f"{url}/v1/session").json()["token_name"] == "boss"  # still logged in
    refusals = [r for r in read_records(daemon.service.settings.state_dir) if r["outcome"] == "rejected"]
    assert len(refusals) == 10 and all(r["reason"].startswith("403: a call made with the console's session")
                                       for r in refusals)
    assert {r["token_name"] for r in refusals} == {"boss"} and refusals[0]["topic"] == "POST /v1/say"


def test_logout_expiry_and_revocation_end_a_session(http_daemon, tmp_path: Path) -> None:
    made = tokens(tmp_path, boss=["admin"], kiosk=["speak"])
    _, url = http_daemon(session_s=1, **MANY)
    with httpx.Client() as client:
        who = log_in(client, url, made["boss"])
        cookie = client.cookies[COOKIE]
        out = client.delete(f"{url}/v1/session", headers={CSRF_HEADER: who["csrf_token"]})
        assert out.status_code == 204 and "Max-Age=0" in out.headers["set-cookie"] and COOKIE not in client.cookies
        ended = error(httpx.get(f"{url}/v1/status", cookies={COOKIE: cookie}), 401)
        assert ended["code"] == "session_expired" and "log in again" in ended["message"]

        log_in(client, url, made["kiosk"])
        cookie = client.cookies[COOKIE]
        time.sleep(1.2)  # http.session_s; the browser forgets the cookie then too (its Max-Age), the box knows why
        expired = httpx.get(f"{url}/v1/status", cookies={COOKIE: cookie})
        assert error(expired, 401)["code"] == "session_expired" and "Max-Age=0" in expired.headers["set-cookie"]

        log_in(client, url, made["kiosk"])
        db = StateDb.in_dir(tmp_path / "state")
        TokenStore(db).revoke("kiosk")
        db.close()
        assert error(client.get(f"{url}/v1/status"), 401)["code"] == "session_expired"


def test_a_refused_login_is_audited_and_a_bearer_token_wins_over_a_cookie(http_daemon, tmp_path: Path) -> None:
    made = tokens(tmp_path, kiosk=["speak"])
    daemon, url = http_daemon(**MANY)
    refused = error(httpx.post(f"{url}/v1/session", json={"token": "gsv_not-a-token"}), 401)
    assert refused["code"] == "invalid_token" and refused["param"] == "token"
    assert error(httpx.post(f"{url}/v1/session", json={}), 400)["param"] == "token"
    as_form = httpx.post(f"{url}/v1/session", data={"token": made["kiosk"]["Authorization"][7:]})
    assert error(as_form, 400)["code"] == "invalid_json"  # another page's form cannot log a browser in
    assert error(httpx.post(f"{url}/v1/session", content=b"{", headers={"content-type": "application/json"}),
                 400)["code"] == "invalid_json"
    [row, *_] = [r for r in read_records(daemon.service.settings.state_dir) if r["outcome"] == "rejected"]
    assert (row["protocol"], row["topic"], row["reason"]) == ("http", "POST /v1/session",
                                                              "401: invalid or revoked token")
    assert row["client"].startswith("127.0.0.1:")

    stale = {COOKIE: "no-such-session"}
    assert httpx.get(f"{url}/v1/status", headers=made["kiosk"], cookies=stale).status_code == 200
    assert error(httpx.get(f"{url}/v1/status", cookies=stale), 401)["code"] == "session_expired"
    anonymous = httpx.get(f"{url}/v1/session").json()  # no token, none asked for: what it may do (nothing here)
    assert anonymous == {"token_name": None, "scopes": [], "csrf_token": None, "expires_at": None}


def test_the_console_is_served_at_the_root_beside_api_py(http_daemon) -> None:
    _, url = http_daemon()
    bare = httpx.get(f"{url}/")
    assert bare.status_code == 303 and bare.headers["location"] == "/console/"
    assert httpx.get(f"{url}/console").headers["location"] == "/console/"
    page = httpx.get(f"{url}/", follow_redirects=True)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<script src=\"console.js\"" in page.text and "//" not in page.text  # no URL of anywhere else
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    for name, kind in (("console.js", "text/javascript"), ("console.css", "text/css"),
                       ("lang/en.json", "application/json")):
        served = httpx.get(f"{url}/console/{name}")
        assert served.status_code == 200 and served.headers["content-type"].startswith(kind), name
    assert httpx.get(f"{url}/console/../pyproject.toml").status_code == 404
    assert httpx.get(f"{url}/console/nothing.js").status_code == 404
    legacy = httpx.get(f"{url}/", params={"text": "Hello.", "text_language": "en"}, timeout=30)
    assert legacy.status_code == 200 and legacy.headers["content-type"] == "audio/wav"  # api.py's, as before
    assert httpx.get(f"{url}/", params={"text_language": "en"}).json()["message"] == "text is required"
    fresh = httpx.get(f"{url}/v1/session").json()  # no token yet, on loopback: the console may speak unasked
    assert fresh["token_name"] is None and fresh["scopes"] == ["speak"] and fresh["csrf_token"] is None


def test_the_cookie_is_secure_under_tls(http_daemon, tmp_path: Path) -> None:
    made = tokens(tmp_path, kiosk=["speak"])
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=box",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    _, url = http_daemon(tls_cert_file=str(cert), tls_key_file=str(key))
    trusted = ssl.create_default_context(cafile=str(cert))
    answer = httpx.post(f"{url}/v1/session", json={"token": made["kiosk"]["Authorization"][7:]}, verify=trusted)
    cookie = answer.headers["set-cookie"]
    assert answer.status_code == 200 and "; Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
