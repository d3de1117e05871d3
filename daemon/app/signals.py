"""Signals (SIGTERM, SIGINT, SIGHUP) acted on in a thread of their own.

A Python signal handler runs in the main thread between two bytecodes. Setting a ``threading.Event`` there can
deadlock (the main thread may hold that event's lock at that instant), and a main thread blocked in a wait may not
run the handler at all when the kernel hands the signal to another thread. So the handlers here do nothing: the
signal number reaches a socket through ``signal.set_wakeup_fd`` (written by the interpreter's C handler in
whichever thread took the signal), and a watcher thread reads it and runs the action.
"""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Callable
from types import FrameType


def _noted_by_wakeup_fd(signum: int, frame: FrameType | None) -> None:
    """Replaces the default action (terminate) so that the watcher thread decides."""


class SignalActions:
    """Call an action for each signal that arrives; made, and ``on`` called, in the main thread."""

    def __init__(self) -> None:
        self._actions: dict[int, Callable[[], None]] = {}
        self._reader, self._writer = socket.socketpair()
        self._writer.setblocking(False)
        signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        threading.Thread(target=self._watch, name="gsv-signals", daemon=True).start()

    def on(self, signum: int, action: Callable[[], None]) -> None:
        self._actions[signum] = action
        signal.signal(signum, _noted_by_wakeup_fd)

    def _watch(self) -> None:
        while True:
            for signum in self._reader.recv(64):
                action = self._actions.get(signum)
                if action is not None:
                    action()
