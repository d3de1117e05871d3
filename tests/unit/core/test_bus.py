"""The event bus and the output router, with recording doubles: the order every event is handled in is the
durability promise (on disk and audited before anyone hears it), so it is checked here on its own."""

from __future__ import annotations

import time
from typing import Any

from daemon.core.bus import EventBus, OutputRouter
from daemon.core.events import Event, EventKind, PayloadOrigin
from daemon.core.outbox import Message
from daemon.core.request_queue import Request


class Log:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []


class Journal:
    def __init__(self, log: Log) -> None:
        self.log = log

    def record(self, event: Event, messages: list[tuple[str, dict[str, Any]]]) -> list[Message]:
        self.log.calls.append(("record", [topic for topic, _ in messages]))
        return [Message(topic, b"{}", seq=7) for topic, _ in messages]


class Announcer:
    def __init__(self, log: Log) -> None:
        self.log = log

    def messages(self, event: Event) -> list[tuple[str, dict[str, Any]]]:
        return [("events", event.payload())]

    def announce(self, event: Event, messages: list[Message]) -> None:
        self.log.calls.append(("announce", [m.seq for m in messages]))


class Subscriber:
    def __init__(self, log: Log, name: str) -> None:
        self.log, self.name = log, name

    def on_event(self, event: Event) -> None:
        self.log.calls.append((self.name, event.kind.value))


def request(source: str = "native") -> Request:
    return Request(id="r1", text="Hello.", expires_at=time.time() + 60, source=source)  # type: ignore[arg-type]


def test_every_event_is_recorded_then_heard_then_announced() -> None:
    log = Log()
    bus = EventBus(Journal(log), Announcer(log))
    bus.subscribe(Subscriber(log, "audit"))
    bus.subscribe(Subscriber(log, "metrics"))
    bus.emit(request(), EventKind.DONE, audio_ms=1)
    bus.publish(Event(EventKind.RELOADED, {"changed": []}))
    assert log.calls == [
        ("record", ["events"]), ("audit", "done"), ("metrics", "done"), ("announce", [7]),
        ("record", ["events"]), ("audit", "reloaded"), ("metrics", "reloaded"), ("announce", [7]),
    ]


def test_payloads_keep_their_shape() -> None:
    done = Event(EventKind.DONE, {"audio_ms": 5}, request=request("hermes")).payload()
    assert {k: v for k, v in done.items() if k != "ts"} == {"id": "r1", "event": "done", "source": "hermes",
                                                           "audio_ms": 5}
    registered = Event(EventKind.VOICE_REGISTERED, {"voice": "alice"}, id="reg-1").payload()
    assert {k: v for k, v in registered.items() if k != "ts"} == {"id": "reg-1", "event": "voice_registered",
                                                                 "voice": "alice"}
    assert Event(EventKind.ENGINE_DOWN, {"reason": "x"}).payload()["id"] is None
    refused = Event(EventKind.REJECTED, {"reason": "bad JSON"}, id="h1",
                    refused=PayloadOrigin("hermes", "hermes/tts/say", "kitchen")).payload()
    assert {k: v for k, v in refused.items() if k != "ts"} == {"id": "h1", "event": "rejected", "source": "hermes",
                                                              "reason": "bad JSON"}


class Publisher:
    def __init__(self, name: str) -> None:
        self.name = name
        self.opened: list[str] = []

    def open(self, request: Request, sample_rate: int) -> Any:
        self.opened.append(request.id)
        return self.name


def test_audio_goes_back_the_way_the_request_came() -> None:
    mqtt, wyoming = Publisher("mqtt"), Publisher("wyoming")
    router = OutputRouter(default=mqtt)
    router.route("wyoming", wyoming)
    assert router.open(request("wyoming"), 16000) == "wyoming"
    assert router.open(request("hermes"), 16000) == "mqtt"
    assert router.open(request("native"), 16000) == "mqtt"
