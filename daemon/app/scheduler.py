"""The schedule runner: a thread that sleeps until the next due time and submits each run as an ordinary request.

A run goes through the same checks and the same path as an MQTT say (``parse_native`` with the daemon's intake
policy, then ``submit``), so it is queued at its priority and audited like any request; its id is the schedule's
name and due time, and the durable queue drops an id it has seen. The due time is recorded as handled before the
run is submitted, so a crash at the due second loses that run rather than playing it twice. Schedules added or
removed from the command line are noticed within ``POLL_S``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone

from daemon.core.request_queue import Request
from daemon.core.schedules import Schedule, ScheduleStore, decide
from daemon.protocols.payloads import IntakePolicy, RejectedPayload, parse_native

log = logging.getLogger(__name__)

POLL_S = 2.0  # how often the table is looked at for schedules added or removed by the command line


class ScheduleRunner:
    """``clock`` gives Unix seconds (a test may drive it); ``rejected(topic, rejection)`` hears a run the daemon
    refuses (a voice removed since the schedule was added, say); ``changed()`` hears that the schedules differ from
    the last look (added or removed, from the command line too, or a due time handled), so the list is republished."""

    def __init__(self, store: ScheduleStore, policy: Callable[[], IntakePolicy], submit: Callable[[Request], None],
                 rejected: Callable[[str, RejectedPayload], None], clock: Callable[[], float] = time.time,
                 changed: Callable[[], None] = lambda: None) -> None:
        self._store = store
        self._policy = policy
        self._submit = submit
        self._rejected = rejected
        self._clock = clock
        self._changed = changed
        self._seen: tuple[tuple[str, float, float | None], ...] | None = None  # (name, created, last due) last look
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="gsv-schedules", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                wake = self.run_due()
            except Exception:  # noqa: BLE001 - one bad pass must not end the schedules for good
                log.exception("the schedule runner failed a pass; it tries again")
                wake = None
            pause = POLL_S if wake is None else min(POLL_S, max(0.0, wake - self._clock()))
            self._stop.wait(pause)

    def run_due(self) -> float | None:
        """Handle every schedule whose due time has come; returns the next due time (Unix seconds) or None."""
        now = datetime.fromtimestamp(self._clock(), timezone.utc)
        wakes: list[float] = []
        for schedule in self._store.list():
            decision = decide(schedule, now)
            if decision.due is not None and self._store.mark_handled(schedule.name, decision.due):
                if decision.run:
                    self._run(schedule, decision.due)
                else:
                    log.warning("schedule %r: the run due %s was missed (%.0f s late) and is skipped",
                                schedule.name, decision.due.isoformat(), (now - decision.due).total_seconds())
            if decision.wake_at is not None:
                wakes.append(decision.wake_at.timestamp())
        seen = tuple((s.name, s.created_at, s.last_due) for s in self._store.list())
        if seen != self._seen:
            self._seen = seen
            self._changed()
        return min(wakes) if wakes else None

    def _run(self, schedule: Schedule, due: datetime) -> None:
        run_id = schedule.run_id(due)
        payload = json.dumps({**schedule.payload, "id": run_id}, ensure_ascii=False).encode()
        try:
            request = parse_native(payload, self._policy())  # its TTL counts from now, as the queue keeps time
        except RejectedPayload as rejection:
            log.warning("schedule %r: its run %s is refused: %s", schedule.name, run_id, rejection.reason)
            self._rejected(f"schedule/{schedule.name}", rejection)
            return
        request.topic = f"schedule/{schedule.name}"
        log.info("schedule %r: run %s", schedule.name, run_id)
        self._submit(request)
