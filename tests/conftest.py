"""Fixtures for the daemon tests: a real mosquitto, a recording MQTT client, daemons built from a
generated config file, and ALSA file devices that capture what the daemon plays."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from daemon.app.service import Service
from daemon.config import load_settings
from daemon.speech.synthesizer import Synthesizer

# Shared fixtures live in their own modules and are registered here, once: a fixture imported into several
# test modules is a separate fixture in each, so a session-scoped one would be built once per module.
pytest_plugins = ["tests.demo_fixtures", "tests.http_fixtures"]

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


# A test is an integration test when it lives in tests/integration/, needs a broker (directly or through a
# daemon), or runs the torch converter (exports graphs from checkpoints: the converter's own tests, the model
# graphs' golden parity, and tests marked ``converter``). ``pytest -m "not integration"`` is then the quick run of
# the daemon's units, the fuzzers and the front end's golden phones; ``-m converter`` runs the converter's tests.
BROKER_FIXTURES = {"mosquitto_broker", "recorder", "start_daemon", "daemon_process"}
CONVERTER_PATHS = ("tests/unit/quantize/", "tests/golden/test_golden.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = config.rootpath
    for item in items:
        where = item.path.relative_to(root).as_posix()
        if where.startswith(CONVERTER_PATHS):
            item.add_marker(pytest.mark.converter)
        needs_broker = BROKER_FIXTURES & set(getattr(item, "fixturenames", ()))
        if "integration" in item.path.parts or needs_broker or item.get_closest_marker("converter"):
            item.add_marker(pytest.mark.integration)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Broker:
    """A private mosquitto on 127.0.0.1 and a free port, from a generated config (no persistence)."""

    def __init__(self, directory: Path) -> None:
        self.host = "127.0.0.1"
        self.port = _free_port()
        self._conf = directory / "mosquitto.conf"
        self._conf.write_text(f"listener {self.port} {self.host}\nallow_anonymous true\npersistence false\n")
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self._conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self._proc.kill()
                    stderr = self._proc.stderr.read().decode() if self._proc.stderr else ""
                    raise RuntimeError(f"mosquitto did not start: {stderr}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            self._proc = None


@pytest.fixture
def mosquitto_broker(tmp_path: Path) -> Iterator[Broker]:
    if not os.path.exists(MOSQUITTO):
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    broker = Broker(tmp_path)
    broker.start()
    yield broker
    broker.stop()


@dataclass
class Message:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


class Recorder:
    """An MQTT client that records everything on its subscriptions and can wait for a message."""

    def __init__(self, broker: Broker) -> None:
        self.messages: list[Message] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def _on_message(self, _client: Any, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(Message(msg.topic, msg.payload, bool(msg.retain)))
            self._cond.notify_all()

    def subscribe(self, *topics: str) -> None:
        self._subscribed.clear()
        self.client.subscribe([(topic, 1) for topic in topics])
        assert self._subscribed.wait(5), "no SUBACK"

    def publish(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def clear(self) -> None:
        with self._cond:
            self.messages.clear()

    def on(self, topic_filter: str) -> list[Message]:
        with self._cond:
            return [m for m in self.messages if mqtt.topic_matches_sub(topic_filter, m.topic)]

    def wait_for(
        self, topic_filter: str, predicate: Callable[[Message], bool] = lambda m: True, timeout: float = 15
    ) -> Message:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for msg in self.messages:
                    if mqtt.topic_matches_sub(topic_filter, msg.topic) and predicate(msg):
                        return msg
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(m.topic, m.payload[:200]) for m in self.messages]
                    raise AssertionError(f"nothing on {topic_filter} matched within {timeout}s; saw {seen}")
                self._cond.wait(left)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def recorder(mosquitto_broker: Broker) -> Iterator[Recorder]:
    rec = Recorder(mosquitto_broker)
    yield rec
    rec.close()


def to_toml(config: dict[str, Any]) -> str:
    """Enough TOML for test configs: tables (or arrays of tables, ``[[zones]]``) of strings, numbers, booleans,
    lists of strings and inline tables."""
    lines = []
    for section, tables in config.items():
        for values in tables if isinstance(tables, list) else [tables]:
            lines.append(f"[[{section}]]" if isinstance(tables, list) else f"[{section}]")
            lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):  # an inline table
        return "{" + ", ".join(f"{json.dumps(key)} = {_toml_value(item)}" for key, item in value.items()) + "}"
    return json.dumps(value)


class Daemon:
    """A daemon under test, plus helpers to talk to it through the recorder."""

    def __init__(self, service: Service, recorder: Recorder) -> None:
        self.service = service
        self.topics = service.mqtt.topics
        self.recorder = recorder

    def say(self, payload: dict[str, Any] | str | bytes) -> None:
        self.recorder.publish(self.topics.say, json.dumps(payload) if isinstance(payload, dict) else payload)

    def events(self, request_id: str | None = None) -> list[dict[str, Any]]:
        found = [m.json() for m in self.recorder.on(self.topics.events)]
        return [e for e in found if request_id is None or e["id"] == request_id]

    def wait_event(self, request_id: str | None, event: str, timeout: float = 15, **match: Any) -> dict[str, Any]:
        def wanted(msg: Message) -> bool:
            data = msg.json()
            return (
                data["id"] == request_id and data["event"] == event and all(data.get(k) == v for k, v in match.items())
            )

        return self.recorder.wait_for(self.topics.events, wanted, timeout).json()


@pytest.fixture
def start_daemon(
    mosquitto_broker: Broker, recorder: Recorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Daemon]]:
    """Start an in-process daemon from a generated config file; its node id is unique per call.

    ``synth``/``fallback`` replace the engines; keyword sections (``audio={...}``) go into the file.
    """
    services: list[Service] = []
    monkeypatch.setenv("GSV_EDGE_STATE_DIR", str(tmp_path / "state"))

    def start(
        synth: Synthesizer | None = None, fallback: Synthesizer | None = None, **sections: Any
    ) -> Daemon:
        node_id = f"t{uuid.uuid4().hex[:10]}"
        mqtt_section = {
            "host": mosquitto_broker.host,
            "port": mosquitto_broker.port,
            "node_id": node_id,
            "reconnect_min_s": 0.1,
            "reconnect_max_s": 1.0,
            **sections.pop("mqtt", {}),
        }
        path = tmp_path / f"{node_id}.toml"
        path.write_text(to_toml({"mqtt": mqtt_section, **sections}))
        service = Service(load_settings(path), engine=synth, fallback=fallback)
        daemon = Daemon(service, recorder)
        recorder.subscribe(f"{daemon.topics.base}/#")
        service.start()
        services.append(service)
        assert service.mqtt.ready.wait(10), "daemon did not subscribe"
        return daemon

    yield start
    for service in services:
        service.stop()


# -- captured playback ------------------------------------------------------------------------------


class AlsaCapture:
    """ALSA ``file`` devices (defined in an asoundrc) whose audio lands in files the test reads back.

    ``gsvtest`` always works; ``gsvbroken`` fails with an I/O error until ``repair()`` creates the
    directory its file goes to. Each opened stream writes its own file (``truncate false``).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.good = root / "good"
        self.broken = root / "broken"
        self.good.mkdir()

    def reset(self) -> None:
        shutil.rmtree(self.good)
        self.good.mkdir()
        shutil.rmtree(self.broken, ignore_errors=True)

    def repair(self) -> None:
        self.broken.mkdir(exist_ok=True)

    @staticmethod
    def streams(directory: Path) -> list[np.ndarray]:
        """Float32 samples of each non-empty stream, in the order they were opened."""

        def order(path: Path) -> int:
            suffix = path.name.rpartition(".")[2]
            return int(suffix) if suffix.isdigit() else -1

        files = sorted(directory.glob("played.raw*"), key=order) if directory.exists() else []
        return [np.fromfile(f, dtype=np.float32) for f in files if f.stat().st_size]


@pytest.fixture(scope="session")
def _alsa_root(tmp_path_factory: pytest.TempPathFactory) -> AlsaCapture:
    """Sets ALSA_CONFIG_PATH before anything loads PortAudio (sounddevice is imported lazily)."""
    system_conf = Path("/usr/share/alsa/alsa.conf")
    if not system_conf.exists():
        pytest.skip("ALSA is not installed")
    capture = AlsaCapture(tmp_path_factory.mktemp("alsa"))
    devices = "".join(
        f'pcm.{name} {{\n  type file\n  slave.pcm "null"\n  file "{directory}/played.raw"\n'
        f'  format "raw"\n  truncate false\n}}\n'
        for name, directory in (("gsvtest", capture.good), ("gsvbroken", capture.broken))
    )
    conf = capture.root / "asound.conf"
    conf.write_text(f"<{system_conf}>\n{devices}")
    os.environ["ALSA_CONFIG_PATH"] = str(conf)
    try:
        import sounddevice  # noqa: F401
    except OSError:
        pytest.skip("PortAudio is not installed (apt-get install libportaudio2)")
    return capture


@pytest.fixture
def alsa(_alsa_root: AlsaCapture) -> AlsaCapture:
    _alsa_root.reset()
    return _alsa_root
