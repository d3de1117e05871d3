"""``gsv-edge audit``: print the audit trail (every request, its outcome and the audio's SHA-256).

The daemon writes it (:class:`~daemon.core.audit.AuditLog`); this reads the state database read-only, so it
works while the daemon runs. :func:`record_change` is how the other commands (``voice``, ``token``) add their
changes to it, with the OS user who ran them.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from daemon.commands import exit_codes
from daemon.config import DEFAULT_CONFIG_PATH, ConfigError, Settings, load_settings
from daemon.core.audit import Actor, AuditLog, ChangeOutcome, read_records
from daemon.core.state_db import StateDb, StateDbError

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(value: str, now: float | None = None) -> float:
    """``30m``, ``12h``, ``7d`` (ago), or an ISO 8601 date/time (local time when no zone is given)."""
    now = time.time() if now is None else now
    if match := _RELATIVE.match(value.strip()):
        return now - float(match.group(1)) * _UNIT_S[match.group(2)]
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is neither a duration (30m, 12h, 7d) nor an ISO time") from None
    return moment.timestamp() if moment.tzinfo else moment.astimezone().timestamp()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help=f"TOML configuration naming the state directory (default {DEFAULT_CONFIG_PATH})")
    parser.add_argument("--since", type=parse_since, default=None, metavar="WHEN",
                        help="only records from WHEN on: 30m, 12h, 7d ago or an ISO 8601 time")
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")


def local_time(ts: float) -> str:
    """Unix seconds as an ISO 8601 time in the box's zone, to the second."""
    return datetime.fromtimestamp(ts, timezone.utc).astimezone().isoformat(timespec="seconds")


def _format(record: dict[str, Any]) -> str:
    when = local_time(record["ts"])
    audio = (record["audio_sha256"] or "")[:16]
    where = record["site_id"] or record["client"] or record["topic"] or ""
    if record["token_name"] or record["os_user"]:
        where = f"{record['token_name'] or record['os_user']}@{where}".rstrip("@")
    return "\t".join(
        str(part)
        for part in (when, record["outcome"], record["protocol"] or "-", where,
                     record["request_id"] or record["subject"] or "-",
                     record["voice"] or "-", audio or "-", record["reason"] or "")
    )


def record_change(settings: Settings, outcome: ChangeOutcome, subject: str, reason: str | None = None,
                  voice: str | None = None) -> None:
    """Add a change made by this command to the audit trail, as the OS user running it; a trail that cannot be
    written is said on stderr (the change itself is done)."""
    try:
        db = StateDb.in_dir(settings.state_dir)
    except (StateDbError, OSError) as exc:
        print(f"gsv-edge: warning: the audit trail does not record this change: {exc}", file=sys.stderr)
        return
    try:
        audit = AuditLog(db, settings.audit)
        audit.changed(outcome, Actor.cli(), subject=subject, reason=reason, voice=voice)
        if audit.write_errors:
            print("gsv-edge: warning: the audit trail does not record this change (see the log)", file=sys.stderr)
    except StateDbError as exc:
        print(f"gsv-edge: warning: the audit trail does not record this change: {exc}", file=sys.stderr)
    finally:
        db.close()


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
        records = read_records(settings.state_dir, args.since)
    except (ConfigError, StateDbError) as exc:
        return exit_codes.fail("audit", exc, exit_codes.SETUP)
    for record in records:
        print(json.dumps(record, ensure_ascii=False) if args.json else _format(record))
    return exit_codes.OK
