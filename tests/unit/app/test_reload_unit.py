"""Reload on its own: a real config file and state database, the real eSpeak NG fallback, and in place of the
daemon a small double that records what the reloader asks of it (``Service.apply`` and the event bus)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from daemon.app.engines import Engines, build_engines
from daemon.app.reload import REQUEST_FRESH_S, Reloader, leave_name
from daemon.config import Settings, load_settings
from daemon.core.audit import Actor, AuditLog, read_records
from daemon.core.events import Event, EventKind
from daemon.core.state_db import StateDb


class Daemon:
    """What :class:`~daemon.app.reload.Reloader` uses of :class:`~daemon.app.service.Service`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engines = build_engines(settings)
        self.shared_threads = False
        self.state = StateDb.in_dir(settings.state_dir)
        self.audit = AuditLog(self.state, settings.audit)
        self.applied: list[tuple[Settings, Engines]] = []
        self.events: list[Event] = []
        self.bus = self

    def apply(self, settings: Settings, engines: Engines) -> None:
        self.applied.append((settings, engines))
        self.settings, self.engines = settings, engines

    def publish(self, event: Event) -> None:
        self.events.append(event)


class Config:
    """The config file, always with the same state directory (a changed ``state_dir`` would be news)."""

    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "config.toml"
        self.state = tmp_path / "state"
        self.state.mkdir()

    def write_text(self, toml: str) -> None:
        self.path.write_text(f"state_dir = '{self.state}'\n{toml}")


def setup(tmp_path: Path, toml: str) -> tuple[Daemon, Reloader, Config]:
    config = Config(tmp_path)
    config.write_text(toml)
    daemon = Daemon(load_settings(config.path))
    return daemon, Reloader(daemon, config.path), config  # type: ignore[arg-type]


def outcome(daemon: Daemon) -> tuple[EventKind, dict[str, Any]]:
    assert len(daemon.events) == 1
    return daemon.events[0].kind, daemon.events[0].fields


def test_a_live_change_is_applied_and_a_restart_change_is_named(tmp_path: Path) -> None:
    daemon, reloader, config = setup(tmp_path, "log_level = 'INFO'\n[queue]\nmax_text_chars = 100\n")
    config.write_text("log_level = 'DEBUG'\n[queue]\nmax_text_chars = 50\nmax_depth = 5\n[mqtt]\nport = 1884\n")
    ok, message = reloader.reload()
    kind, fields = outcome(daemon)
    assert ok and kind is EventKind.RELOADED
    assert set(fields["changed"]) == {"log_level", "queue.max_text_chars"}
    assert set(fields["restart_needed"]) == {"queue.max_depth", "mqtt.port"}
    applied, engines = daemon.applied[0]
    assert applied.log_level == "DEBUG" and applied.queue.max_text_chars == 50
    assert applied.queue.max_depth == 32 and applied.mqtt.port == 1883, "restart-only keys keep their old value"
    assert "at the next restart" in message


def test_a_bad_file_is_refused_and_nothing_is_applied(tmp_path: Path) -> None:
    daemon, reloader, config = setup(tmp_path, "")
    config.write_text("[queue\n")
    ok, message = reloader.reload()
    kind, fields = outcome(daemon)
    assert not ok and kind is EventKind.RELOAD_REFUSED and "not valid TOML" in fields["reason"]
    assert daemon.applied == []
    assert "still serving the previous configuration" in message


def test_a_bundle_that_cannot_load_is_refused_and_the_engine_stays(tmp_path: Path) -> None:
    daemon, reloader, config = setup(tmp_path, "")
    before = daemon.engines
    config.write_text(f"[engine]\nbundle = '{tmp_path / 'missing-bundle'}'\n")
    ok, _ = reloader.reload()
    kind, fields = outcome(daemon)
    assert not ok and kind is EventKind.RELOAD_REFUSED and "missing-bundle" in fields["reason"]
    assert daemon.engines is before and daemon.applied == []


def test_an_unknown_fallback_voice_is_refused(tmp_path: Path) -> None:
    daemon, reloader, config = setup(tmp_path, "")
    config.write_text("[engine]\nfallback_voice = 'klingon-x'\n")
    ok, _ = reloader.reload()
    kind, fields = outcome(daemon)
    assert not ok and "engine.fallback_voice" in fields["reason"] and daemon.applied == []


def test_each_outcome_is_recorded_for_the_command(tmp_path: Path) -> None:
    daemon, reloader, config = setup(tmp_path, "")
    reloader.reload()
    config.write_text("[queue\n")
    reloader.reload()
    with daemon.state.transaction() as conn:
        rows = conn.execute("SELECT ok FROM reloads ORDER BY rowid").fetchall()
    assert [bool(r[0]) for r in rows] == [True, False]


def _changes(state_dir: Path) -> list[tuple[str, str | None, str | None, str | None]]:
    return [(row["outcome"], row["protocol"], row["token_name"], row["os_user"]) for row in read_records(state_dir)
            if row["outcome"] in ("reloaded", "reload_refused")]


def test_each_outcome_is_audited_with_who_asked(tmp_path: Path) -> None:
    daemon, reloader, config = setup(tmp_path, "")
    reloader.reload(by=Actor.http("boss"))
    config.write_text("[queue\n")
    reloader.reload(by=Actor.cli())
    reloader.reload()  # nobody said who
    [ok, refused, unknown] = read_records(config.state)
    assert (ok["outcome"], ok["protocol"], ok["token_name"], ok["os_user"]) == ("reloaded", "http", "boss", None)
    assert ok["reason"].startswith("reloaded: engine")
    assert (refused["outcome"], refused["protocol"], refused["os_user"]) == ("reload_refused", "cli",
                                                                             Actor.cli().os_user)
    assert "still serving the previous configuration" in refused["reason"]
    assert (unknown["protocol"], unknown["token_name"], unknown["os_user"]) == (None, None, None)


def _wait_for_events(daemon: Daemon, count: int) -> None:
    deadline = time.monotonic() + 60
    while len(daemon.events) < count:
        assert time.monotonic() < deadline, f"no reload outcome after {len(daemon.events)} of {count}"
        time.sleep(0.05)


def test_a_signal_is_credited_to_the_user_gsv_edge_reload_left_once(tmp_path: Path) -> None:
    daemon, reloader, config = setup(tmp_path, "")
    reloader.start()
    try:
        leave_name(daemon.state, "alice")
        reloader.request()
        _wait_for_events(daemon, 1)
        reloader.request()  # a bare kill -HUP: the name was claimed by the first
        _wait_for_events(daemon, 2)
        with daemon.state.transaction() as conn:  # a note from a command that never signalled
            conn.execute("INSERT INTO reload_requests (ts, os_user) VALUES (?, 'mallory')",
                         (time.time() - REQUEST_FRESH_S - 1,))
        reloader.request()
        _wait_for_events(daemon, 3)
    finally:
        reloader.stop()
    assert _changes(config.state) == [("reloaded", "cli", None, "alice"), ("reloaded", "signal", None, None),
                                      ("reloaded", "signal", None, None)]


def test_a_zone_change_waits_for_a_restart_and_is_audited_zone_by_zone(tmp_path: Path) -> None:
    daemon, reloader, config = setup(tmp_path, '[[zones]]\nname = "lobby"\ntopic = "pa/lobby"\n'
                                               '[[zones]]\nname = "ward3"\ntopic = "pa/ward3"\n')
    config.write_text('[[zones]]\nname = "lobby"\ntopic = "pa/lobby"\nvolume = 0.5\nlead_in_s = 1.0\n'
                      '[[zones]]\nname = "ward4"\noutput_device = "USB"\n')
    ok, message = reloader.reload(by=Actor.http("facilities"))
    kind, fields = outcome(daemon)
    assert ok and fields["restart_needed"] == ["zones"]
    assert [zone.name for zone in daemon.applied[0][0].zones] == ["lobby", "ward3"]  # not switched live
    assert message.endswith("at the next restart: zones (added ward4; removed ward3; lobby: volume, lead_in_s)")
    [row] = read_records(config.state)
    assert (row["outcome"], row["token_name"]) == ("reloaded", "facilities") and row["reason"] == message
