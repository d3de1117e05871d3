"""Schedules: named announcements due once at a local time or on a cron expression, kept in the state database.

The calendar arithmetic is croniter's over zoneinfo-aware datetimes; this module only decides which of its times
count. A cron time that does not exist (clocks go forward) is moved as croniter moves it (to the first valid minute
after), a one-shot's as zoneinfo reads it (with the offset before the gap); a local time that happens twice (clocks
go back) runs once, at its first occurrence. Each schedule keeps the last due time it handled, written before its
run is submitted, so no due time runs twice, even across a restart. The daemon's runner reads the table every few
seconds, so schedules added or removed from the command line count without a reload.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from daemon.config import ALL_ZONES
from daemon.core.state_db import StateDb
from daemon.vocabulary import PRIORITY_RANK

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # the rule voice names follow
ON_TIME_S = 5.0  # a run reached this late still counts as on time under the "skip" missed-run policy
MAX_STEPS = 5000  # cron times looked at for one next due time (holidays and end dates may skip many)
UTC = timezone.utc

SCHEMA = """CREATE TABLE IF NOT EXISTS schedules (
    name TEXT PRIMARY KEY,
    payload TEXT NOT NULL,  -- the say payload, a JSON object without an id
    at TEXT,  -- a one-shot's local time, ISO 8601 without an offset; NULL for a cron schedule
    cron TEXT,  -- the cron expression; NULL for a one-shot
    tz TEXT NOT NULL,  -- IANA zone the times are read in
    start_date TEXT,  -- first local date it may run (ISO), or NULL
    end_date TEXT,  -- last local date it may run (ISO), or NULL
    except_dates TEXT NOT NULL DEFAULT '',  -- local dates it does not run on, space-separated ISO
    late_s REAL,  -- run a missed due time if at most this late; NULL: skip missed runs
    created_at REAL NOT NULL,  -- Unix seconds; due times before it are not runs
    last_due REAL  -- Unix seconds of the last due time handled (run or skipped)
)"""
COLUMNS = "name, payload, at, cron, tz, start_date, end_date, except_dates, late_s, created_at, last_due"


# What each field is called where it is given: the command line's arguments, or the JSON keys of MQTT and HTTP.
OPTIONS = {"name": "NAME", "at": "--at", "cron": "--cron", "tz": "--tz", "start": "--start", "end": "--end",
           "except": "--except", "run_if_late": "--run-if-late", "payload": "--payload", "priority": "--priority",
           "text": "--text"}
FIELDS = {**{key: key for key in OPTIONS}, "run_if_late": "run_if_late_s"}
NEXT_COUNT = 3  # due times ``schedule next`` and ``GET /v1/schedules/next`` show per schedule


class ScheduleError(ValueError):
    """A schedule that cannot be added or removed as asked; the message names the argument at fault, ``field`` its
    JSON key (None where the fault is no one field's)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ScheduleExists(ScheduleError):
    """A schedule of that name is stored already."""


class NoSuchSchedule(ScheduleError):
    """No schedule of that name is stored."""


@dataclass(frozen=True)
class Schedule:
    name: str
    payload: dict[str, Any]
    tz: str
    at: str | None = None
    cron: str | None = None
    start_date: date | None = None
    end_date: date | None = None
    except_dates: frozenset[date] = field(default_factory=frozenset)
    late_s: float | None = None  # None: skip missed runs
    created_at: float = 0.0
    last_due: float | None = None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    def run_id(self, due: datetime) -> str:
        """The stable id of the run due at ``due``: the name and the due time in UTC (a '+' offset could not be
        part of an id, which may end up in an MQTT topic)."""
        return f"{self.name}@{due.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"

    def grace_s(self) -> float:
        return ON_TIME_S if self.late_s is None else max(self.late_s, ON_TIME_S)

    def timing(self) -> str:
        """When it runs, in one line (``schedule list``, and the audit row of its addition)."""
        when = f"at {self.at}" if self.at else f"cron '{self.cron}'"
        extra = [f"from {self.start_date}" if self.start_date else "",
                 f"until {self.end_date}" if self.end_date else "",
                 f"except {','.join(sorted(d.isoformat() for d in self.except_dates))}" if self.except_dates else "",
                 "missed: skip" if self.late_s is None else f"missed: run if < {self.late_s:g} s late"]
        return " ".join([when, self.tz, *(e for e in extra if e)])

    def to_dict(self) -> dict[str, Any]:
        """The schedule as JSON lists it (``schedule list --json``, MQTT's retained list, ``GET /v1/schedules``),
        in the keys an addition over MQTT or HTTP takes (:data:`FIELDS`)."""
        return {"name": self.name, "payload": self.payload, "at": self.at, "cron": self.cron, "tz": self.tz,
                "start": self.start_date and self.start_date.isoformat(),
                "end": self.end_date and self.end_date.isoformat(),
                "except": sorted(d.isoformat() for d in self.except_dates), "run_if_late_s": self.late_s}

    def listed(self, now: datetime) -> dict[str, Any]:
        """:meth:`to_dict` with its next due time after ``now`` (local ISO, null: never again) and that run's id."""
        dues = next_dues(self, now, 1)
        return {**self.to_dict(), "next": dues[0].isoformat() if dues else None,
                "next_id": self.run_id(dues[0]) if dues else None}


def zone(name: str, names: dict[str, str] = OPTIONS) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(f"{names['tz']} {name!r}: not an IANA time zone (e.g. Europe/Berlin)", "tz") from exc


def local_zone_name() -> str:
    """The box's own zone (``/etc/localtime``), or UTC when it cannot be named."""
    try:
        target = str(Path("/etc/localtime").resolve())
        name = target.split("zoneinfo/", 1)[1]
        ZoneInfo(name)
        return name
    except (IndexError, OSError, ZoneInfoNotFoundError, ValueError):
        return "UTC"


def _date(value: str, key: str, names: dict[str, str]) -> date:
    try:
        return date.fromisoformat(value.strip())
    except ValueError as exc:
        raise ScheduleError(f"{names[key]} {value!r}: not a date (YYYY-MM-DD)", key) from exc


def check_payload(text: str, names: dict[str, str] = OPTIONS) -> dict[str, Any]:
    """A say payload given as JSON text, in the shape :func:`check_say` asks for."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ScheduleError(f"{names['payload']}: not JSON ({exc})", "payload") from exc
    return check_say(data, names)


def check_say(data: object, names: dict[str, str] = OPTIONS) -> dict[str, Any]:
    """The shape a say payload must have to be stored; the daemon checks the rest (voices, limits) when it runs."""
    where = names["payload"]
    if not isinstance(data, dict):
        raise ScheduleError(f"{where}: must be a JSON object", "payload")
    text_value, parts = data.get("text"), data.get("parts")
    if not (isinstance(text_value, str) and text_value.strip()) and not (isinstance(parts, list) and parts):
        raise ScheduleError(f"{where}: needs \"text\" or a non-empty \"parts\" list", "payload")
    if "id" in data:
        raise ScheduleError(f"{where}: no \"id\": each run's id is the schedule's name and due time", "payload")
    if data.get("priority", "normal") not in PRIORITY_RANK:
        raise ScheduleError(f"{names['priority']}: one of {', '.join(PRIORITY_RANK)}", "priority")
    return data


def zones_problem(payload: dict[str, Any], zones: Collection[str]) -> str | None:
    """Why the payload's ``zones`` name no configured zone, said when the schedule is added rather than at its
    first run (the daemon checks them again then: a restart may have changed the zones)."""
    if "zones" not in payload:
        return None
    wanted = payload["zones"]
    wanted = [wanted] if isinstance(wanted, str) else wanted
    if not zones:
        return "zones: this box has no [[zones]] configured"
    if not isinstance(wanted, list) or not wanted or not all(isinstance(name, str) for name in wanted):
        return f'zones: a list of zone names, or "{ALL_ZONES}"'
    unknown = next((name for name in wanted if name != ALL_ZONES and name not in zones), None)
    return None if unknown is None else f"zones: unknown zone {unknown!r} (configured: {', '.join(zones)})"


def say_payload(text: str | None, payload: dict[str, Any] | None, overrides: dict[str, Any],
                names: dict[str, str] = OPTIONS) -> dict[str, Any]:
    """The say payload a schedule stores: ``text`` alone, or ``payload``, with ``overrides`` (voice, lang,
    priority: those not None) laid over it; exactly one of ``text`` and ``payload`` is given."""
    if (text is None) == (payload is None):
        both = text is not None
        raise ScheduleError(f"give {names['text']} or {names['payload']}{', not both' if both else ''}",
                            None if both else "text")
    if text is not None and not text.strip():
        raise ScheduleError(f"{names['text']}: empty", "text")
    data = {"text": text} if text is not None else dict(check_say(payload, names))
    data.update({key: value for key, value in overrides.items() if value is not None})
    return check_say(data, names)


def make(name: str, payload: dict[str, Any], tz: str, *, at: str | None = None, cron: str | None = None,
         start: str | None = None, end: str | None = None, exceptions: list[str] | None = None,
         late_s: float | None = None, now: float | None = None, names: dict[str, str] = OPTIONS,
         zones: Collection[str] | None = None) -> Schedule:
    """A checked schedule; every problem names the argument at fault as ``names`` calls it (the command line's
    options by default, :data:`FIELDS` for JSON). ``zones``: the configured zone names, to check the payload's."""
    if not NAME_RE.fullmatch(name):
        raise ScheduleError(f"{names['name']} {name!r}: 1-64 letters, digits, '_', '.', '-', starting with a letter "
                            "or digit", "name")
    zone(tz, names)
    if zones is not None and (problem := zones_problem(payload, zones)):
        raise ScheduleError(f"{names['payload']}: {problem}", "payload")
    if (at is None) == (cron is None):
        raise ScheduleError(f"give {names['at']} or {names['cron']}{', not both' if at is not None else ''}",
                            None if at is not None else "at")
    now = time.time() if now is None else now
    if cron is not None and not croniter.is_valid(cron):
        raise ScheduleError(f"{names['cron']} {cron!r}: not a cron expression (minute hour day month weekday)",
                            "cron")
    if at is not None:
        try:
            moment = datetime.fromisoformat(at)
        except ValueError as exc:
            raise ScheduleError(f"{names['at']} {at!r}: not a local ISO time (e.g. 2026-12-24T08:00)", "at") from exc
        if moment.tzinfo is not None:
            raise ScheduleError(f"{names['at']} {at!r}: a local time without an offset; the zone is {names['tz']}",
                                "at")
    if late_s is not None and not late_s >= 0:
        raise ScheduleError(f"{names['run_if_late']} {late_s:g}: must be 0 or more seconds", "run_if_late")
    schedule = Schedule(name, payload, tz, at=at, cron=cron,
                        start_date=_date(start, "start", names) if start else None,
                        end_date=_date(end, "end", names) if end else None,
                        except_dates=frozenset(_date(d, "except", names) for d in exceptions or ()),
                        late_s=late_s, created_at=now)
    if schedule.start_date and schedule.end_date and schedule.end_date < schedule.start_date:
        raise ScheduleError(f"{names['end']}: before {names['start']}", "end")
    if at is not None and not next_dues(schedule, datetime.fromtimestamp(now, UTC), 1):
        raise ScheduleError(f"{names['at']} {at!r}: already past (or excluded by {names['start']}/{names['end']}/"
                            f"{names['except']})", "at")
    return schedule


def _allowed(schedule: Schedule, local: datetime) -> bool:
    day = local.date()
    return (day not in schedule.except_dates and (schedule.start_date is None or day >= schedule.start_date)
            and (schedule.end_date is None or day <= schedule.end_date))


def _candidates(schedule: Schedule, after: datetime) -> Iterator[datetime]:
    """Local due times after ``after``, in order, a repeated wall-clock time only once."""
    tz = schedule.zone
    if schedule.at is not None:
        due = datetime.fromisoformat(schedule.at).replace(tzinfo=tz)  # fold 0: the first of a repeated time
        if due.astimezone(UTC) > after:
            yield due
        return
    base = after.astimezone(tz)
    wall = base.replace(tzinfo=None)
    it = croniter(schedule.cron, base)
    for _ in range(MAX_STEPS):
        due = it.get_next(datetime)
        if due.replace(tzinfo=None) <= wall:  # the clocks went back: this wall-clock time has had its run
            continue
        wall = due.replace(tzinfo=None)
        yield due


def next_dues(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    """Up to ``count`` due times strictly after ``after`` (aware), local to the schedule's zone."""
    dues: list[datetime] = []
    for due in _candidates(schedule, after):
        if schedule.end_date is not None and due.date() > schedule.end_date:
            break
        if _allowed(schedule, due):
            dues.append(due)
            if len(dues) == count:
                break
    return dues


@dataclass(frozen=True)
class Decision:
    """What to do now about a schedule: run ``due`` (or skip it: ``run`` False), and when to look again."""

    due: datetime | None
    run: bool
    wake_at: datetime | None  # the next due time after this one, None: never again


def decide(schedule: Schedule, now: datetime) -> Decision:
    """The latest due time that has come since the last one handled (older missed ones are dropped: a backlog of
    bells is no use), whether the missed-run policy lets it run this late, and the next one to wait for."""
    handled = max(schedule.last_due or schedule.created_at, schedule.created_at)
    since = datetime.fromtimestamp(handled, UTC)
    latest = None
    for due in _candidates(schedule, since):
        if due.astimezone(UTC) > now:
            break
        if schedule.end_date is not None and due.date() > schedule.end_date:
            break
        if _allowed(schedule, due):
            latest = due
    following = next_dues(schedule, max(now, since), 1)
    wake = following[0] if following else None
    if latest is None:
        return Decision(None, False, wake)
    late = (now - latest.astimezone(UTC)).total_seconds()
    return Decision(latest, late <= schedule.grace_s(), wake)


def _row(row: tuple) -> Schedule:
    name, payload, at, cron, tz, start, end, excepted, late_s, created_at, last_due = row
    return Schedule(name, json.loads(payload), tz, at=at, cron=cron,
                    start_date=date.fromisoformat(start) if start else None,
                    end_date=date.fromisoformat(end) if end else None,
                    except_dates=frozenset(date.fromisoformat(d) for d in excepted.split()),
                    late_s=late_s, created_at=created_at, last_due=last_due)


class ScheduleStore:
    """Schedules in the ``schedules`` table; safe beside a running daemon (WAL, one short transaction per write)."""

    def __init__(self, db: StateDb) -> None:
        self._db = db
        with db.transaction() as conn:
            conn.execute(SCHEMA)

    def add(self, schedule: Schedule, names: dict[str, str] = OPTIONS) -> None:
        with self._db.transaction() as conn:
            if conn.execute("SELECT 1 FROM schedules WHERE name = ?", (schedule.name,)).fetchone():
                raise ScheduleExists(f"{names['name']} {schedule.name!r}: a schedule of that name exists (remove it "
                                     "first)", "name")
            conn.execute(
                f"INSERT INTO schedules ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (schedule.name, json.dumps(schedule.payload, ensure_ascii=False), schedule.at, schedule.cron,
                 schedule.tz, schedule.start_date and schedule.start_date.isoformat(),
                 schedule.end_date and schedule.end_date.isoformat(),
                 " ".join(sorted(d.isoformat() for d in schedule.except_dates)), schedule.late_s,
                 schedule.created_at, schedule.last_due))

    def list(self) -> list[Schedule]:
        return [_row(row) for row in self._db.query(f"SELECT {COLUMNS} FROM schedules ORDER BY name")]

    def remove(self, name: str, names: dict[str, str] = OPTIONS) -> None:
        with self._db.transaction() as conn:
            if conn.execute("DELETE FROM schedules WHERE name = ?", (name,)).rowcount == 0:
                raise NoSuchSchedule(f"{names['name']} {name!r}: no such schedule", "name")

    def mark_handled(self, name: str, due: datetime) -> bool:
        """Record ``due`` as handled, before its run is submitted; False if it was handled already (or the
        schedule is gone), so the caller does not submit it twice."""
        stamp = due.astimezone(UTC).timestamp()
        with self._db.transaction() as conn:
            return conn.execute(
                "UPDATE schedules SET last_due = ? WHERE name = ? AND (last_due IS NULL OR last_due < ?)",
                (stamp, name, stamp)).rowcount == 1


def after_all(now: datetime, schedules: list[Schedule]) -> datetime | None:
    """The earliest next due time among ``schedules`` (for ``schedule next`` and the runner's sleep)."""
    dues = [d for s in schedules for d in next_dues(s, now, 1)]
    return min(dues, key=lambda d: d.astimezone(UTC)) if dues else None



def upcoming(schedules: list[Schedule], now: datetime, count: int = NEXT_COUNT) -> list[tuple[datetime, Schedule]]:
    """The next ``count`` due times of each schedule, soonest first."""
    return sorted(((due, s) for s in schedules for due in next_dues(s, now, count)),
                  key=lambda pair: pair[0].astimezone(UTC))
