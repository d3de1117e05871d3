"""Zones in the pipeline alone: each zone a lane of its own (a ward announcement does not wait behind a lobby one,
each zone keeps its priority order, an emergency cuts only its zones), one request for several zones synthesised
once and started in all of them together, a failing zone reported by name while the others play, and always one
terminal event with each zone's result. Sound cards are doubles here; tests/integration/test_zones.py plays on
ALSA devices."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon.audio.output import AudioDeviceError
from daemon.config import AudioSettings
from daemon.core.durable_queue import DurableQueue, content_digest
from daemon.core.events import EventKind, is_terminal
from daemon.core.pipeline import Pipeline, ZoneOutput
from daemon.core.request_queue import MemoryQueue, Request
from daemon.core.state_db import StateDb
from tests.doubles import ToneEngine
from tests.unit.core.test_pipeline import WAIT_S, Events, Published, request


class Log:
    """What every zone's card did, in the order it happened across zones."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()

    def add(self, zone: str, request_id: str, what: str) -> None:
        with self._lock:
            self.entries.append((zone, request_id, what))

    def index(self, entry: tuple[str, str, str]) -> int:
        with self._lock:
            return self.entries.index(entry)


class ZoneCard:
    """A zone's sound card: plays into a list; ``hold`` keeps it playing until set; fails ``failures`` times."""

    def __init__(self, zone: str, log: Log, failures: int = 0) -> None:
        self.zone, self.log, self.failures = zone, log, failures
        self.hold: threading.Event | None = None
        self.played: dict[str, list[np.ndarray]] = {}
        self.lead_ins: list[int | None] = []
        self.gains: list[float | None] = []
        self.current = ""

    def play(self, chunks: Iterable[np.ndarray], sample_rate: int, cancel: threading.Event,
             on_start: Callable[[], None], on_ready: Callable[[], None] | None = None,
             lead_in_ms: int | None = None, gain: float | None = None) -> None:
        if self.failures:
            self.failures -= 1
            raise AudioDeviceError(f"{self.zone}: device unplugged")
        rid = self.current
        assert on_ready is not None
        on_ready()
        self.lead_ins.append(lead_in_ms)
        self.gains.append(gain)
        self.log.add(self.zone, rid, "start")
        for chunk in chunks:
            if cancel.is_set():
                break
            on_start()
            self.played.setdefault(rid, []).append(chunk)
            while self.hold is not None and not self.hold.is_set() and not cancel.is_set():
                self.hold.wait(0.01)
        self.log.add(self.zone, rid, "cut" if cancel.is_set() else "end")


class Rig:
    """A pipeline with two card zones (lobby, ward) and one topic zone (garden)."""

    def __init__(self, ward_failures: int = 0, engine: ToneEngine | None = None) -> None:
        self.log = Log()
        self.events = Events()
        self.lobby = ZoneCard("lobby", self.log)
        self.ward = ZoneCard("ward", self.log, failures=ward_failures)
        self.garden = Published()
        zones = [ZoneOutput("lobby", audio=self.lobby, lead_in_ms=100),  # type: ignore[arg-type]
                 ZoneOutput("ward", audio=self.ward, lead_in_ms=300),  # type: ignore[arg-type]
                 ZoneOutput("garden", publisher=self.garden, volume=0.5, lead_in_ms=0)]
        self.engine = engine or ToneEngine(seconds=0.05)
        self.pipeline = Pipeline(MemoryQueue(max_depth=8, dedup_window_s=0), self.engine,
                                 ToneEngine(seconds=0.05, name="fallback"), self.events, Published(), None,
                                 AudioSettings(retry_initial_s=0.05, retry_max_s=0.1), zones=zones)

    def submit(self, rid: str, zones: tuple[str, ...], **fields: Any) -> None:
        for card in (self.lobby, self.ward):
            if card.zone in zones:
                card.current = rid  # each card here plays one request at a time, in the order the test submits
        fields.setdefault("expires_at", time.time() + 60)
        self.pipeline.submit(Request(id=rid, text=fields.pop("text", "One. Two."), zones=zones, output="play",
                                     **fields))

    def terminals(self, rid: str) -> list[tuple[EventKind, dict[str, Any]]]:
        return [(kind, fields) for kind, fields in self.events.of(rid) if is_terminal(kind, fields)]

    def __enter__(self) -> Rig:
        self.pipeline.start()
        return self

    def __exit__(self, *_: object) -> None:
        for card in (self.lobby, self.ward):
            if card.hold is not None:
                card.hold.set()
        self.pipeline.stop()


def wait_until(condition: Callable[[], bool], log: Log) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"condition not met; the cards did {log.entries}"
        time.sleep(0.01)


def test_a_ward_announcement_does_not_wait_behind_a_lobby_one() -> None:
    with Rig() as rig:
        rig.lobby.hold = threading.Event()
        rig.submit("lobby-long", ("lobby",), text="One. Two. Three.")
        rig.events.wait("lobby-long", EventKind.FIRST_AUDIO)
        rig.submit("ward-now", ("ward",))
        done = rig.events.wait("ward-now")
        assert rig.terminals("lobby-long") == []  # the lobby is still speaking
        rig.lobby.hold.set()
        lobby = rig.events.wait("lobby-long")
    assert done["event"] == "done" and done["zones"] == {"ward": {"state": "done"}}
    assert lobby["event"] == "done" and lobby["zones"] == {"lobby": {"state": "done"}}
    assert "ward-now" not in rig.lobby.played and "lobby-long" not in rig.ward.played


def test_each_zone_keeps_its_own_priority_order() -> None:
    with Rig() as rig:
        rig.lobby.hold = threading.Event()
        rig.submit("first", ("lobby",))
        rig.events.wait("first", EventKind.FIRST_AUDIO)
        rig.submit("low", ("lobby",), priority="low")
        rig.submit("high", ("lobby",), priority="high")
        wait_until(lambda: [name for name, _ in rig.pipeline.lineup()] == ["current", "next", "queued"], rig.log)
        order = [r.id for _, r in rig.pipeline.lineup()]
        rig.lobby.hold.set()
        rig.events.wait("low")
    assert order == ["first", "high", "low"]
    assert [rid for rid, kind, _ in rig.events.log if kind is EventKind.DONE] == ["first", "high", "low"]


def test_an_announcement_for_two_zones_waits_for_the_busy_one_then_starts_in_both() -> None:
    with Rig() as rig:
        rig.lobby.hold = threading.Event()
        rig.submit("lobby-first", ("lobby",))
        rig.events.wait("lobby-first", EventKind.FIRST_AUDIO)
        rig.submit("both", ("lobby", "ward"))
        rig.events.wait("both", EventKind.STARTED)
        assert "both" not in rig.ward.played  # synthesised, but the ward waits for the lobby
        rig.lobby.hold.set()
        done = rig.events.wait("both")
    assert rig.log.index(("lobby", "lobby-first", "end")) < rig.log.index(("ward", "both", "start"))
    assert done["event"] == "done"
    assert done["zones"] == {"lobby": {"state": "done"}, "ward": {"state": "done"}}
    assert "start_skew_ms" in done
    assert np.array_equal(np.concatenate(rig.lobby.played["both"]), np.concatenate(rig.ward.played["both"]))
    assert rig.lobby.lead_ins[-1] == rig.ward.lead_ins[-1] == 300  # the longer lead-in: first words align
    assert rig.engine.sentences.count("One") == 2  # "lobby-first" and "both": synthesised once for two zones
    kinds = rig.events.kinds("both")
    assert kinds.count("first_audio") == 1 and [k for k in kinds if k in ("done", "failed", "expired")] == ["done"]


def test_a_failing_zone_is_reported_by_name_and_the_others_play() -> None:
    with Rig(ward_failures=1000) as rig:
        rig.submit("all", ("lobby", "ward", "garden"), expires_at=time.time() + 1.5)
        ending = rig.events.wait("all")
    retrying = [fields for kind, fields in rig.events.of("all") if kind is EventKind.FAILED and fields.get("retrying")]
    assert retrying and {fields["zone"] for fields in retrying} == {"ward"}
    assert "audio device error" in retrying[0]["reason"]
    assert ending["event"] == "done"  # played in the lobby and the garden
    assert ending["zones"]["lobby"] == {"state": "done"} and ending["zones"]["garden"] == {"state": "done"}
    assert ending["zones"]["ward"]["state"] == "expired"
    assert ending["reason"].startswith("zone ward: ")
    assert len(rig.terminals("all")) == 1
    assert rig.lobby.played["all"] and "all" in rig.garden.audio


def test_a_topic_zone_gets_its_lead_in_and_volume() -> None:
    with Rig() as rig:
        rig.submit("garden", ("garden",))
        rig.events.wait("garden")
    published = np.concatenate(rig.garden.audio["garden"])
    assert published.size > 0 and np.max(np.abs(published)) > 0
    with Rig() as plain:
        plain.submit("lobby", ("lobby",))
        plain.events.wait("lobby")
    played = np.concatenate(plain.lobby.played["lobby"])
    assert np.allclose(published, played * 0.5)  # the card applies its own volume; a topic's is in the audio


def test_an_emergency_cuts_only_the_zones_it_is_for() -> None:
    with Rig() as rig:
        rig.lobby.hold = threading.Event()
        rig.ward.hold = threading.Event()
        rig.submit("both", ("lobby", "ward"), text="One. Two. Three.")
        rig.events.wait("both", EventKind.FIRST_AUDIO)
        wait_until(lambda: ("ward", "both", "start") in rig.log.entries, rig.log)
        rig.submit("fire", ("lobby",), priority="emergency")  # the lobby's card names what it plays next "fire"
        wait_until(lambda: ("lobby", "both", "cut") in rig.log.entries, rig.log)
        rig.ward.hold.set()
        rig.lobby.hold.set()
        ending = rig.events.wait("both")
        rig.events.wait("fire")
    assert ending["event"] == "done"
    assert ending["zones"] == {"lobby": {"state": "failed", "reason": "interrupted by fire"},
                               "ward": {"state": "done"}}
    assert ("ward", "both", "end") in rig.log.entries and rig.lobby.played["fire"]


def test_a_request_for_a_zone_no_longer_configured_fails_naming_it() -> None:
    with Rig() as rig:
        rig.pipeline.submit(request("old", zones=("attic",), output="play"))
        ending = rig.events.wait("old")
    assert ending["event"] == "failed" and ending["reason"] == "zone 'attic' is no longer configured"


def test_a_requests_zones_survive_the_state_database_and_tell_content_apart(tmp_path: Path) -> None:
    plain = Request(id="a", text="Hello.", expires_at=time.time() + 60)
    zoned = dataclasses.replace(plain, zones=("lobby", "ward"), output="play")
    queue = DurableQueue(StateDb.in_dir(tmp_path), max_depth=8, dedup_window_s=60)
    assert queue.put(zoned).status == "queued"
    [resumed] = DurableQueue(StateDb.in_dir(tmp_path), max_depth=8, dedup_window_s=60).resumed
    assert resumed.zones == ("lobby", "ward")
    assert content_digest(plain) != content_digest(zoned) != content_digest(dataclasses.replace(zoned, zones=("ward",)))
    assert content_digest(plain) == content_digest(dataclasses.replace(plain, zones=()))


class Clock:
    """The box's local time, set by the test."""

    def __init__(self, hour: int, minute: int = 0) -> None:
        self.set(hour, minute)

    def set(self, hour: int, minute: int = 0) -> None:
        self.now = datetime(2026, 12, 5, hour, minute)

    def __call__(self) -> datetime:
        return self.now


NIGHT = (22 * 60, 7 * 60)
STEPS = ((7 * 60, 1.0), (22 * 60, 0.25))


def night_rig(clock: Clock) -> Rig:
    """Lobby without quiet hours; the ward quiet 22:00-07:00; the garden (a topic) quieter from 22:00."""
    rig = Rig()
    zones = [ZoneOutput("lobby", audio=rig.lobby, volumes=STEPS),  # type: ignore[arg-type]
             ZoneOutput("ward", audio=rig.ward, quiet=NIGHT),  # type: ignore[arg-type]
             ZoneOutput("garden", publisher=rig.garden, volume=0.8, volumes=STEPS)]
    rig.pipeline = Pipeline(MemoryQueue(max_depth=8, dedup_window_s=0), rig.engine,
                            ToneEngine(seconds=0.05, name="fallback"), rig.events, Published(), None,
                            AudioSettings(), zones=zones, clock=clock)
    return rig


@pytest.mark.parametrize(("span", "minute", "quiet"), [
    (NIGHT, 23 * 60, True), (NIGHT, 3 * 60, True), (NIGHT, 7 * 60, False), (NIGHT, 12 * 60, False),
    (NIGHT, 22 * 60, True), ((12 * 60, 14 * 60), 13 * 60, True), ((12 * 60, 14 * 60), 14 * 60, False)])
def test_quiet_hours_may_run_past_midnight(span: tuple[int, int], minute: int, quiet: bool) -> None:
    assert ZoneOutput("z", quiet=span).quiet_at(minute) is quiet


@pytest.mark.parametrize(("minute", "volume"), [(8 * 60, 1.0), (23 * 60, 0.25), (3 * 60, 0.25), (7 * 60, 1.0)])
def test_the_volume_schedule_runs_round_the_clock(minute: int, volume: float) -> None:
    assert ZoneOutput("z", volume=0.7, volumes=STEPS).volume_at(minute) == volume
    assert ZoneOutput("z", volume=0.7).volume_at(minute) == 0.7


def test_in_quiet_hours_only_urgent_requests_play_and_the_rest_wait_holding_no_zone() -> None:
    clock = Clock(23, 30)
    with night_rig(clock) as rig:
        rig.pipeline.submit(request("night", zones=("ward",), output="play"))
        rig.pipeline.submit(request("both", zones=("lobby", "ward"), output="play"))
        rig.pipeline.submit(request("lobby-only", zones=("lobby",), output="play", priority="low"))
        rig.pipeline.submit(request("urgent", zones=("ward",), output="play", priority="high"))
        assert rig.events.wait("urgent")["event"] == "done"
        assert rig.events.wait("lobby-only")["event"] == "done"  # "both" waits for the ward, not in the lobby
        assert rig.events.kinds("night") == rig.events.kinds("both") == ["queued"]
        clock.set(7, 0)
        assert rig.events.wait("night")["event"] == "done" and rig.events.wait("both")["event"] == "done"


def test_a_request_that_expires_in_quiet_hours_is_reported_then() -> None:
    with night_rig(Clock(23, 30)) as rig:
        rig.pipeline.submit(Request(id="late", text="Hi.", zones=("ward",), output="play",
                                    expires_at=time.time() + 0.3))
        ending = rig.events.wait("late")
    assert ending == {"event": "expired", "reason": "ttl elapsed while queued"}


def test_a_zone_plays_at_its_volume_for_the_time_of_day() -> None:
    clock = Clock(23, 0)
    with night_rig(clock) as rig:
        rig.pipeline.submit(request("night", zones=("lobby", "garden"), output="play"))
        rig.events.wait("night")
        clock.set(8, 0)
        rig.pipeline.submit(request("day", zones=("lobby", "garden"), output="play"))
        rig.events.wait("day")
    assert rig.lobby.gains == [0.25, 1.0]  # the card is told its volume when it starts
    night, day = (np.concatenate(rig.garden.audio[rid]) for rid in ("night", "day"))
    assert np.allclose(night, day * 0.25) and np.abs(day).max() > 0  # the schedule, not the zone's volume (0.8)


class HeldText(ToneEngine):
    """An engine that batches (``concurrency`` 3) whose synthesis of ``held_text`` waits for ``release``."""

    def __init__(self, held_text: str) -> None:
        super().__init__(seconds=0.05, concurrency=3)
        self.held_text = held_text
        self.release = threading.Event()
        self.holding = threading.Event()

    def synthesize(self, text: str, voice: str | None, lang: str | None, speed: float = 1.0,
                   sampling: Any = None, background: bool = False) -> Any:
        if text == self.held_text:
            self.holding.set()
            self.release.wait(WAIT_S)
        return super().synthesize(text, voice, lang, speed, sampling, background)


def test_with_an_engine_that_batches_zones_are_synthesised_side_by_side() -> None:
    """The lobby's announcement is still being synthesised when the ward's arrives: with an engine that batches,
    another of the speaker's synthesis threads takes the ward's and it plays to the end meanwhile; both are
    synthesised as the speaker's (foreground) work, and the lobby's then plays too."""
    engine = HeldText("Lobby.")
    with Rig(engine=engine) as rig:
        assert rig.pipeline.synthesis_threads == 3 + 3  # three for the four speaker lanes, three publish lanes
        rig.submit("lobby", ("lobby",), text="Lobby.")
        assert engine.holding.wait(WAIT_S)
        rig.submit("ward", ("ward",), text="Ward.")
        ward = rig.events.wait("ward")
        lobby_meanwhile = rig.events.kinds("lobby")
        engine.release.set()
        lobby = rig.events.wait("lobby")
    assert ward["event"] == lobby["event"] == "done"
    assert lobby_meanwhile == ["queued", "started"]
    assert engine.background == [False, False]
