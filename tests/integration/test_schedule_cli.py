"""``gsv-edge schedule``, run as a user runs it: add, list, next, remove against a state database the daemon holds
open, a change row per add and remove, and one line with the documented exit status for every mistake."""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.commands import exit_codes
from daemon.core.audit import CHANGE_OUTCOMES, read_records
from daemon.core.schedules import ScheduleStore
from tests.state_box import StateBox


class Box(StateBox):
    def __init__(self, root: Path) -> None:
        super().__init__(root, "schedule")
        self.store = ScheduleStore(self.db)


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Box]:
    b = Box(tmp_path)
    yield b
    b.db.close()


def test_add_list_next_remove(box: Box) -> None:
    added = box.gsv("add", "bell", "--cron", "0 8 * * 1-5", "--text", "Classes begin.", "--priority", "high",
                    "--tz", "Europe/Berlin", "--except", "2099-12-24,2099-12-25", "--run-if-late", "120")
    assert added.returncode == exit_codes.OK and not added.stderr, added.stderr
    assert "schedule 'bell' added" in added.stdout and "next run" in added.stdout
    (stored,) = box.store.list()  # the daemon's connection, open all along, sees it
    assert stored.payload == {"text": "Classes begin.", "priority": "high"} and stored.late_s == 120
    once = box.gsv("add", "close", "--at", "2099-06-01T18:00", "--payload",
                   '{"parts": [{"chime": true}, {"text": "We close now."}]}', "--tz", "Asia/Shanghai")
    assert once.returncode == exit_codes.OK, once.stderr

    listed = box.gsv("list", "--json")
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["name"], r["cron"], r["at"], r["tz"]) for r in rows] == [
        ("bell", "0 8 * * 1-5", None, "Europe/Berlin"), ("close", None, "2099-06-01T18:00", "Asia/Shanghai")]
    nxt = box.gsv("next")
    assert nxt.returncode == exit_codes.OK and "bell@" in nxt.stdout and "close@2099-06-01T10:00:00Z" in nxt.stdout

    removed = box.gsv("remove", "bell")
    assert removed.returncode == exit_codes.OK and [s.name for s in box.store.list()] == ["close"]
    changes = [(r["outcome"], r["subject"], r["os_user"]) for r in read_records(box.state_dir)
               if r["outcome"] in CHANGE_OUTCOMES]
    me = getpass.getuser()
    assert changes == [("schedule_added", "bell", me), ("schedule_added", "close", me),
                       ("schedule_removed", "bell", me)]


@pytest.mark.parametrize(("args", "code", "words"), [
    (["add", "b", "--cron", "61 * * * *", "--text", "x"], exit_codes.INPUT, ["--cron", "61 * * * *"]),
    (["add", "b", "--cron", "0 8 * * *", "--text", "x", "--tz", "Mars/Olympus"], exit_codes.INPUT, ["--tz"]),
    (["add", "b", "--at", "2099-01-01T08:00", "--cron", "0 8 * * *", "--text", "x"], exit_codes.USAGE,
     ["--at", "--cron", "not both"]),
    (["add", "b", "--cron", "0 8 * * *"], exit_codes.USAGE, ["--text", "--payload"]),
    (["add", "b", "--cron", "0 8 * * *", "--payload", "{oops"], exit_codes.INPUT, ["--payload", "JSON"]),
    (["add", "b", "--cron", "0 8 * * *", "--payload", '{"voice": "anna"}'], exit_codes.INPUT, ["--payload", "text"]),
    (["add", "b", "--at", "2001-01-01T08:00", "--text", "x"], exit_codes.INPUT, ["--at", "past"]),
    (["add", "no/slash", "--cron", "0 8 * * *", "--text", "x"], exit_codes.INPUT, ["NAME", "no/slash"]),
    (["add", "b", "--cron", "0 8 * * *", "--text", "x", "--priority", "urgent"], exit_codes.INPUT, ["--priority"]),
    (["remove", "nope"], exit_codes.INPUT, ["nope", "no such schedule"]),
    (["add", "b", "--cron", "0 8 * * *", "--payload", '{"text": "x", "zones": ["lobby"]}'], exit_codes.INPUT,
     ["--payload", "zones", "no [[zones]] configured"]),
])
def test_a_mistake_is_one_line_with_its_exit_status(box: Box, args: list[str], code: int, words: list[str]) -> None:
    result = box.gsv(*args)
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("gsv-edge schedule: ") and all(w in result.stderr for w in words), result.stderr
    assert box.store.list() == []


def test_a_zone_the_config_does_not_name_is_refused_when_added(box: Box) -> None:
    box.config.write_text(box.config.read_text() + '\n[[zones]]\nname = "lobby"\ntopic = "pa/lobby"\n')
    misspelt = box.gsv("add", "b", "--cron", "0 8 * * *", "--payload", '{"text": "x", "zones": ["lobyy"]}')
    assert misspelt.returncode == exit_codes.INPUT and "unknown zone 'lobyy' (configured: lobby)" in misspelt.stderr
    added = box.gsv("add", "b", "--cron", "0 8 * * *", "--payload", '{"text": "x", "zones": ["lobby"]}')
    assert added.returncode == exit_codes.OK, added.stderr
    assert [s.payload["zones"] for s in box.store.list()] == [["lobby"]]
