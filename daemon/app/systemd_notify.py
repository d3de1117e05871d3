"""Talking to systemd (``Type=notify``) without libsystemd or systemd-python.

The protocol of sd_notify(3) is one datagram of ``KEY=VALUE`` lines sent to the unix socket named by
``$NOTIFY_SOCKET`` (a leading ``@`` means the abstract namespace). Outside systemd the variable is unset
and every call is a no-op, so the daemon runs the same from a shell, in tests and under systemd.

The daemon says ``READY=1`` only once the engine is warm and the broker connected, ``EXTEND_TIMEOUT_USEC``
while TensorRT engines build, ``STOPPING=1`` on SIGTERM, and ``WATCHDOG=1`` only while its worker loops
keep beating (:mod:`daemon.core.heartbeat`): a hung daemon stops pinging and systemd restarts it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

log = logging.getLogger(__name__)

DEFAULT_CHECK_S = 5.0  # how often STATUS= is refreshed when systemd asks for no watchdog
MIN_SILENCE_S = 3.0  # idle loops beat about once a second: never call one stuck sooner than this
SILENCE_S = 60.0  # a loop silent this long is stuck, where systemd sets no watchdog interval (and for the console)


class Notifier:
    """Sends sd_notify messages; ``address`` None (not under systemd) turns every call into a no-op."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_s = watchdog_usec / 1e6 if watchdog_usec else None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        """``NOTIFY_SOCKET`` and ``WATCHDOG_USEC`` as systemd sets them (``WATCHDOG_PID``, when set, must be us)."""
        watchdog_usec = None
        pid = environ.get("WATCHDOG_PID")
        if pid is None or pid == str(os.getpid()):
            try:
                watchdog_usec = int(environ.get("WATCHDOG_USEC", "0")) or None
            except ValueError:
                log.warning("ignoring WATCHDOG_USEC=%r: not a number", environ.get("WATCHDOG_USEC"))
        return cls(environ.get("NOTIFY_SOCKET") or None, watchdog_usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *assignments: str) -> bool:
        """One datagram of ``KEY=VALUE`` lines; False when not under systemd or the send failed."""
        if self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(assignments).encode("utf-8"), target)
        except OSError as exc:
            log.warning("cannot notify systemd at %s: %s", self.address, exc)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={status}")

    def stopping(self, status: str) -> bool:
        return self.send("STOPPING=1", f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> bool:
        """The current start/stop timeout now ends ``seconds`` from now at the earliest."""
        return self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")

    @contextmanager
    def extending_timeout(self, window_s: float, limit_s: float) -> Iterator[None]:
        """Keep the start timeout ``window_s`` ahead while the block runs (a TensorRT build), for at most
        ``limit_s``: a build that hangs still ends in a timeout."""
        if not self.enabled:
            yield
            return
        done = threading.Event()

        def keep_extending() -> None:
            deadline = time.monotonic() + limit_s
            while time.monotonic() < deadline:
                self.extend_timeout(window_s)
                if done.wait(window_s / 3):
                    return
            log.error("still starting after %.0f s: no longer extending systemd's start timeout", limit_s)

        thread = threading.Thread(target=keep_extending, name="gsv-extend-timeout", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()


class Watchdog:
    """Pings systemd at half its watchdog interval while ``problems`` reports none; keeps ``STATUS=`` current.

    ``problems(max_silence_s)`` lists what is wrong (stuck loops, a dead network thread); a non-empty list
    withholds the ping, so systemd's ``WatchdogSec`` restarts a daemon that hangs.
    """

    def __init__(
        self,
        notifier: Notifier,
        problems: Callable[[float], list[str]],
        status: Callable[[], str],
    ) -> None:
        self._notifier = notifier
        self._problems = problems
        self._status = status
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gsv-watchdog", daemon=True)

    def start(self) -> None:
        if self._notifier.enabled:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        watchdog_s = self._notifier.watchdog_s
        interval = watchdog_s / 2 if watchdog_s else DEFAULT_CHECK_S
        max_silence = max(watchdog_s or SILENCE_S, MIN_SILENCE_S)
        last_status = ""
        last_problems: list[str] = []
        while True:
            found = self._problems(max_silence)
            if found != last_problems:
                if found:
                    log.error("unhealthy, withholding the systemd watchdog ping: %s", "; ".join(found))
                else:
                    log.info("healthy again")
                last_problems = found
            if not found and watchdog_s:
                self._notifier.watchdog()
            line = f"unhealthy: {'; '.join(found)}" if found else self._status()
            if line != last_status:
                self._notifier.status(line)
                last_status = line
            if self._stop.wait(interval):
                return
