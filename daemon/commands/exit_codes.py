"""The exit statuses every ``gsv-edge`` command uses, one cause, one code (docs/operations.md's table is this one).

Scripts and systemd rely on them: ``serve`` exits ``SETUP`` on a configuration it cannot run with, and the unit
does not restart it for that (it would fail the same way until someone edits the file).
"""

from __future__ import annotations

import sys

OK = 0
# Synthesis, audio device, conversion (parity out of bounds), or the daemon refused / did not answer.
FAILED = 1
# Arguments: unknown option, missing argument, one that contradicts another (argparse's own code).
USAGE = 2
# What the user handed in: empty text, unknown voice, unusable clip, a file that is not what it should be,
# an output path that cannot be written.
INPUT = 3
# What the box is set up with: config file, model bundle, hardware profile, a missing optional package.
SETUP = 4
# Interrupted from the keyboard (128 + SIGINT), as shells report it.
INTERRUPTED = 130


def fail(command: str, message: object, code: int) -> int:
    """Say what went wrong in one line on stderr, ``gsv-edge COMMAND: message``; returns ``code`` to exit with."""
    print(f"gsv-edge {command}: {message}", file=sys.stderr)
    return code
