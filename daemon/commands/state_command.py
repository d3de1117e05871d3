"""What the commands that edit the state database beside a running daemon share (``token``, ``schedule``).

Each writes through its own connection (WAL), so it works while the daemon runs: read the configuration for the
state directory, open the database, do the work, and answer every failure in one line with its exit status.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from daemon.commands import exit_codes
from daemon.config import DEFAULT_CONFIG_PATH, ConfigError, Settings, load_settings
from daemon.core.state_db import StateDb, StateDbError


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help=f"TOML configuration naming the state directory (default {DEFAULT_CONFIG_PATH})")


def run_on_state(command: str, config: Path | None, work: Callable[[StateDb, Settings], None],
                 input_error: type[Exception]) -> int:
    """``work`` on the state database; ``input_error`` is what it raises for a bad argument (exit INPUT)."""
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        return exit_codes.fail(command, exc, exit_codes.SETUP)
    try:
        db = StateDb.in_dir(settings.state_dir)
    except (StateDbError, OSError) as exc:
        return exit_codes.fail(command, f"state_dir {settings.state_dir}: {exc}", exit_codes.FAILED)
    try:
        work(db, settings)
    except input_error as exc:
        return exit_codes.fail(command, exc, exit_codes.INPUT)
    except StateDbError as exc:
        return exit_codes.fail(command, f"state_dir {settings.state_dir}: {exc}", exit_codes.FAILED)
    finally:
        db.close()
    return exit_codes.OK
