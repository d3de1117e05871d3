"""Liveness of the daemon's worker loops, for the systemd watchdog.

A thread that is alive but stuck (a hung device write, a deadlock) looks healthy from outside; so each
loop beats whenever it makes progress, and the watchdog pings systemd only while every loop has beaten
recently. A loop about to wait on something slow but bounded (playing a long sentence) says so with
``grace_s``, so being busy is not mistaken for being stuck.
"""

from __future__ import annotations

import threading
import time


class Heartbeat:
    def __init__(self) -> None:
        self._deadlines: dict[str, float] = {}  # loop -> monotonic time its grace ends
        self._lock = threading.Lock()

    def beat(self, loop: str, grace_s: float = 0.0) -> None:
        """``loop`` made progress now and may legitimately stay silent for ``grace_s`` more seconds."""
        with self._lock:
            self._deadlines[loop] = time.monotonic() + max(0.0, grace_s)

    def stale(self, max_silence_s: float, now: float | None = None) -> list[str]:
        """Loops silent for longer than ``max_silence_s`` beyond their grace (never-seen loops are not listed)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            return sorted(loop for loop, deadline in self._deadlines.items() if now - deadline > max_silence_s)
