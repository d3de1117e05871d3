"""``gsv-edge schedule add|list|remove|next``: announcements at set times (:mod:`daemon.core.schedules`).

It writes the state database through its own connection (WAL), so it works while the daemon runs; the daemon
looks at the table every few seconds and runs what is added here without a reload.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone

from daemon.commands import exit_codes
from daemon.commands.audit import record_change
from daemon.commands.state_command import add_config_argument, run_on_state
from daemon.config import Settings
from daemon.core.schedules import (
    NEXT_COUNT,
    Schedule,
    ScheduleError,
    ScheduleStore,
    check_payload,
    local_zone_name,
    make,
    next_dues,
    say_payload,
    upcoming,
)
from daemon.vocabulary import PRIORITY_RANK


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="schedule_command", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="add a named announcement, once at a local time or on a cron expression")
    add.add_argument("name", help="schedule name (letters, digits, '_', '.', '-'); each run's id starts with it")
    add.add_argument("--at", metavar="LOCAL_ISO_TIME", help="once, at this local time (e.g. 2026-12-24T08:00)")
    add.add_argument("--cron", metavar="EXPR", help='recurring: "minute hour day month weekday" (e.g. "0 8 * * 1-5")')
    add.add_argument("--text", help="what to say")
    add.add_argument("--payload", metavar="JSON", help="a say payload (a JSON object, as on MQTT; text or parts)")
    add.add_argument("--voice", metavar="V")
    add.add_argument("--lang", metavar="L")
    add.add_argument("--priority", metavar="P", help=f"one of {', '.join(PRIORITY_RANK)} (default normal)")
    add.add_argument("--tz", metavar="ZONE", help="IANA time zone the times are read in (default the box's own)")
    add.add_argument("--start", metavar="DATE", help="first local date it may run (YYYY-MM-DD)")
    add.add_argument("--end", metavar="DATE", help="last local date it may run (YYYY-MM-DD)")
    add.add_argument("--except", dest="exceptions", action="append", metavar="DATE",
                     help="a local date it does not run on (a holiday); repeat it or separate with commas")
    add.add_argument("--run-if-late", type=float, metavar="SECONDS",
                     help="a run missed (daemon down, clock jump) still plays if at most this late; "
                          "default: missed runs are skipped")
    add_config_argument(add)
    lst = sub.add_parser("list", help="list the schedules")
    lst.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    add_config_argument(lst)
    remove = sub.add_parser("remove", help="delete a schedule: its future runs do not happen")
    remove.add_argument("name")
    add_config_argument(remove)
    nxt = sub.add_parser("next", help=f"the next {NEXT_COUNT} due times of each schedule, soonest first")
    add_config_argument(nxt)


def _schedule(args: argparse.Namespace, settings: Settings) -> Schedule:
    payload = say_payload(args.text, None if args.payload is None else check_payload(args.payload),
                          {"voice": args.voice, "lang": args.lang, "priority": args.priority})
    exceptions = [d for value in args.exceptions or () for d in value.split(",") if d.strip()]
    return make(args.name, payload, args.tz or local_zone_name(), at=args.at, cron=args.cron, start=args.start,
                end=args.end, exceptions=exceptions, late_s=args.run_if_late,
                zones=[zone.name for zone in settings.zones])


def _run(store: ScheduleStore, args: argparse.Namespace, settings: Settings) -> None:
    now = datetime.now(timezone.utc)
    if args.schedule_command == "add":
        schedule = _schedule(args, settings)
        store.add(schedule)
        record_change(settings, "schedule_added", schedule.name, schedule.timing())
        dues = next_dues(schedule, now, 1)
        first = dues[0].isoformat() if dues else "never"
        print(f"schedule '{schedule.name}' added ({schedule.timing()}); next run {first}")
    elif args.schedule_command == "list":
        schedules = store.list()
        if args.json:
            for s in schedules:
                print(json.dumps(s.to_dict(), ensure_ascii=False))
        else:
            print("\n".join(f"{s.name}  {s.timing()}  {json.dumps(s.payload, ensure_ascii=False)}" for s in schedules)
                  if schedules else "no schedules")
    elif args.schedule_command == "next":
        dues = upcoming(store.list(), now)
        print("\n".join(f"{due.isoformat()}  {s.name}  ({s.run_id(due)})" for due, s in dues)
              if dues else "nothing due")
    else:
        store.remove(args.name)
        record_change(settings, "schedule_removed", args.name)
        print(f"schedule '{args.name}' removed")


def _usage_problem(args: argparse.Namespace) -> str | None:
    """Options that exclude each other, said in one line (argparse would print its usage too)."""
    if args.schedule_command != "add":
        return None
    if (args.at is None) == (args.cron is None):
        return "give --at or --cron, not both" if args.at is not None else "give --at LOCAL_ISO_TIME or --cron EXPR"
    if (args.text is None) == (args.payload is None):
        return "give --text or --payload, not both" if args.text is not None else "give --text TEXT or --payload JSON"
    return None


def run(args: argparse.Namespace) -> int:
    if problem := _usage_problem(args):
        return exit_codes.fail("schedule", problem, exit_codes.USAGE)
    return run_on_state("schedule", args.config, lambda db, settings: _run(ScheduleStore(db), args, settings),
                        ScheduleError)
