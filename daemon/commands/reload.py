"""``gsv-edge reload``: check what the daemon will load, signal it (SIGHUP) and wait for its outcome.

It refuses before signalling when the config or a bundle file is wrong, or when ``--config`` names a file the
daemon never re-reads; the daemon itself applies the reload (:mod:`daemon.app.reload`). A signal names no
sender, so before it the command leaves its OS user in the state database, for the reload's audit row.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path

from daemon.app.reload import PID_FILE, leave_name
from daemon.commands import exit_codes
from daemon.config import DEFAULT_CONFIG_PATH, ConfigError, load_settings
from daemon.core.audit import local_user
from daemon.core.state_db import DB_NAME, StateDb, StateDbError, open_read_only
from daemon.model.bundle import Bundle

WAIT_S = 300.0  # how long ``gsv-edge reload`` waits: loading and warming a large bundle takes a while


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help="the config file the running daemon re-reads (default: that file, found through "
                             f"the state directory; {DEFAULT_CONFIG_PATH} or GSV_EDGE_STATE_DIR locate the daemon); "
                             "checked with its bundle before anything is sent")


def _last_reload(state_dir: Path) -> tuple[float, bool, str] | None:
    try:
        conn = open_read_only(state_dir)
    except StateDbError:
        return None
    try:
        row = conn.execute("SELECT ts, ok, message FROM reloads ORDER BY rowid DESC LIMIT 1").fetchone()
    except Exception:  # sqlite3.Error: the table appears with the first reload
        return None
    finally:
        conn.close()
    return (row[0], bool(row[1]), row[2]) if row else None


def _daemon_config(state_dir: Path, pid: int) -> Path | None:
    """The config file the daemon with ``pid`` re-reads; None when it was started without ``--config``."""
    conn = open_read_only(state_dir)
    try:
        row = conn.execute("SELECT config FROM running WHERE pid = ?", (pid,)).fetchone()
    except sqlite3.Error:  # no such table: a daemon from before the record was kept
        row = None
    finally:
        conn.close()
    if row is None:
        raise StateDbError(f"the daemon (pid {pid}) recorded no config file in {state_dir / DB_NAME}; restart it")
    return Path(row[0]) if row[0] is not None else None


def _leave_name(state_dir: Path) -> None:
    """Who is reloading, for the daemon's audit row; without it the row says only ``signal``."""
    try:
        db = StateDb.in_dir(state_dir)
    except (StateDbError, OSError) as exc:
        print(f"gsv-edge reload: warning: the audit trail will not name you: {exc}", file=sys.stderr)
        return
    try:
        leave_name(db, local_user())
    except StateDbError as exc:
        print(f"gsv-edge reload: warning: the audit trail will not name you: {exc}", file=sys.stderr)
    finally:
        db.close()


def _not_sent(reason: str, code: int = exit_codes.SETUP) -> int:
    return exit_codes.fail("reload", f"not sent, {reason}", code)


def run(args: argparse.Namespace) -> int:
    """Check here what the daemon will load (its own config file and the bundle it names), so nothing wrong is
    signalled; then SIGHUP the daemon and report what it did."""
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        return _not_sent(f"the configuration is invalid: {exc}")
    state_dir = settings.state_dir
    pid_file = state_dir / PID_FILE
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)  # alive: before the checks, which may hash gigabytes
        daemon_config = _daemon_config(state_dir, pid)
    except (OSError, ValueError, StateDbError) as exc:
        return exit_codes.fail("reload", f"no running daemon found through {pid_file}: {exc}", exit_codes.FAILED)
    runs_with = daemon_config or DEFAULT_CONFIG_PATH  # started without --config, it reads the default file
    if args.config is not None and args.config.resolve() != runs_with.resolve():
        what = daemon_config or f"none given, so {DEFAULT_CONFIG_PATH} when present"
        return _not_sent(f"{args.config} is not the config file the daemon (pid {pid}) re-reads ({what}); "
                         "edit that one", exit_codes.USAGE)
    if args.config is None and daemon_config is not None:
        try:
            settings = load_settings(daemon_config)
        except ConfigError as exc:
            return _not_sent(f"the configuration is invalid: {exc}")
    if settings.engine.bundle is not None:
        try:
            Bundle.load(settings.engine.bundle)  # every digest, as the daemon's load checks them
        except (OSError, ValueError, KeyError, TypeError) as exc:  # BundleError is a ValueError
            return _not_sent(f"the bundle fails its check: {exc}")
    _leave_name(state_dir)
    try:
        sent = time.time()
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        return exit_codes.fail("reload", f"no running daemon found through {pid_file}: {exc}", exit_codes.FAILED)
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        outcome = _last_reload(state_dir)
        if outcome is not None and outcome[0] >= sent:
            print(f"gsv-edge reload: {outcome[2]}", file=sys.stdout if outcome[1] else sys.stderr)
            return exit_codes.OK if outcome[1] else exit_codes.FAILED
        time.sleep(0.2)
    print(f"gsv-edge reload: sent SIGHUP to {pid}, no outcome within {WAIT_S:.0f} s; see the daemon's log",
          file=sys.stderr)
    return exit_codes.FAILED
