"""The schedule runner: a thread that sleeps until the next due time and submits each run as an ordinary request.

A run goes through the same checks and the same path as an MQTT say (``parse_native`` with the daemon's intake
policy, then ``submit``), so it is queued at its priority and audited like any request; its id is the schedule's
name and due time, and the durable queue drops an id it has seen. The due time is recorded as handled before the
run is submitted, so a crash at the due second loses that run rather than playing it twice. Schedules added or
removed from the command line are noticed within ``POLL_S``.

Ahead of each due time (``cache.prerender_s``) the run's request is built as it will be and its speech rendered into
the rendered-audio cache on a worker thread (a synthesis may take seconds, the runner must not), so at the due
second it starts from the cache instead of synthesising. Nothing is submitted then: the id is used once, by the run.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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
                 changed: Callable[[], None] = lambda: None, prerender: Callable[[Request], int] | None = None,
                 ahead_s: Callable[[], float] = lambda: 0.0) -> None:
        """``prerender(request)`` renders a run's speech into the cache, ``ahead_s()`` seconds before it is due
        (read per pass: a reload may change it; 0: not ahead)."""
        self._prerender = prerender
        self._ahead_s = ahead_s
        self._rendered: dict[str, float] = {}  # schedule name -> the due time (Unix s) rendered ahead for it
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gsv-prerender")
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
        self._worker.shutdown(wait=True, cancel_futures=True)

    def forget_rendered(self) -> None:
        """The engine was switched (reload): what was rendered ahead is kept under the old engine's identity, so
        the next runs are rendered again at the next pass."""
        self._rendered = {}

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
                self._render_ahead(schedule, decision.wake_at, now)
        seen = tuple((s.name, s.created_at, s.last_due) for s in self._store.list())
        if seen != self._seen:
            self._seen = seen
            self._changed()
        return min(wakes) if wakes else None

    def _request(self, schedule: Schedule, due: datetime) -> Request:
        """The request of the run due at ``due``, as the daemon reads a say (RejectedPayload if it would not)."""
        payload = json.dumps({**schedule.payload, "id": schedule.run_id(due)}, ensure_ascii=False).encode()
        return parse_native(payload, self._policy())  # its TTL counts from now, as the queue keeps time

    def _render_ahead(self, schedule: Schedule, due: datetime, now: datetime) -> None:
        """Hand the run due at ``due`` to the worker to render, once, when it is within ``ahead_s()``."""
        stamp = due.timestamp()
        ahead = self._ahead_s()
        if (self._prerender is None or ahead <= 0 or self._rendered.get(schedule.name) == stamp
                or stamp - now.timestamp() > ahead):
            return
        self._rendered[schedule.name] = stamp
        try:
            request = self._request(schedule, due)
        except RejectedPayload:  # the run reports it when it is due
            return
        self._worker.submit(self._render, schedule.name, request)

    def _render(self, name: str, request: Request) -> None:
        try:
            rendered = self._prerender(request) if self._prerender is not None else 0
        except Exception as exc:  # noqa: BLE001 - the run synthesises as usual then
            log.warning("schedule %r: cannot render %s ahead: %s", name, request.id, exc)
            return
        log.info("schedule %r: %s rendered ahead (%d new cache entries)", name, request.id, rendered)

    def _run(self, schedule: Schedule, due: datetime) -> None:
        run_id = schedule.run_id(due)
        try:
            request = self._request(schedule, due)
        except RejectedPayload as rejection:
            log.warning("schedule %r: its run %s is refused: %s", schedule.name, run_id, rejection.reason)
            self._rejected(f"schedule/{schedule.name}", rejection)
            return
        request.topic = f"schedule/{schedule.name}"
        log.info("schedule %r: run %s", schedule.name, run_id)
        self._submit(request)
