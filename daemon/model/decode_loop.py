"""One thread that steps every decode of an engine together, whichever thread asked for it, and the engine's
order of work between the box's speaker and the rest.

Requests synthesised side by side (the sentences of one text, publish-only requests, Wyoming and HTTP answers)
each hand their decodes to the loop and wait for tokens; the loop runs one :class:`DecodeBatch` step for all of
them, so the decoder's weights are read once per step for the whole batch. A decode joins at its prefill and
leaves at its last step or when its request is cut.

Foreground work (a request for the box's own speaker) goes first. Its decodes have a batch of their own: one
arriving waits for the background step in flight and no more. While any foreground synthesis is under way
(:meth:`DecodeLoop.foreground`), background decodes neither join nor step (their K/V cache is kept as it was)
and background vocoding waits. The vocoder runs one segment at a time (:meth:`DecodeLoop.vocoding`): on a CPU it
is compute-bound, and runs side by side would only split the cores. Each batch holds up to ``max_batch``
decodes; the rest wait, foreground first, in the order they came. The thread runs while there is work and ends
when there is none.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from daemon.model.t2s import Decode, DecodeBatch, DecodeResult, T2SRunner

log = logging.getLogger(__name__)


class Ticket:
    """A decode handed to the loop: its kept tokens as they come, its result at the end."""

    def __init__(self, loop: DecodeLoop, run: Decode, foreground: bool) -> None:
        self.run, self.foreground = run, foreground
        self._loop = loop
        self._tokens: list[int] = []
        self._error: BaseException | None = None
        self.done = False
        self.withdrawn = False
        # the loop's (foreground, background) step counts when it came, joined its batch and ended: how long
        # it waited, and what ran meanwhile
        self.submitted = self.joined = self.ended = (0, 0)

    def tokens(self) -> Iterator[int]:
        """Each kept token as soon as the loop samples it; closing the iterator early withdraws the decode.
        Raises what the loop's step raised for it."""
        cond = self._loop.cond
        seen = 0
        finished = False
        try:
            while True:
                with cond:
                    while seen >= len(self._tokens) and not self.done:
                        cond.wait()
                    if self._error is not None:
                        raise self._error
                    new, finished = self._tokens[seen:], self.done
                seen += len(new)
                yield from new
                if finished:
                    return
        finally:
            if not finished:
                self.withdraw()

    def withdraw(self) -> None:
        """Stop decoding it (its request was cut): :meth:`DecodeLoop.withdraw`."""
        self._loop.withdraw(self)

    def result(self) -> DecodeResult:
        """Wait for the decode's end."""
        for _ in self.tokens():
            pass
        assert self.run.result is not None
        return self.run.result


class DecodeLoop:
    def __init__(self, runner: T2SRunner, max_batch: int) -> None:
        self.runner, self.max_batch = runner, max_batch
        self.cond = threading.Condition()
        self._waiting: list[Ticket] = []
        self._batches = {True: DecodeBatch(runner), False: DecodeBatch(runner)}  # foreground, background
        self._rows: dict[bool, list[Ticket]] = {True: [], False: []}
        self._thread: threading.Thread | None = None
        self.steps = {True: 0, False: 0}  # steps run by each batch
        self._foreground = 0  # foreground syntheses under way
        self._vocoding = False

    @contextmanager
    def foreground(self) -> Iterator[None]:
        """A synthesis for the speaker is under way: background work waits until it ends."""
        with self.cond:
            self._foreground += 1
        try:
            yield
        finally:
            with self.cond:
                self._foreground -= 1
                self.cond.notify_all()

    @contextmanager
    def vocoding(self, background: bool) -> Iterator[None]:
        """One vocoder run at a time; a background one also waits while foreground work is under way."""
        with self.cond:
            while self._vocoding or (background and self._foreground):
                self.cond.wait()
            self._vocoding = True
        try:
            yield
        finally:
            with self.cond:
                self._vocoding = False
                self.cond.notify_all()

    @property
    def waiting(self) -> int:
        """Decodes handed over and not yet in a batch."""
        with self.cond:
            return len(self._waiting)

    def _count(self) -> tuple[int, int]:
        return self.steps[True], self.steps[False]

    def submit(self, run: Decode, foreground: bool = True) -> Ticket:
        """Queue ``run`` (not yet prefilled) to join its batch at the next step with room."""
        ticket = Ticket(self, run, foreground)
        with self.cond:
            ticket.submitted = self._count()
            self._waiting.append(ticket)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="gsv-decode", daemon=True)
                self._thread.start()
            self.cond.notify_all()
        return ticket

    def withdraw(self, ticket: Ticket) -> None:
        """Stop decoding for ``ticket``: out of the queue now, out of its batch before the next step."""
        with self.cond:
            ticket.withdrawn = True
            if ticket in self._waiting:
                self._waiting.remove(ticket)
                ticket.done = True

    def _loop(self) -> None:
        while True:
            with self.cond:
                while True:
                    leaving = [t for rows in self._rows.values() for t in rows if t.withdrawn]
                    joining = self._admit()
                    live = {kind: len(rows) > len([t for t in rows if t.withdrawn])
                            for kind, rows in self._rows.items()}
                    if joining or leaving or live[True] or (live[False] and not self._foreground):
                        break
                    if not live[False] and not self._waiting:
                        self._thread = None
                        return
                    self.cond.wait()  # background decodes held while foreground work is under way
            try:
                for ticket in leaving:
                    self._rows[ticket.foreground].remove(ticket)
                    self._batches[ticket.foreground].leave(ticket.run)
                for ticket in joining:
                    self._join(ticket)
                foreground = bool(self._rows[True])
                if self._rows[foreground] and (foreground or not self._foreground):
                    self._step(foreground)
            except Exception as exc:  # a fault outside a step (re-stacking a cache): what runs fails, the loop goes on
                log.exception("the T2S decode loop failed")
                self._fail((True, False), exc, [t for t in joining if not t.done])

    def _admit(self) -> list[Ticket]:
        """The waiting decodes that fit now, foreground first; background ones only while no foreground work is
        under way (under the lock)."""
        joining = []
        for foreground in (True, False) if not self._foreground else (True,):
            room = self.max_batch - len(self._rows[foreground])
            for ticket in [t for t in self._waiting if t.foreground == foreground][:max(room, 0)]:
                self._waiting.remove(ticket)
                joining.append(ticket)
        return joining

    def _join(self, ticket: Ticket) -> None:
        ticket.joined = self._count()
        try:
            token = self._batches[ticket.foreground].join(ticket.run)
        except Exception as exc:
            self._deliver([(ticket, None)], exc)
            return
        if not ticket.run.finished:
            self._rows[ticket.foreground].append(ticket)
        self._deliver([(ticket, token)])

    def _step(self, foreground: bool) -> None:
        rows = self._rows[foreground]
        try:
            out = self._batches[foreground].step()
            self.steps[foreground] += 1
        except Exception as exc:  # the whole batch's step failed: every decode in it ends with the error
            self._fail((foreground,), exc)
            return
        tickets = {id(t.run): t for t in rows}
        self._rows[foreground] = [t for t in rows if not t.run.finished]
        self._deliver([(tickets[id(run)], token) for run, token in out])

    def _fail(self, kinds: tuple[bool, ...], error: BaseException, others: list[Ticket] | None = None) -> None:
        """End every decode in the batches ``kinds`` (and ``others``) with ``error``; those batches start empty."""
        failed = [t for kind in kinds for t in self._rows[kind]] + (others or [])
        for kind in kinds:
            self._batches[kind], self._rows[kind] = DecodeBatch(self.runner), []
        self._deliver([(t, None) for t in failed], error)

    def _deliver(self, results: list[tuple[Ticket, int | None]], error: BaseException | None = None) -> None:
        with self.cond:
            for ticket, token in results:
                if token is not None:
                    ticket._tokens.append(token)
                if error is not None:
                    ticket._error = error
                ticket.done = ticket.done or error is not None or ticket.run.finished
                if ticket.done:
                    ticket.ended = self._count()
            self.cond.notify_all()
