"""Transport security and intake limits against a real mosquitto: TLS with certificates made here by
``openssl``, password authentication (``mosquitto_passwd``), a refused login that is retried, and
payload size, rate and name limits."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from daemon.app.service import Service
from daemon.config import load_settings
from tests.conftest import MOSQUITTO, Broker, Recorder, to_toml
from tests.doubles import ToneEngine

USER, PASSWORD = "announcer", "s3cret-pass"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(directory: Path) -> dict[str, Path]:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    directory.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
             "-days", "2", "-subj", "/CN=gsv-edge test CA", cwd=directory)
    (directory / "server.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name, subject in (("server", "/CN=127.0.0.1"), ("client", "/CN=gsv-edge-client")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", subject, cwd=directory)
        extra = ["-extfile", "server.ext"] if name == "server" else []
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "2", *extra, cwd=directory)
    return {name: directory / name for name in
            ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")}


class SecureBroker(Broker):
    """mosquitto with one TLS listener, password authentication and optionally client certificates."""

    def __init__(self, directory: Path, certs: dict[str, Path], require_certificate: bool = False) -> None:
        super().__init__(directory)
        self.passwords = directory / "passwords"
        subprocess.run(["mosquitto_passwd", "-c", "-b", str(self.passwords), USER, PASSWORD], check=True,
                       capture_output=True)
        self._conf.write_text(
            f"listener {self.port} {self.host}\n"
            f"cafile {certs['ca.crt']}\ncertfile {certs['server.crt']}\nkeyfile {certs['server.key']}\n"
            f"require_certificate {'true' if require_certificate else 'false'}\n"
            f"allow_anonymous false\npassword_file {self.passwords}\npersistence false\n"
            + ("user root\n" if os.geteuid() == 0 else "")
        )

    def reload(self) -> None:
        """SIGHUP: mosquitto re-reads its password file."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGHUP)


def tls_client(broker: Broker, certs: dict[str, Path], client_cert: bool = False) -> Recorder:
    recorder = Recorder.__new__(Recorder)
    import threading

    recorder.messages = []
    recorder._cond = threading.Condition()
    recorder._subscribed = threading.Event()
    recorder.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}")
    recorder.client.tls_set(
        ca_certs=str(certs["ca.crt"]),
        certfile=str(certs["client.crt"]) if client_cert else None,
        keyfile=str(certs["client.key"]) if client_cert else None,
    )
    recorder.client.username_pw_set(USER, PASSWORD)
    recorder.client.on_message = recorder._on_message
    recorder.client.on_subscribe = lambda *_: recorder._subscribed.set()
    recorder.client.connect(broker.host, broker.port)
    recorder.client.loop_start()
    return recorder


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, Path]:
    if shutil.which("openssl") is None or shutil.which("mosquitto_passwd") is None or not os.path.exists(MOSQUITTO):
        pytest.skip("needs openssl, mosquitto and mosquitto_passwd")
    return make_certificates(tmp_path / "pki")


@pytest.fixture
def services() -> Iterator[list[Service]]:
    running: list[Service] = []
    yield running
    for service in running:
        service.stop()


def _service(tmp_path: Path, broker: Broker, mqtt_section: dict[str, Any], **sections: Any) -> Service:
    node_id = f"s{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{node_id}.toml"
    mqtt_all = {"host": broker.host, "port": broker.port, "node_id": node_id, "reconnect_min_s": 0.1,
                "reconnect_max_s": 0.5, **mqtt_section}
    path.write_text(f'state_dir = "{tmp_path / "state"}"\n' + to_toml({"mqtt": mqtt_all, **sections}))
    return Service(load_settings(path), engine=ToneEngine(seconds=0.05))


@pytest.mark.parametrize("client_cert", [False, True], ids=["server-cert", "mutual-tls"])
def test_tls_and_password(tmp_path: Path, certs: dict[str, Path], services: list[Service], client_cert: bool) -> None:
    broker = SecureBroker(tmp_path, certs, require_certificate=client_cert)
    broker.start()
    try:
        tls = {"tls_ca_file": str(certs["ca.crt"]), "username": USER, "password": PASSWORD}
        if client_cert:
            tls.update(tls_cert_file=str(certs["client.crt"]), tls_key_file=str(certs["client.key"]))
        service = _service(tmp_path, broker, tls)
        services.append(service)
        service.start()
        assert service.mqtt.ready.wait(10), "no TLS connection"
        client = tls_client(broker, certs, client_cert)
        base = service.mqtt.topics.base
        client.subscribe(f"{base}/events")
        client.publish(f"{base}/say", json.dumps({"id": "over-tls", "text": "Encrypted."}))
        client.wait_for(f"{base}/events", lambda m: m.json()["event"] == "done")
        client.close()
    finally:
        broker.stop()


def test_plain_mqtt_client_cannot_talk_to_the_tls_listener(tmp_path: Path, certs: dict[str, Path]) -> None:
    broker = SecureBroker(tmp_path, certs)
    broker.start()
    try:
        client = mqtt.Client(CallbackAPIVersion.VERSION2)
        client.username_pw_set(USER, PASSWORD)
        accepted = []
        client.on_connect = lambda _c, _u, _f, reason, _p: accepted.append(not reason.is_failure)
        try:
            client.connect(broker.host, broker.port, keepalive=5)
        except OSError:
            return  # refused outright
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            client.loop(0.1)
        assert not any(accepted), "a plain-text client got a session on the TLS listener"
    finally:
        broker.stop()


def test_wrong_password_is_logged_clearly_and_retried(
    tmp_path: Path, certs: dict[str, Path], services: list[Service], caplog: pytest.LogCaptureFixture
) -> None:
    broker = SecureBroker(tmp_path, certs)
    broker.start()
    try:
        creds = {"tls_ca_file": str(certs["ca.crt"]), "username": "latecomer", "password": "not-yet"}
        service = _service(tmp_path, broker, creds)
        services.append(service)
        with caplog.at_level(logging.ERROR, logger="daemon.protocols.mqtt"):
            service.start()
            deadline = time.monotonic() + 10
            while not any("refused the connection" in r.message for r in caplog.records):
                assert time.monotonic() < deadline, "no log line for the refused login"
                time.sleep(0.05)
        refused = next(r.message for r in caplog.records if "refused the connection" in r.message)
        assert "check mqtt.username (latecomer) and mqtt.password" in refused and "retrying" in refused
        assert "not-yet" not in refused  # never the secret itself
        assert not service.mqtt.ready.is_set()
        subprocess.run(["mosquitto_passwd", "-b", str(broker.passwords), "latecomer", "not-yet"], check=True)
        broker.reload()  # the account now exists: the daemon's next retry gets in
        assert service.mqtt.ready.wait(15), "the daemon did not retry after the refused login"
    finally:
        broker.stop()


# -- intake limits (plain broker from conftest) -----------------------------------------------------


def test_oversized_payload_is_refused_unread(start_daemon: Any, recorder: Recorder) -> None:
    daemon = start_daemon(synth=ToneEngine(seconds=0.05), queue={"max_payload_bytes": 1024})
    daemon.say(json.dumps({"id": "huge", "text": "x" * 2000}))
    rejected = daemon.wait_event(None, "rejected")
    assert "payload too large (2" in rejected["reason"] and "> 1024 bytes" in rejected["reason"]
    daemon.say({"id": "small", "text": "Fine."})
    daemon.wait_event("small", "done")


def test_rate_limit_per_topic(start_daemon: Any, recorder: Recorder) -> None:
    daemon = start_daemon(synth=ToneEngine(seconds=0.01), queue={"rate_limit_per_s": 2, "rate_limit_burst": 3})
    for n in range(6):
        daemon.say({"id": f"flood-{n}", "text": "Flood."})
    deadline = time.monotonic() + 10
    while len([e for e in daemon.events() if e["event"] in ("queued", "rejected")]) < 6:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    limited = [e for e in daemon.events() if e["event"] == "rejected"]
    assert len(limited) >= 2 and all("rate limit" in e["reason"] for e in limited)
    time.sleep(1.1)  # tokens come back
    daemon.say({"id": "later", "text": "Later."})
    daemon.wait_event("later", "done")


def test_rate_limited_requests_are_refused_by_name(start_daemon: Any, recorder: Recorder) -> None:
    """Each refusal names its request, and a refused Hermes say still gets its error and sayFinished."""
    recorder.subscribe("hermes/#")
    daemon = start_daemon(synth=ToneEngine(seconds=0.01), queue={"rate_limit_per_s": 0.01, "rate_limit_burst": 1},
                          hermes={"play_finished_margin_s": 0})
    daemon.say({"id": "first", "text": "Allowed."})
    daemon.say({"id": "flood", "text": "Refused."})
    assert "rate limit" in daemon.wait_event("flood", "rejected")["reason"]
    for n in range(2):
        body = {"text": "Hermes.", "id": f"h-{n}", "siteId": "hall", "sessionId": f"s-{n}"}
        recorder.publish("hermes/tts/say", json.dumps(body))
    finished = recorder.wait_for("hermes/tts/sayFinished", lambda m: m.json()["id"] == "h-1").json()
    assert (finished["siteId"], finished["sessionId"]) == ("hall", "s-1")
    error = recorder.wait_for("hermes/error/tts").json()
    assert error["context"] == "h-1" and "rate limit" in error["error"] and error["sessionId"] == "s-1"
    assert daemon.wait_event("h-1", "rejected")["source"] == "hermes"
    assert not [e for e in daemon.events() if e["event"] == "rejected" and e["id"] is None]


@pytest.mark.parametrize("bad", ["a+b", "a#b", "a/b", "..", "a\u0000b", "../../etc/passwd"])
def test_ids_and_voices_that_would_break_topics_or_paths(start_daemon: Any, recorder: Recorder, bad: str) -> None:
    daemon = start_daemon(synth=ToneEngine(seconds=0.05))
    recorder.subscribe("hermes/#")
    daemon.say({"id": bad, "text": "Hi."})
    assert "id " in daemon.wait_event(bad[:128], "rejected")["reason"]
    recorder.clear()
    daemon.say({"id": "v", "text": "Hi.", "voice": bad})
    assert "voice" in daemon.wait_event("v", "rejected")["reason"]
    recorder.clear()
    recorder.publish("hermes/tts/say", json.dumps({"text": "Hi.", "siteId": bad, "id": "h"}))
    assert "siteId" in recorder.wait_for("hermes/error/tts").json()["error"]
    assert not recorder.on("hermes/audioServer/#")
    assert not list((Path(daemon.service.settings.state_dir)).rglob("*passwd*"))
