"""The box's configuration over HTTP with httpx against a real daemon: the model bundle's manifest, the effective
settings with where each value came from, and the safe reload, for an admin only."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from daemon.app.reload import Reloader
from daemon.model.bundle import Bundle
from daemon.model.engine import Engine
from daemon.model.hardware import HardwareProfile
from tests.integration.test_http_native import error, tokens

ROUTES = [("GET", "/v1/model"), ("GET", "/v1/settings"), ("POST", "/v1/reload")]


def settings_of(url: str, headers: dict[str, str]) -> dict[str, dict]:
    """``GET /v1/settings`` as key -> its row."""
    answer = httpx.get(f"{url}/v1/settings", headers=headers)
    assert answer.status_code == 200, answer.text
    return {row["key"]: row for row in answer.json()["settings"]}


@pytest.mark.parametrize(("method", "route"), ROUTES)
def test_only_an_admin_sees_or_reloads_the_configuration(http_daemon, tmp_path: Path, method: str,
                                                         route: str) -> None:
    made = tokens(tmp_path, boss=["admin"], kiosk=["speak"], curator=["voices"])
    _, url = http_daemon()
    for name in ("kiosk", "curator"):
        refused = error(httpx.request(method, f"{url}{route}", headers=made[name]), 403)
        assert refused["code"] == "insufficient_scope"
        assert refused["message"] == f"token '{name}' lacks the 'admin' scope"
    assert error(httpx.request(method, f"{url}{route}"), 401)["code"] == "missing_token"
    assert httpx.request(method, f"{url}{route}", headers=made["boss"]).status_code in (200, 409)


def test_settings_say_where_each_value_came_from_and_mask_secrets(http_daemon, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    made = tokens(tmp_path, boss=["admin"])
    monkeypatch.setenv("GSV_EDGE_QUEUE__MAX_TEXT_CHARS", "1234")
    daemon, url = http_daemon(sections={"mqtt": {"username": "box", "password": "hunter2"},
                                        "queue": {"max_text_chars": 99, "max_depth": 7}})
    answer = httpx.get(f"{url}/v1/settings", headers=made["boss"])
    assert answer.status_code == 200, answer.text
    assert "hunter2" not in answer.text
    body = answer.json()
    assert body["config_file"] == str(daemon.service.settings.config_file) and body["config_file"].endswith(".toml")
    rows = {row["key"]: row for row in body["settings"]}
    assert rows["mqtt.password"] == {"key": "mqtt.password", "value": "********", "source": "file"}
    assert rows["mqtt.username"] == {"key": "mqtt.username", "value": "box", "source": "file"}
    assert rows["queue.max_text_chars"] == {"key": "queue.max_text_chars", "value": 1234, "source": "environment"}
    assert rows["state_dir"] == {"key": "state_dir", "value": str(tmp_path / "state"), "source": "environment"}
    assert rows["queue.max_depth"]["value"] == 7 and rows["queue.max_depth"]["source"] == "file"
    assert rows["queue.drain_s"] == {"key": "queue.drain_s", "value": 10.0, "source": "default"}
    assert rows["http.cors_origins"] == {"key": "http.cors_origins", "value": [], "source": "default"}
    assert rows["engine.stream_chunk_tokens"]["value"] == 0  # a word in its name is no secret's
    assert rows["mqtt.tls_key_file"]["value"] is None and rows["mqtt.tls_key_file"]["source"] == "default"
    assert set(rows) == set(daemon.service.settings.keys()) and len(rows) == len(body["settings"])


def test_reload_reports_switched_in_or_refused_with_the_reason(http_daemon, tmp_path: Path) -> None:
    made = tokens(tmp_path, boss=["admin"])
    daemon, url = http_daemon()
    not_served = error(httpx.post(f"{url}/v1/reload", headers=made["boss"]), 409)
    assert not_served == {"message": "reload refused: this daemon was not started by gsv-edge serve",
                          "type": "invalid_request_error", "param": None, "code": "reload_refused"}

    service = daemon.service
    config = service.settings.config_file
    assert config is not None
    service.reload_hook = Reloader(service, config).reload  # as gsv-edge serve wires it
    assert settings_of(url, made["boss"])["queue.max_text_chars"]["source"] == "default"
    config.write_text(config.read_text() + "\n[queue]\nmax_text_chars = 77\n")
    reloaded = httpx.post(f"{url}/v1/reload", headers=made["boss"], timeout=60)
    assert reloaded.status_code == 200, reloaded.text
    assert reloaded.json() == {"reloaded": True,
                               "message": f"reloaded: engine {service.engine.name}; changed queue.max_text_chars"}
    row = settings_of(url, made["boss"])["queue.max_text_chars"]
    assert (row["value"], row["source"]) == (77, "file")  # the switched-in value, described by the file it came from

    config.write_text(config.read_text() + "\n[queue\n")
    refused = error(httpx.post(f"{url}/v1/reload", headers=made["boss"], timeout=60), 409)
    assert refused["code"] == "reload_refused"
    assert refused["message"].startswith("reload refused, still serving the previous configuration: config file ")
    assert "is not valid TOML" in refused["message"]
    assert settings_of(url, made["boss"])["queue.max_text_chars"]["value"] == 77


def test_reload_with_the_console_s_session_needs_its_csrf_token(http_daemon, tmp_path: Path) -> None:
    made = tokens(tmp_path, boss=["admin"])
    _, url = http_daemon()
    with httpx.Client(base_url=url) as browser:
        session = browser.post("/v1/session", json={"token": made["boss"]["Authorization"].removeprefix("Bearer ")})
        assert session.status_code == 200, session.text
        assert browser.get("/v1/settings").status_code == 200  # reading needs no CSRF token
        forged = error(browser.post("/v1/reload"), 403)
        assert forged["code"] == "csrf_failed"
        refused = error(browser.post("/v1/reload", headers={"X-CSRF-Token": session.json()["csrf_token"]}), 409)
        assert refused["code"] == "reload_refused"


def test_the_model_is_the_bundle_s_manifest_as_its_file_has_it(http_daemon, demo_bundle: Path,
                                                               tmp_path: Path) -> None:
    made = tokens(tmp_path, boss=["admin"])
    engine = Engine(Bundle.load(demo_bundle), HardwareProfile.load("x86-cpu"), tmp_path / "voices")
    _, url = http_daemon(engine)
    answer = httpx.get(f"{url}/v1/model", headers=made["boss"])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["bundle"]["manifest"] == json.loads((demo_bundle / "manifest.json").read_text())
    assert body["bundle"]["path"] == str(demo_bundle) and body["bundle"]["digest"] == Bundle.load(demo_bundle).digest
    assert body["engine"]["engine_state"] == "ready" and body["engine"]["model"] == engine.name
    assert body["engine"]["provider"] == "CPUExecutionProvider"


def test_without_a_bundle_the_model_says_the_fallback_speaks(http_daemon, tmp_path: Path) -> None:
    made = tokens(tmp_path, boss=["admin"])
    broken = tmp_path / "bad-bundle"
    broken.mkdir()
    _, url = http_daemon(engine_section={"bundle": str(broken)})
    body = httpx.get(f"{url}/v1/model", headers=made["boss"]).json()
    assert body["bundle"] is None and body["configured_bundle"] == str(broken)
    assert body["engine"]["engine_state"] == "degraded" and "bad-bundle" in body["engine"]["engine_error"]
    assert body["engine"]["model"] == body["engine"]["fallback"]

    _, plain = http_daemon(engine_section={})
    body = httpx.get(f"{plain}/v1/model", headers=made["boss"]).json()
    assert body["bundle"] is None and body["configured_bundle"] is None
    assert body["engine"]["engine_state"] == "fallback-only" and body["engine"]["engine_error"] is None
