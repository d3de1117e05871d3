"""Durable intake and fault injection (short versions; ``bench/soak.py`` runs the long one).

Real parts only: ``gsv-edge serve`` processes killed with SIGKILL, a real mosquitto restarted, ALSA
file devices that fail, a corrupted bundle file and a full tmpfs under the state directory. After each
fault: every request acknowledged with ``queued`` reaches exactly one terminal event, nothing reported
``done`` is spoken again, and the daemon serves again within a bound.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from daemon.core.durable_queue import DurableQueue
from daemon.core.events import Event, EventKind
from daemon.core.outbox import Message
from daemon.core.request_queue import Request
from daemon.core.state_db import StateDb, StateDbError, open_read_only
from tests.conftest import AlsaCapture, Broker, Recorder, to_toml
from tests.doubles import ToneEngine
from tests.integration.test_systemd import unit_settings
from tests.paths import REPO

TERMINAL = {"done", "failed", "expired", "rejected"}
RECOVERY_BOUND_S = 10.0  # kill -> serving again; measured values are printed (pytest -s)


def _request(request_id: str, ttl_s: float = 60.0, priority: str = "normal") -> Request:
    return Request(id=request_id, text=f"say {request_id}", expires_at=time.time() + ttl_s, priority=priority)  # type: ignore[arg-type]


def is_terminal(event: dict[str, Any]) -> bool:
    return event["event"] in TERMINAL and not event.get("retrying", False)


def without_redeliveries(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events with byte-identical copies counted once: the outbox delivers at least once, so a daemon killed
    between a publish and its PUBACK sends that event again on its next start, as QoS 1 allows."""
    unique: dict[str, dict[str, Any]] = {}
    for event in events:
        unique.setdefault(json.dumps(event, sort_keys=True), event)
    return list(unique.values())


def check_exactly_once(events: list[dict[str, Any]], accepted: set[str]) -> Counter[str]:
    """Every accepted id has exactly one terminal event and is never started again after ``done``.

    QoS 1 may deliver one event message twice (a PUBACK lost in a broker restart); such copies are
    byte-identical and counted once, as a client deduplicating QoS 1 would.
    """
    events = without_redeliveries(events)
    terminal = Counter(e["id"] for e in events if is_terminal(e))
    for request_id in accepted:
        assert terminal[request_id] == 1, (request_id, [e for e in events if e["id"] == request_id])
    done_at: dict[str, int] = {}
    for index, event in enumerate(events):
        if event["event"] == "done":
            done_at[event["id"]] = index
        elif event["event"] == "started" and event["id"] in done_at:
            raise AssertionError(f"{event['id']} started again after done")
    return terminal


# -- the queue on its own ---------------------------------------------------------------------------


def test_unfinished_requests_resume_and_finished_ones_do_not(tmp_path: Path) -> None:
    db = StateDb.in_dir(tmp_path)
    queue = DurableQueue(db, max_depth=10, dedup_window_s=600)
    for request_id in ("a", "b", "c", "d"):
        assert queue.put(_request(request_id, ttl_s=0.3 if request_id == "d" else 60)).status == "queued"
    first = queue.pop()
    assert first is not None and first.id == "a"
    second = queue.pop()
    assert second is not None and second.id == "b"
    queue.record(Event(EventKind.DONE, {}, request=first), [])
    queue.record(Event(EventKind.STARTED, {}, request=second), [])
    queue.requeue(second)
    db.close()  # as good as a crash: nothing is flushed at close that was not committed already
    time.sleep(0.35)

    db = StateDb.in_dir(tmp_path)
    again = DurableQueue(db, max_depth=10, dedup_window_s=600)
    assert [r.id for r in again.resumed] == ["b", "c"]
    assert [r.id for r in again.expired_while_down] == ["d"]
    duplicate = again.put(_request("a"))  # a QoS 1 redelivery of a finished request
    assert (duplicate.status, duplicate.state) == ("duplicate", "done")
    again.record(Event(EventKind.EXPIRED, {}, request=again.expired_while_down[0]), [])
    assert again.states("a") == ["done"] and again.states("d") == ["expired"]
    assert [again.pop().id, again.pop().id, again.pop()] == ["b", "c", None]  # type: ignore[union-attr]
    resumed = db.query("SELECT body FROM requests WHERE id = 'a'")
    assert resumed == [("",)]  # the text of a finished request is not kept


def test_wyoming_requests_are_not_resumed_after_a_crash(tmp_path: Path) -> None:
    """A Wyoming client's connection ends with the daemon, so its request is expired, not spoken to nobody."""
    db = StateDb.in_dir(tmp_path)
    queue = DurableQueue(db, max_depth=10, dedup_window_s=600)
    assert queue.put(replace(_request("w1"), source="wyoming")).status == "queued"
    assert queue.put(_request("n1")).status == "queued"
    db.close()
    again = DurableQueue(StateDb.in_dir(tmp_path), max_depth=10, dedup_window_s=600)
    assert [r.id for r in again.resumed] == ["n1"]
    assert [r.id for r in again.expired_while_down] == ["w1"]


def test_an_event_stays_in_the_outbox_until_delivered_and_survives_a_restart(tmp_path: Path) -> None:
    db = StateDb.in_dir(tmp_path)
    queue = DurableQueue(db, max_depth=10, dedup_window_s=600)
    request = _request("o1")
    queue.put(request)
    queue.pop()
    events = [("events", {"id": "o1", "event": "done"}), ("hermes/tts/sayFinished", {"id": "o1"})]
    done, finished = queue.record(Event(EventKind.DONE, {}, request=request), events)
    assert json.loads(done.payload) == {"id": "o1", "event": "done", "seq": done.seq} and finished.seq == done.seq + 1
    queue.outbox.delivered(done.seq)
    db.close()
    again = DurableQueue(StateDb.in_dir(tmp_path), max_depth=10, dedup_window_s=600)
    assert again.outbox.left() == [finished] and again.states("o1") == ["done"]
    first_audio = again.record(Event(EventKind.FIRST_AUDIO, {}, request=request), [("events", {"id": "o1"})])
    assert first_audio[0].seq is None and again.outbox.left() == [finished]  # progress is not kept


def test_a_state_database_from_before_content_digests_is_upgraded(tmp_path: Path) -> None:
    """Rows written before protocols and digests were recorded match no new request; they are not lost."""
    db = StateDb.in_dir(tmp_path)
    with db.transaction() as conn:
        conn.execute("CREATE TABLE requests (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, received REAL "
                     "NOT NULL, state TEXT NOT NULL, updated REAL NOT NULL, body TEXT NOT NULL)")
        conn.execute("INSERT INTO requests (id, received, state, updated, body) VALUES ('old', ?, 'done', ?, '')",
                     (time.time(), time.time()))
    queue = DurableQueue(db, max_depth=10, dedup_window_s=600)
    assert queue.put(_request("old")).status == "queued"
    assert queue.put(_request("old")).status == "duplicate"
    assert queue.states("old") == ["done", "queued"]


def test_a_request_that_cannot_be_committed_is_not_admitted(tmp_path: Path) -> None:
    db = StateDb.in_dir(tmp_path)
    queue = DurableQueue(db, max_depth=10, dedup_window_s=600)
    kept = _request("kept")
    queue.put(kept)
    db.query("PRAGMA query_only = ON")  # every write now fails, as on a full or read-only disk
    with pytest.raises(StateDbError):
        queue.put(_request("lost"))
    assert len(queue) == 1 and queue.write_errors == 1
    event = ("topic", {"id": "kept", "event": "done"})
    recorded = queue.record(Event(EventKind.DONE, {}, request=kept), [event])
    assert recorded == [Message("topic", b'{"id": "kept", "event": "done"}')]
    assert queue.write_errors == 2  # logged, not raised: the event still goes out, without the outbox
    db.query("PRAGMA query_only = OFF")
    assert [queue.pop().id, queue.pop()] == ["kept", None]  # type: ignore[union-attr]


# -- daemon processes -------------------------------------------------------------------------------


class DaemonProcess:
    """``gsv-edge serve`` in a process of its own, killable with SIGKILL and restartable on the same state."""

    def __init__(self, broker: Broker, tmp_path: Path, recorder: Recorder, **sections: dict[str, Any]) -> None:
        self.node_id = f"p{uuid.uuid4().hex[:8]}"
        self.base = f"gsv-edge/{self.node_id}"
        self.state_dir = tmp_path / "state"
        self.recorder = recorder
        mqtt_section = {"host": broker.host, "port": broker.port, "node_id": self.node_id,
                        "reconnect_min_s": 0.1, "reconnect_max_s": 1.0, **sections.pop("mqtt", {})}
        self.config = tmp_path / f"{self.node_id}.toml"
        text = f'state_dir = "{self.state_dir}"\n' + to_toml({"mqtt": mqtt_section, **sections})
        self.config.write_text(text)
        self.log = tmp_path / f"{self.node_id}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        recorder.subscribe(f"{self.base}/#")

    def start(self) -> float:
        """Start and wait until it announces itself online; returns the seconds that took."""
        began = time.monotonic()
        count = len(self.recorder.on(f"{self.base}/availability"))
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "daemon", "serve", "--config", str(self.config)],
                cwd=REPO, stdout=log, stderr=log,
            )
        self.recorder.wait_for(
            f"{self.base}/availability",
            lambda m: m.payload == b"online" and len(self.recorder.on(f"{self.base}/availability")) > count,
            timeout=30,
        )
        return time.monotonic() - began

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def say(self, payload: dict[str, Any]) -> None:
        self.recorder.publish(f"{self.base}/say", json.dumps(payload))

    def events(self) -> list[dict[str, Any]]:
        return [m.json() for m in self.recorder.on(f"{self.base}/events") if m.json().get("id") is not None]

    def wait_event(self, request_id: str, event: str, timeout: float = 30, after: int = 0) -> dict[str, Any]:
        def wanted(msg: Any) -> bool:
            data = msg.json()
            return data.get("id") == request_id and data["event"] == event

        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events()[after:] if e["id"] == request_id and e["event"] == event]
            if found:
                return found[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no {event} for {request_id}; log:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.02)

    def wait_terminal(self, ids: set[str], timeout: float = 60) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            events = self.events()
            if ids <= {e["id"] for e in events if is_terminal(e)}:
                return events
            if time.monotonic() > deadline:
                missing = ids - {e["id"] for e in events if is_terminal(e)}
                raise AssertionError(f"no terminal event for {missing}; log:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.05)


@pytest.fixture
def daemon_process(mosquitto_broker: Broker, recorder: Recorder, tmp_path: Path) -> Iterator[Any]:
    made: list[DaemonProcess] = []

    def make(**sections: dict[str, Any]) -> DaemonProcess:
        process = DaemonProcess(mosquitto_broker, tmp_path, recorder, **sections)
        made.append(process)
        return process

    yield make
    for process in made:
        process.stop()


SENTENCE = "Announcement {n}: the train to the airport leaves from platform {n}."
QUIET = {"lead_in_ms": 50, "tail_ms": 50}


def test_kill_mid_playback_speaks_the_cut_request_again_and_nothing_done_twice(
    daemon_process: Any, alsa: AlsaCapture
) -> None:
    daemon = daemon_process(audio={"output_device": "gsvtest", **QUIET})
    daemon.start()
    ids = [f"play-{n}" for n in range(4)]
    for n, request_id in enumerate(ids):
        daemon.say({"id": request_id, "text": SENTENCE.format(n=n), "lang": "en"})
    daemon.wait_event("play-0", "done")
    daemon.wait_event("play-1", "first_audio")
    time.sleep(0.5)
    daemon.kill()  # play-1 is cut mid-playback; play-2 may be synthesised, play-3 queued
    killed = time.monotonic()
    before = len(daemon.events())

    online_s = daemon.start()
    resumed = daemon.wait_event("play-1", "started", after=before)
    recovered_s = time.monotonic() - killed
    events = daemon.wait_terminal(set(ids))
    check_exactly_once(events, set(ids))
    assert {e["id"] for e in events[before:] if e.get("resumed")} == {"play-1", "play-2", "play-3"}
    assert not [e for e in events[before:] if e["id"] == "play-0"], "done before the kill: never again"
    assert resumed["wait_ms"] >= 0 and recovered_s < RECOVERY_BOUND_S
    streams = AlsaCapture.streams(alsa.good)
    assert len(streams) == 5  # play-0, the cut play-1, then play-1 again from the start, play-2, play-3
    print(f"\nkill -9 mid-playback: online again in {online_s:.2f} s, cut request restarted {recovered_s:.2f} s"
          " after the kill")


def test_kill_mid_synthesis_resumes_once(daemon_process: Any) -> None:
    daemon = daemon_process(queue={"max_text_chars": 20000})
    daemon.start()
    long_text = " ".join(SENTENCE.format(n=n) for n in range(150))  # about 1 s of eSpeak NG work
    daemon.say({"id": "long", "text": long_text, "lang": "en"})
    daemon.say({"id": "next", "text": "And then this one.", "lang": "en"})
    daemon.wait_event("long", "started")
    daemon.kill()
    killed = time.monotonic()
    before = len(daemon.events())
    assert not [e for e in daemon.events() if e["id"] == "long" and e["event"] == "done"], "synthesis was too quick"

    online_s = daemon.start()
    events = daemon.wait_terminal({"long", "next"})
    check_exactly_once(events, {"long", "next"})
    done = [e for e in events[before:] if e["event"] == "done"]
    assert [e["id"] for e in done] == ["long", "next"] and all(e["audio_sha256"] for e in done)
    print(f"\nkill -9 mid-synthesis: online again in {online_s:.2f} s, both done "
          f"{time.monotonic() - killed:.2f} s after the kill")


def _states(state_dir: Path, ids: tuple[str, ...]) -> dict[str, str]:
    conn = open_read_only(state_dir)
    try:
        rows = conn.execute(f"SELECT id, state FROM requests WHERE id IN ({', '.join('?' * len(ids))})", ids)
        return dict(rows.fetchall())
    finally:
        conn.close()


def test_an_event_committed_but_never_acknowledged_is_published_after_a_crash(
    daemon_process: Any, mosquitto_broker: Broker, recorder: Recorder
) -> None:
    """The state database says ``done`` but the broker never had the event (nor Hermes' sayFinished) when
    the daemon died: the restarted daemon publishes both, the event with the sequence number it was
    committed under."""
    recorder.subscribe("hermes/#")
    daemon = daemon_process(queue={"max_text_chars": 20000}, hermes={"play_finished_margin_s": 0})
    daemon.start()
    long_text = " ".join(SENTENCE.format(n=n) for n in range(150))  # about 1 s of eSpeak NG work
    daemon.say({"id": "long", "text": long_text, "lang": "en"})
    recorder.publish("hermes/tts/say", json.dumps({"text": "Short.", "id": "h-crash", "sessionId": "s"}))
    daemon.wait_event("long", "started")
    mosquitto_broker.stop()  # from here on nothing the daemon publishes can be acknowledged
    assert not [e for e in daemon.events() if e["event"] == "done"], "synthesis was too quick"
    deadline = time.monotonic() + 60
    while _states(daemon.state_dir, ("long", "h-crash")) != {"long": "done", "h-crash": "done"}:
        assert time.monotonic() < deadline, _states(daemon.state_dir, ("long", "h-crash"))
        time.sleep(0.05)
    daemon.kill()
    conn = open_read_only(daemon.state_dir)
    committed = [json.loads(payload) for (payload,) in conn.execute("SELECT payload FROM outbox ORDER BY seq")]
    conn.close()
    seq = next(e["seq"] for e in committed if e.get("id") == "long" and e.get("event") == "done")

    mosquitto_broker.start()
    deadline = time.monotonic() + 15
    while not recorder.client.is_connected():
        assert time.monotonic() < deadline, "the recorder did not reconnect"
        time.sleep(0.02)
    recorder.subscribe(f"{daemon.base}/#", "hermes/#")
    daemon.start()
    assert daemon.wait_event("long", "done")["seq"] == seq
    finished = recorder.wait_for("hermes/tts/sayFinished", lambda m: m.json()["id"] == "h-crash").json()
    assert finished["sessionId"] == "s"
    daemon.say({"id": "after", "text": "Serving again.", "lang": "en"})
    events = daemon.wait_terminal({"long", "h-crash", "after"})
    check_exactly_once(events, {"long", "h-crash", "after"})
    assert [m.json()["id"] for m in recorder.on("hermes/tts/sayFinished")] == ["h-crash"]


def test_sigterm_mid_synthesis_fails_the_request_and_resumes_the_queue(daemon_process: Any) -> None:
    """A clean stop synthesises nothing more: the request being synthesised ends ``failed: daemon stopping``
    (not spoken again), the waiting one is spoken after the restart, and the process exits 0 within the
    unit's TimeoutStopSec."""
    daemon = daemon_process(queue={"max_text_chars": 20000})
    daemon.start()
    long_text = " ".join(SENTENCE.format(n=n) for n in range(40))  # seconds of eSpeak NG work: well within drain_s
    daemon.say({"id": "long", "text": long_text, "lang": "en"})
    daemon.say({"id": "next", "text": "And then this one.", "lang": "en"})
    daemon.wait_event("long", "started")
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(timeout=float(unit_settings()["TimeoutStopSec"][0])) == 0
    assert daemon.wait_event("long", "failed")["reason"] == "daemon stopping"
    before = len(daemon.events())
    assert not [e for e in daemon.events() if e["id"] == "next" and is_terminal(e)]

    daemon.start()
    events = daemon.wait_terminal({"next"})
    # not check_exactly_once: events committed before the restarted daemon reaches the broker can arrive after
    # later ones (their seq orders them)
    assert sorted(e["id"] for e in events if is_terminal(e)) == ["long", "next"]
    resumed = [e for e in events[before:] if e["id"] == "next"]
    assert {e["event"] for e in resumed} == {"queued", "started", "first_audio", "done"}
    assert any(e.get("resumed") for e in resumed) and not [e for e in events[before:] if e["id"] == "long"]


def test_expired_while_down_reports_expired(daemon_process: Any, alsa: AlsaCapture) -> None:
    daemon = daemon_process(audio={"output_device": "gsvtest", **QUIET})
    daemon.start()
    daemon.say({"id": "busy", "text": SENTENCE.format(n=1), "lang": "en"})
    daemon.say({"id": "brief", "text": "Too late.", "ttl_s": 1})
    daemon.wait_event("brief", "queued")
    daemon.kill()
    time.sleep(1.1)
    daemon.start()
    events = daemon.wait_terminal({"busy", "brief"})
    check_exactly_once(events, {"busy", "brief"})
    expired = daemon.wait_event("brief", "expired")
    assert "while the daemon was down" in expired["reason"]


def test_audio_device_failing_then_kill_then_repaired(daemon_process: Any, alsa: AlsaCapture) -> None:
    audio = {"output_device": "gsvbroken", "retry_initial_s": 0.1, "retry_max_s": 0.2, **QUIET}
    daemon = daemon_process(audio=audio)
    daemon.start()
    daemon.say({"id": "stuck", "text": "The device is broken.", "lang": "en"})
    error = daemon.wait_event("stuck", "failed")
    assert error["retrying"] is True
    daemon.kill()
    alsa.repair()
    killed = time.monotonic()
    daemon.start()
    events = daemon.wait_terminal({"stuck"})
    check_exactly_once(events, {"stuck"})
    assert [e["event"] for e in events if is_terminal(e)] == ["done"]
    assert len(AlsaCapture.streams(alsa.broken)) == 1
    print(f"\naudio device failure + kill -9: done {time.monotonic() - killed:.2f} s after the kill")


class PersistentBroker(Broker):
    """mosquitto keeping sessions and QoS 1 messages across a restart (as a production broker would)."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        data = directory / "mosquitto-data"
        data.mkdir()
        self._conf.write_text(
            f"listener {self.port} {self.host}\nallow_anonymous true\npersistence true\n"
            f"persistence_location {data}/\nautosave_interval 1\n"
            + ("user root\n" if os.geteuid() == 0 else "")  # else mosquitto drops to a user who cannot write here
        )


class SessionRecorder(Recorder):
    """A recorder with a persistent session, so events published during a broker outage reach it."""

    def __init__(self, broker: Broker) -> None:
        self.messages = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"session-{uuid.uuid4().hex[:8]}", clean_session=False
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()


def test_broker_restart_mid_stream(tmp_path: Path) -> None:
    if not os.path.exists(shutil.which("mosquitto") or "/usr/sbin/mosquitto"):
        pytest.skip("mosquitto is not installed")
    (tmp_path / "persistent").mkdir()
    broker = PersistentBroker(tmp_path / "persistent")
    broker.start()
    recorder = SessionRecorder(broker)
    try:
        _broker_restart(broker, recorder, tmp_path)
    finally:
        recorder.close()
        broker.stop()


def _broker_restart(broker: Broker, recorder: Recorder, tmp_path: Path) -> None:
    from daemon.app.service import Service
    from daemon.config import load_settings

    node_id = f"b{uuid.uuid4().hex[:8]}"
    config = tmp_path / "broker-restart.toml"
    config.write_text(f'state_dir = "{tmp_path / "state-b"}"\n' + to_toml({
        "mqtt": {"host": broker.host, "port": broker.port, "node_id": node_id, "reconnect_min_s": 0.1,
                 "reconnect_max_s": 0.5},
    }))
    service = Service(load_settings(config), engine=ToneEngine(seconds=0.15))
    base = f"gsv-edge/{node_id}"
    recorder.subscribe(f"{base}/events")
    service.start()
    try:
        assert service.mqtt.ready.wait(10)
        ids = [f"r{n}" for n in range(12)]
        for request_id in ids:
            recorder.publish(f"{base}/say", json.dumps({"id": request_id, "text": "One. Two."}))
        recorder.wait_for(f"{base}/events", lambda m: m.json()["id"] == "r2" and m.json()["event"] == "done")
        broker.stop()  # mid-stream: r3.. are queued or being spoken, their events go nowhere for now
        time.sleep(0.5)
        restarted = time.monotonic()
        broker.start()
        assert service.mqtt.ready.wait(15), "the daemon did not reconnect"
        reconnect_s = time.monotonic() - restarted
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            events = [m.json() for m in recorder.on(f"{base}/events")]
            if set(ids) <= {e["id"] for e in events if is_terminal(e)}:
                break
            time.sleep(0.05)
        events = [m.json() for m in recorder.on(f"{base}/events")]
        terminal = check_exactly_once(events, set(ids))
        assert all(terminal[i] == 1 for i in ids)
        assert {e["event"] for e in events if is_terminal(e)} == {"done"}
        print(f"\nbroker restart: daemon subscribed again {reconnect_s:.2f} s after mosquitto came back")
    finally:
        service.stop()


def test_corrupt_bundle_file_degrades_to_the_fallback_and_keeps_serving(
    daemon_process: Any, tmp_path: Path, demo_bundle: Path  # noqa: F811 - fixture
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(demo_bundle, bundle)
    with (bundle / "t2s_step.onnx").open("r+b") as graph:
        graph.seek(1000)
        graph.write(b"\x00garbage\x00")
    daemon = daemon_process(engine={"bundle": str(bundle)})
    daemon.start()
    status = daemon.recorder.wait_for(f"{daemon.base}/status").json()
    assert status["engine_state"] == "degraded" and "SHA-256" in status["engine_error"]
    daemon.say({"id": "anyway", "text": "Still speaking.", "lang": "en"})
    assert daemon.wait_event("anyway", "done")["engine"] == "espeak-ng fallback"


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_full_state_disk(start_daemon: Any, tmp_path: Path) -> None:
    state = tmp_path / "state"  # the directory the start_daemon fixture points the daemon at
    if not _mount_tmpfs(state, "1m"):
        pytest.skip("needs root to mount a small tmpfs as the state directory")
    try:
        daemon = start_daemon(synth=ToneEngine(seconds=0.05))
        for n in range(3):
            daemon.say({"id": f"before-{n}", "text": "Before."})
        daemon.wait_event("before-2", "done")
        filler = state / "filler"
        with filler.open("wb") as out:
            try:
                while True:
                    out.write(b"\0" * 65536)
                    out.flush()
            except OSError:
                pass  # the disk is full
        ids = [f"full-{n}" for n in range(20)]
        for request_id in ids:
            daemon.say({"id": request_id, "text": "While the disk is full. " * 20})
        deadline = time.monotonic() + 20
        while not set(ids) <= {e["id"] for e in daemon.events() if is_terminal(e)} and time.monotonic() < deadline:
            time.sleep(0.05)
        events = [e for e in daemon.events() if e["id"] in ids]
        accepted = {e["id"] for e in events if e["event"] == "queued"}
        refused = {e["id"] for e in events if e["event"] == "rejected" and "cannot record" in e.get("reason", "")}
        assert accepted | refused == set(ids) and not accepted & refused
        check_exactly_once(events, set(ids))
        filler.unlink()
        freed = time.monotonic()
        daemon.say({"id": "after", "text": "Space again."})
        daemon.wait_event("after", "done")
        print(f"\nfull state disk: {len(accepted)} accepted, {len(refused)} refused; serving "
              f"{time.monotonic() - freed:.2f} s after space was freed")
    finally:
        subprocess.run(["umount", "-l", str(state)], check=False)
