"""Disk and memory as the Status page shows them: read when asked, from the OS, nothing kept.

Memory comes from Linux's ``/proc``; elsewhere (or in a container that hides it) the values are None rather than
a guess. Disk space is the state directory's filesystem, where the queue, the audit trail and the rendered-audio
cache live: when it fills, the daemon cannot accept requests.
"""

from __future__ import annotations

import shutil
from pathlib import Path

PROC_SELF_STATUS = Path("/proc/self/status")
PROC_MEMINFO = Path("/proc/meminfo")


def disk_space(path: Path) -> tuple[int, int] | None:
    """(free bytes an unprivileged process may use, total bytes) of the filesystem holding ``path``."""
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return None
    return usage.free, usage.total


def _kib_field(path: Path, name: str) -> int | None:
    """``name:  1234 kB`` from a /proc file, in bytes."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        key, _, value = line.partition(":")
        if key == name:
            parts = value.split()
            if len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
                return int(parts[0]) * 1024
            return None
    return None


def resident_bytes() -> int | None:
    """This process's resident memory."""
    return _kib_field(PROC_SELF_STATUS, "VmRSS")


def memory_available() -> tuple[int, int] | None:
    """(available, total) bytes of the system's memory; available counts what caches would give back."""
    available, total = _kib_field(PROC_MEMINFO, "MemAvailable"), _kib_field(PROC_MEMINFO, "MemTotal")
    if available is None or total is None:
        return None
    return available, total
