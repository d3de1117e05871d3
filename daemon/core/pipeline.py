"""Worker threads: one synthesises the next request while another plays the current one.

The synthesis thread takes a request from the queue only when the hand-over slot is free, so it is
never more than one request ahead and a late urgent request still overtakes everything queued.
Audio flows through a :class:`Job` chunk by chunk, so output starts with the first sentence.

With ``[[zones]]`` each zone is a lane of its own (hand-over slot, playback thread, priority order), so
an announcement for one zone does not wait behind another zone's, and a request for several zones is
synthesised once and starts in all of them together.

An engine that batches its decodes (``concurrency`` > 1) gets more synthesis threads. The speaker's lanes get
up to ``concurrency`` of them (one per lane at most), each taking the most urgent request whose lanes are all
free, so different zones' announcements are synthesised together. And that many publish lanes, each with a
synthesis thread of its own, take the requests that do not play on the box's speaker (published, or answered
over a Wyoming or HTTP connection): they are synthesised side by side in the background, while the speaker's
lanes keep their order and priorities and their decodes go first.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Protocol

import numpy as np

from daemon.audio.output import AudioDeviceError, AudioOutput
from daemon.audio.resample import LinearResampler, resample
from daemon.audio.wav import read_wav, to_pcm16
from daemon.config import AudioSettings
from daemon.core.audio_cache import AudioCache, cache_key
from daemon.core.events import EventKind, EventSink
from daemon.core.heartbeat import Heartbeat
from daemon.core.request_queue import Request, RequestQueue
from daemon.speech.synthesizer import SynthesisError, Synthesizer
from daemon.vocabulary import PRIORITY_RANK

log = logging.getLogger(__name__)

STOPPING = "daemon stopping"  # why a request is cut or left unfinished by a stop
START_GATE_S = 5.0  # the longest the zones of one announcement wait for each other's devices to open
QUIET_RANK = PRIORITY_RANK["high"]  # in a zone's quiet hours only requests this urgent (or more) play


class AudioStream(Protocol):
    def write(self, audio: np.ndarray) -> None: ...

    def close(self, cancel: threading.Event) -> None:
        """Finish delivery (and, for a remote player, wait until it has played or ``cancel`` is set)."""
        ...


class Discard:
    """An :class:`AudioStream` nobody listens to: where the audio of a request whose client has gone is written."""

    def write(self, audio: np.ndarray) -> None:
        pass

    def close(self, cancel: threading.Event) -> None:
        pass


class AudioPublisher(Protocol):
    def open(self, request: Request, sample_rate: int) -> AudioStream: ...


@dataclasses.dataclass(frozen=True)
class ZoneOutput:
    """A ``[[zones]]`` entry made ready: its sound card (which applies the zone's volume itself) or the
    publisher of its MQTT topic."""

    name: str
    audio: AudioOutput | None = None
    publisher: AudioPublisher | None = None
    volume: float = 1.0
    lead_in_ms: int = 0
    quiet: tuple[int, int] | None = None  # quiet hours: (start, end) minutes after local midnight
    volumes: tuple[tuple[int, float], ...] = ()  # (minute after local midnight, volume from then on), earliest first

    def quiet_at(self, minute: int) -> bool:
        if self.quiet is None:
            return False
        start, end = self.quiet
        return start <= minute < end if start < end else minute >= start or minute < end

    def volume_at(self, minute: int) -> float:
        """The volume by the schedule (the last step before ``minute``, yesterday's last before the first)."""
        if not self.volumes:
            return self.volume
        earlier = [volume for at, volume in self.volumes if at <= minute]
        return earlier[-1] if earlier else self.volumes[-1][1]


class _Lane:
    """Where requests play: without zones the one lane (the ``[audio]`` device and/or the protocol's way back),
    else one per zone. ``next`` is synthesised (or being synthesised) for it, ``current`` being delivered;
    ``cut`` stops this lane's delivery of ``current`` (for the one lane, the job's own ``cancelled``)."""

    def __init__(self, zone: ZoneOutput | None, beat: str = "playback") -> None:
        self.zone = zone
        self.beat = beat if zone is None else f"playback:{zone.name}"
        self.next: Job | None = None
        self.current: Job | None = None
        self.cut = threading.Event()
        self.cut_reason = ""


class EngineLock:
    """Synthesis shares the engine (several requests at once where it batches); registering or removing a voice
    has it alone, once the syntheses under way have finished and before any new one starts."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._sharing = 0
        self._exclusive = False
        self._queued = 0  # exclusive holders waiting: new syntheses wait behind them

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive or self._queued:
                self._cond.wait()
            self._sharing += 1
        try:
            yield
        finally:
            with self._cond:
                self._sharing -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._queued += 1
            while self._exclusive or self._sharing:
                self._cond.wait()
            self._queued -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


class _StartGate:
    """The zones of one announcement start together: each arrives once its device is open (or leaves when it
    cannot play now), and none starts before all have arrived or left."""

    def __init__(self, zones: Sequence[str]) -> None:
        self._waiting = set(zones)
        self._cond = threading.Condition()

    def arrive(self, zone: str, cancel: threading.Event) -> None:
        deadline = time.monotonic() + START_GATE_S
        with self._cond:
            self._waiting.discard(zone)
            self._cond.notify_all()
            while self._waiting and not cancel.is_set() and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(min(left, 0.05))

    def leave(self, zone: str) -> None:
        with self._cond:
            self._waiting.discard(zone)
            self._cond.notify_all()


class Job:
    """A request on its way through the pipeline: audio chunks appear here as they are synthesised."""

    def __init__(self, request: Request, sample_rate: int) -> None:
        self.request = request
        self.sample_rate = sample_rate
        self.cancelled = threading.Event()
        self.cancel_reason = ""
        self.lanes: list[_Lane] = []
        self.gate: _StartGate | None = None  # zones only
        self.lead_in_ms: int | None = None  # zones only: the longest of its sound cards', so first words align
        self.results: dict[str, tuple[EventKind, dict[str, Any]]] = {}  # zone -> how it ended there
        self.zone_started: dict[str, float] = {}  # zone -> when its first sample went out
        self._first_audio_sent = False
        self._watchers: list[threading.Event] = []
        self.halted = threading.Event()  # synthesis stops at the next chunk; what is synthesised is still delivered
        self.halt_reason = ""
        self.truncated = False  # synthesis stopped before the end of the text
        self.engine = ""
        self.fallback_reason: str | None = None
        self.cached = False  # played from the rendered-audio cache, not synthesised
        self.cache_entry: str | None = None  # the digest its audio is (or will be) kept under in that cache
        self.background = False  # on a publish lane: its decodes give way to the speaker's
        self.error: Exception | None = None
        self.started_at = time.monotonic()
        self.first_chunk_at: float | None = None
        self.synth_done_at: float | None = None
        self.speech_samples = 0  # synthesised (or cached) speech, not a multi-part's chimes, pauses and repeats
        self._chunks: list[np.ndarray] = []
        self._finished = False
        self._cond = threading.Condition()

    def cancel(self, reason: str) -> None:
        with self._cond:
            if not self.cancelled.is_set():
                self.cancel_reason = reason
                self.cancelled.set()
            for watcher in self._watchers:
                watcher.set()
            self._cond.notify_all()

    def watch(self) -> threading.Event:
        """An event that :meth:`cancel` sets too: a zone's own way to be cut, alone or with the whole job."""
        event = threading.Event()
        with self._cond:
            self._watchers.append(event)
            if self.cancelled.is_set():
                event.set()
        return event

    def first_audio_due(self) -> bool:
        """True the first time only: a request reports its first audio once, however many zones play it."""
        with self._cond:
            due, self._first_audio_sent = not self._first_audio_sent, True
            return due

    def halt(self, reason: str) -> None:
        """Synthesise nothing more (no effect once synthesis has finished)."""
        with self._cond:
            if not self._finished and not self.halted.is_set():
                self.halt_reason = reason
                self.halted.set()

    def add(self, chunk: np.ndarray, speech: bool = True) -> None:
        with self._cond:
            if self.first_chunk_at is None:
                self.first_chunk_at = time.monotonic()
            self._chunks.append(chunk)
            if speech:
                self.speech_samples += chunk.size
            self._cond.notify_all()

    @property
    def chunk_count(self) -> int:
        with self._cond:
            return len(self._chunks)

    def chunks_from(self, index: int) -> list[np.ndarray]:
        """The chunks added since there were ``index`` of them."""
        with self._cond:
            return self._chunks[index:]

    def finish(self, error: Exception | None = None) -> None:
        with self._cond:
            self.error = error
            self.synth_done_at = time.monotonic()
            self._finished = True
            self._cond.notify_all()

    @property
    def samples(self) -> int:
        with self._cond:
            return sum(chunk.size for chunk in self._chunks)

    def chunks(self) -> Iterator[np.ndarray]:
        """Every chunk from the start (replayable after a device error), waiting for synthesis."""
        index = 0
        while True:
            with self._cond:
                while index >= len(self._chunks) and not self._finished and not self.cancelled.is_set():
                    self._cond.wait()
                if index >= len(self._chunks):
                    return
                chunk = self._chunks[index]
            index += 1
            yield chunk

    def has_audio(self) -> bool:
        """Block until the first chunk or the end of synthesis; True if there is audio to deliver."""
        with self._cond:
            while not self._chunks and not self._finished and not self.cancelled.is_set():
                self._cond.wait()
            return bool(self._chunks)


def _preempts(new: Request, current: Request) -> bool:
    """An interrupting or emergency request cuts anything not more urgent (emergencies cut emergencies
    only when they ask to interrupt)."""
    if not (new.interrupt or new.priority == "emergency") or new.rank > current.rank:
        return False
    return new.interrupt or current.priority != "emergency"


def _sayings(request: Request) -> dict[int, Request]:
    """A multi-part request's text parts, by index, each as the plain say of it that it is cached as."""
    return {index: dataclasses.replace(request, text=part.text, voice=part.voice, lang=part.lang, speed=part.speed,
                                       chime=False, parts=(), repeat=1)
            for index, part in enumerate(request.parts) if part.text is not None}


def builtin_chime(sample_rate: int) -> np.ndarray:
    """A soft two-tone "ding-dong" (E6 then C6) with exponential decay."""
    parts = []
    for freq in (1318.5, 1046.5):
        t = np.arange(int(0.35 * sample_rate)) / sample_rate
        tone = np.sin(2 * np.pi * freq * t) * np.exp(-t * 9.0) * np.minimum(1.0, t * 400.0)
        parts.append(0.35 * tone)
    parts.append(np.zeros(int(0.15 * sample_rate)))
    return np.concatenate(parts).astype(np.float32)


class Pipeline:
    def __init__(
        self,
        queue: RequestQueue,
        engine: Synthesizer,
        fallback: Synthesizer,
        events: EventSink,
        publisher: AudioPublisher,
        audio: AudioOutput | None,
        audio_settings: AudioSettings,
        cache: AudioCache | None = None,
        zones: Sequence[ZoneOutput] = (),
        clock: Callable[[], datetime] = datetime.now,
    ) -> None:
        """``clock``: the box's local time, for the zones' quiet hours and volume schedules."""
        self._queue = queue
        self._clock = clock
        self.cache = cache
        self.heartbeat = Heartbeat()  # the synthesis and playback loops beat; the systemd watchdog reads it
        self.engine_lock = EngineLock()
        self._draining = False
        self._engine = engine
        self._fallback = fallback
        self._events = events
        self._publisher = publisher
        self._audio = audio
        self._audio_settings = audio_settings
        self._chime = self._load_chime(audio_settings, engine.sample_rate)
        self._cond = threading.Condition()
        self._default = _Lane(None)
        self._zones = {zone.name: _Lane(zone) for zone in zones}
        concurrency = engine.concurrency if engine.concurrency > 1 else 0
        self._publish_lanes = [_Lane(None, f"playback:publish{i + 1}") for i in range(concurrency)]
        self._lanes = [self._default, *self._zones.values(), *self._publish_lanes]
        self._speaker_threads = max(1, min(1 + len(self._zones), concurrency))
        self._running = False
        self._threads: list[threading.Thread] = []
        self.last_latency_ms: float | None = None

    @staticmethod
    def _load_chime(settings: AudioSettings, sample_rate: int) -> np.ndarray:
        if settings.chime_file is None:
            return builtin_chime(sample_rate)
        chime = read_wav(settings.chime_file.read_bytes(), str(settings.chime_file))
        return resample(chime.samples, chime.sample_rate, sample_rate)

    @property
    def synthesis_threads(self) -> int:
        """The speaker's synthesis threads and one per publish lane: how many requests can be out of the queue
        and under way (or waiting for the engine) at once."""
        return self._speaker_threads + len(self._publish_lanes)

    @property
    def busy(self) -> bool:
        with self._cond:
            return any(lane.current is not None or lane.next is not None for lane in self._lanes)

    def depth(self) -> int:
        return len(self._queue)

    def lineup(self) -> list[tuple[str, Request]]:
        """Every request not yet ended, in the order it is served: ``current`` (being delivered, and synthesised
        while it is), ``next`` (synthesised ahead while the current one plays), then ``queued``."""
        with self._cond:  # the synthesis thread pops under it too: no request is seen twice or missed
            held: list[tuple[str, Request]] = []
            seen: set[int] = set()  # a job for several zones is held by each of their lanes
            for name in ("current", "next"):
                for lane in self._lanes:
                    job = getattr(lane, name)
                    if job is not None and id(job) not in seen:
                        seen.add(id(job))
                        held.append((name, job.request))
            return held + [("queued", request) for request in self._queue.waiting()]

    def set_engine(self, engine: Synthesizer, fallback: Synthesizer) -> None:
        """Switch engines (reload): a request already being synthesised finishes on the old one."""
        chime = self._load_chime(self._audio_settings, engine.sample_rate)
        with self._cond:
            self._engine, self._fallback, self._chime = engine, fallback, chime

    def start(self) -> None:
        self._running = True
        workers: list[tuple[Callable[[], None], str]] = [
            (self._synth_loop, "gsv-synthesis" if i == 0 else f"gsv-synthesis-{i + 1}")
            for i in range(self._speaker_threads)]
        workers += [(lambda lane=lane: self._synth_loop(lane), f"gsv-synthesis:{lane.beat.split(':')[1]}")
                    for lane in self._publish_lanes]
        workers += [(lambda lane=lane: self._play_loop(lane), f"gsv-{lane.beat}") for lane in self._lanes]
        for target, name in workers:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        with self._cond:
            self._running = False
            for lane in self._lanes:
                for job in (lane.current, lane.next):
                    if job is not None:
                        job.cancel(STOPPING)
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()

    def drain(self, timeout_s: float) -> bool:
        """Synthesise nothing more and start nothing new; the audio of the announcement being delivered
        that is already synthesised may play out for up to ``timeout_s``.

        That announcement ends ``done`` if its synthesis had finished, else ``failed: daemon stopping``.
        A request synthesised but not yet started goes back to the queue, as do requests arriving
        meanwhile: the queue keeps them for the next start. True if nothing was left playing.
        """
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._draining = True
            for lane in self._lanes:
                pending = lane.next
                if pending is not None:
                    pending.cancel(STOPPING)
                    self._unslot(pending)
                    self._queue.requeue(pending.request)
                if lane.current is not None:
                    lane.current.halt(STOPPING)
            self._cond.notify_all()
            while self._playing() and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            return not self._playing()

    def _playing(self) -> bool:
        return any(lane.current is not None for lane in self._lanes)

    def _lanes_of(self, request: Request) -> list[_Lane]:
        """The lanes a request plays in: its zones' (those still configured), or the one lane; none of the
        speaker's for a request that goes to a publish lane."""
        if self._publishes(request):
            return []
        if not request.zones:
            return [self._default]
        return [self._zones[name] for name in request.zones if name in self._zones]

    def _publishes(self, request: Request) -> bool:
        """Whether ``request`` is synthesised on a publish lane: there are some, and it plays on no speaker."""
        return bool(self._publish_lanes) and not request.occupies_speaker and not request.zones

    def _unslot(self, job: Job) -> None:
        """Take a job synthesised ahead out of every lane it waits in."""
        for lane in job.lanes:
            if lane.next is job:
                lane.next = None

    # -- intake ---------------------------------------------------------------------------------

    def submit(self, request: Request) -> None:
        """Queue a request (or report why not); an urgent one preempts what is playing."""
        if request.expired():
            self._events.emit(request, EventKind.EXPIRED, reason="expired before it was queued")
            return
        with self._cond:  # the synthesis thread takes it only once ``queued`` is out: no ``started`` before it
            admission = self._queue.put(request)
            if admission.status == "full":
                for stale in self._queue.remove_expired():
                    self._events.emit(stale, EventKind.EXPIRED, reason="ttl elapsed while queued")
                admission = self._queue.put(request)
            if admission.status == "duplicate":
                log.info("request %s repeats one already admitted (%s)", request.id, admission.state)
                self._events.emit(request, EventKind.DUPLICATE, state=admission.state)
                return
            if admission.status == "full":
                self._events.emit(request, EventKind.REJECTED, reason="queue full", cause="queue_full",
                                  queue_depth=len(self._queue))
                return
            if admission.displaced is not None:
                self._events.emit(admission.displaced, EventKind.REJECTED, cause="queue_full",
                                  reason=f"queue full: displaced by {request.id}")
            self._events.emit(request, EventKind.QUEUED, queue_depth=len(self._queue), priority=request.priority)
            urgent = request.interrupt or request.priority == "emergency"
            requeued = self._preempt(request) if urgent else []
            self._cond.notify_all()
        for pending in requeued:
            self._events.emit(pending, EventKind.QUEUED, requeued=True, reason=f"preempted by {request.id}")

    def _preempt(self, request: Request) -> list[Request]:
        """Cut the current playback in ``request``'s lanes if it may, and put synthesised-but-waiting work
        there back in the queue so ``request`` goes first; returns the requeued requests.

        A request playing in several zones is cut only in the zones ``request`` plays in; the others go on."""
        requeued = []
        lanes = self._lanes_of(request)
        for lane in lanes:
            pending = lane.next
            if pending is not None and (request.rank, not request.interrupt) < (pending.request.rank, True):
                pending.cancel(f"preempted by {request.id}")
                self._unslot(pending)
                self._queue.requeue(pending.request)
                requeued.append(pending.request)
        for lane in lanes:
            current = lane.current
            if current is not None and current.request.occupies_speaker and _preempts(request, current.request):
                reason = f"interrupted by {request.id}"
                if all(other in lanes for other in current.lanes):
                    current.cancel(reason)
                elif not lane.cut.is_set():
                    lane.cut_reason = reason
                    lane.cut.set()
        return requeued

    def cancel(self, request: Request, reason: str) -> None:
        """Drop ``request`` wherever it is: out of the queue, or its synthesis and delivery stopped at the
        next chunk. It ends ``failed`` with ``reason``; nothing happens if it has already ended."""
        with self._cond:
            current = next((lane.current for lane in self._lanes
                            if lane.current is not None and lane.current.request is request), None)
            if current is not None:
                current.cancel(reason)  # the playback loop reports it
                return
            pending = next((lane.next for lane in self._lanes
                            if lane.next is not None and lane.next.request is request), None)
            if pending is not None:
                pending.cancel(reason)
                self._unslot(pending)
            elif not self._queue.remove(request):
                return
            self._cond.notify_all()
        self._events.emit(request, EventKind.FAILED, reason=reason)

    # -- synthesis ------------------------------------------------------------------------------

    def _synth_loop(self, publish: _Lane | None = None) -> None:
        """One of the speaker's synthesis threads, or (``publish``) the one of a publish lane."""
        while True:
            with self._cond:
                request = None
                while self._running and (self._draining or (request := self._take(publish)) is None):
                    self._cond.wait(timeout=1.0)
                    self.heartbeat.beat("synthesis")
                if not self._running:
                    return
                assert request is not None
                missing = [name for name in request.zones if name not in self._zones]
                job = None
                if not missing and not request.expired():
                    job = self._job(request, publish)
                    self._cond.notify_all()
            if missing:
                self._events.emit(request, EventKind.FAILED, reason=f"zone {missing[0]!r} is no longer configured",
                                  zones={name: {"state": "failed"} for name in missing})
                continue
            if job is None:
                self._events.emit(request, EventKind.EXPIRED, reason="ttl elapsed while queued")
                continue
            self._synthesize(job)

    def _take(self, publish: _Lane | None = None) -> Request | None:
        """The next request to synthesise: the most urgent one whose lanes are all free to take it; for a
        publish lane's thread (``publish``, once its slot is free), the most urgent that goes to one.

        A request waiting for a busy lane keeps that lane for itself: nothing less urgent overtakes it there,
        so each zone plays in priority order, and a request for several zones is not starved by single ones.
        """
        if publish is not None:
            if publish.next is not None:
                return None
            return next((request for request in self._queue.waiting()
                         if self._publishes(request) and self._queue.remove(request)), None)
        if not self._zones and not self._publish_lanes:
            return self._queue.pop() if self._default.next is None else None
        held = {id(lane) for lane in self._lanes if lane.next is not None}
        minute = self._minute()
        for request in self._queue.waiting():
            if request.expired():  # reported now, not when quiet hours end
                if self._queue.remove(request):
                    return request
                continue
            if self._publishes(request):
                continue
            zones = self._lanes_of(request)
            if request.rank > QUIET_RANK and any(lane.zone is not None and lane.zone.quiet_at(minute)
                                                 for lane in zones):
                continue  # waits for the end of quiet hours, keeping no zone from others meanwhile
            lanes = {id(lane) for lane in zones}
            if not lanes & held and self._queue.remove(request):
                return request
            held |= lanes
        return None

    def _minute(self) -> int:
        now = self._clock()
        return now.hour * 60 + now.minute

    def _job(self, request: Request, publish: _Lane | None = None) -> Job:
        """The job for ``request``, waiting in each of its lanes (under the lock): ``publish`` when a publish
        lane's thread took it."""
        job = Job(request, self._engine.sample_rate)
        job.lanes = [publish] if publish is not None else self._lanes_of(request)
        job.background = publish is not None
        if request.zones:
            job.gate = _StartGate(request.zones)
            job.lead_in_ms = max((lane.zone.lead_in_ms for lane in job.lanes
                                  if lane.zone is not None and lane.zone.audio is not None), default=0)
        for lane in job.lanes:
            lane.next = job
        return job

    def _synthesize(self, job: Job) -> None:
        request = job.request
        if request.parts:
            self._render(job)
            return
        engine = self._engine_for(request)
        key = cache_key(engine, request, job.sample_rate) if self.cache is not None else None
        cached = self.cache.get(key) if self.cache is not None and key is not None else None
        job.cache_entry = key.digest() if key is not None else None
        self._events.emit(
            request,
            EventKind.STARTED,
            engine=engine.name,
            wait_ms=round((job.started_at - request.received_at) * 1000),
            **({"cached": True} if cached is not None else {}),
        )
        if cached is not None:
            job.engine, job.cached = engine.name, True
            for chunk in cached:
                job.add(chunk)
            job.finish()
            return
        with self.engine_lock.shared():
            try:
                self._synthesize_with(job, engine, request)
            except Exception as exc:
                job.finish(exc)
            else:
                job.finish()
        if key is not None and self.cache is not None and not (job.cancelled.is_set() or job.truncated
                                                                or job.fallback_reason):
            if job.error is None:
                self.cache.put(key, list(job.chunks()))

    def _synthesize_with(self, job: Job, engine: Synthesizer, say: Request) -> tuple[list[np.ndarray], bool]:
        """Speak ``say`` (the job's request, or one part of it) into the job, on the fallback voice if ``engine``
        fails; the chunks it added and whether the fallback stood in. Raises what the last engine raised."""
        start = job.chunk_count
        try:
            self._run_engine(job, engine, say, say.voice)
        except Exception as exc:
            if self._fallback is engine or job.cancelled.is_set() or job.halted.is_set():
                raise
            log.warning("engine %s failed on %s, using the fallback voice: %s", engine.name, job.request.id, exc)
            job.fallback_reason = f"{type(exc).__name__}: {exc}"
            self._run_engine(job, self._fallback, say, None)
            return job.chunks_from(start), True
        return job.chunks_from(start), False

    def _render(self, job: Job) -> None:
        """A multi-part request: its parts in order, then the whole sequence again after a gap for each repeat.

        Each text part is cached under its own key, the one a plain say of that text in that voice has: a part
        that many announcements share ("Attention please") is rendered once, and chimes, pauses and repeats,
        cheap to make, take no cache space. Synthesis stops between parts when the job is cut or halted.
        """
        request, rate = job.request, job.sample_rate
        sayings = _sayings(request)
        keys = {index: cache_key(self._engine_for(say), say, rate) if self.cache is not None else None
                for index, say in sayings.items()}
        hits = {index: hit for index, key in keys.items()
                if key is not None and self.cache is not None and (hit := self.cache.get(key)) is not None}
        job.engine = self._engine.name
        job.cached = bool(sayings) and len(hits) == len(sayings)
        self._events.emit(
            request,
            EventKind.STARTED,
            engine=job.engine,
            wait_ms=round((job.started_at - request.received_at) * 1000),
            parts=len(request.parts),
            **({"cached": True} if job.cached else {}),
        )
        try:
            for index, part in enumerate(request.parts):
                if job.cancelled.is_set() or job.halted.is_set() or job.truncated:
                    job.truncated = not job.cancelled.is_set()
                    break
                if part.chime:
                    job.add(self._chime, speech=False)
                elif part.pause_s is not None:
                    self._add_silence(job, part.pause_s)
                elif index in hits:
                    for chunk in hits[index]:
                        job.add(chunk)
                else:
                    say = sayings[index]
                    with self.engine_lock.shared():
                        chunks, fell_back = self._synthesize_with(job, self._engine_for(say), say)
                    key = keys[index]
                    if key is not None and self.cache is not None and not (fell_back or job.truncated
                                                                            or job.cancelled.is_set()):
                        self.cache.put(key, chunks)
            sequence = job.chunks_from(0)
            for _ in range(request.repeat - 1):
                if job.cancelled.is_set() or job.halted.is_set() or job.truncated:
                    job.truncated = not job.cancelled.is_set()
                    break
                self._add_silence(job, request.repeat_gap_s)
                for chunk in sequence:
                    job.add(chunk, speech=False)
        except Exception as exc:
            job.finish(exc)
            return
        job.finish()

    def prerender(self, request: Request) -> int:
        """Render ``request``'s speech into the rendered-audio cache now, without delivering it or any event, so
        that the request itself, submitted later (a schedule's run), starts from the cache at once. A multi-part
        request's text parts are rendered each under its own key, where :meth:`_render` looks. Synthesis takes
        the engine between other requests' syntheses. Returns how many entries it rendered (0: no cache, or all
        there already); a fallback's stand-in is not kept; raises what the engine raises."""
        if self.cache is None:
            return 0
        with self._cond:
            rate = self._engine.sample_rate
        rendered = 0
        for say in ([request] if not request.parts else list(_sayings(request).values())):
            engine = self._engine_for(say)
            key = cache_key(engine, say, rate)
            if key is None or self.cache.holds(key.digest()):
                continue
            job = Job(say, rate)
            job.background = True
            with self.engine_lock.shared():
                chunks, fell_back = self._synthesize_with(job, engine, say)
            if not fell_back:
                self.cache.put(key, chunks)
                rendered += 1
        return rendered

    @staticmethod
    def _add_silence(job: Job, seconds: float) -> None:
        samples = round(seconds * job.sample_rate)
        if samples:
            job.add(np.zeros(samples, np.float32), speech=False)

    def _engine_for(self, request: Request) -> Synthesizer:
        """The fallback speaks a request naming a voice the engine lacks: the daemon's voice list offers the
        fallback voice beside the engine's (intake accepts only the listed voices)."""
        engine = self._engine
        if request.voice is None or any(v.name == request.voice for v in engine.voices()):
            return engine
        return self._fallback

    def _run_engine(self, job: Job, engine: Synthesizer, say: Request, voice: str | None) -> None:
        job.engine = engine.name
        resampler = LinearResampler(engine.sample_rate, job.sample_rate)
        produced = 0
        stream = engine.synthesize(say.text, voice, say.lang, say.speed, say.sampling, job.background)
        try:
            for chunk in stream:
                if job.cancelled.is_set():
                    return
                audio = np.asarray(chunk, dtype=np.float32).reshape(-1)
                if not np.all(np.isfinite(audio)):
                    raise SynthesisError("engine produced non-finite samples")
                job.add(np.clip(resampler.process(audio), -1.0, 1.0))
                produced += audio.size
                self.heartbeat.beat("synthesis")
                if job.halted.is_set():
                    job.truncated = True
                    return
        finally:
            stream.close()
        if produced == 0 and not job.cancelled.is_set():
            raise SynthesisError("engine produced no audio")

    # -- output ---------------------------------------------------------------------------------

    def _play_loop(self, lane: _Lane) -> None:
        while True:
            with self._cond:
                while self._running and lane.current is None:
                    self._claim(lane)
                    if lane.current is None:
                        self._cond.wait(timeout=1.0)
                        self.heartbeat.beat(lane.beat)
                if not self._running:
                    return
                job = lane.current
                assert job is not None
            try:
                kind, fields = self._deliver(job, lane)
            except Exception as exc:  # a bug must not kill the playback thread
                log.exception("delivering %s failed", job.request.id)
                kind, fields = EventKind.FAILED, {"reason": f"internal error: {exc}"}
            finally:
                if job.gate is not None and lane.zone is not None:
                    job.gate.leave(lane.zone.name)
            with self._cond:
                lane.current = None
                ending = self._settle(job, lane, kind, fields)
                self._cond.notify_all()
            if ending is not None:
                self._events.emit(job.request, ending[0], **ending[1])  # after clearing: status then reads idle

    def _claim(self, lane: _Lane) -> None:
        """Move the job waiting in ``lane`` to playing, in all its lanes at once, when every one is free: an
        announcement for several zones starts in all of them together (under the lock)."""
        job = lane.next
        if job is None or any(other.current is not None or other.next is not job for other in job.lanes):
            return
        for other in job.lanes:
            other.next, other.current = None, job
            other.cut, other.cut_reason = (job.cancelled if other.zone is None else job.watch()), ""
        self._cond.notify_all()

    def _settle(
        self, job: Job, lane: _Lane, kind: EventKind, fields: dict[str, Any]
    ) -> tuple[EventKind, dict[str, Any]] | None:
        """The request's terminal event once its last lane has ended it; None while other zones play on."""
        if lane.zone is None:
            return kind, fields
        job.results[lane.zone.name] = (kind, fields)
        if len(job.results) < len(job.lanes):
            return None
        return self._combined(job)

    @staticmethod
    def _combined(job: Job) -> tuple[EventKind, dict[str, Any]]:
        """One ending for all its zones: ``done`` if any zone played it to the end (a reason names the zones
        that did not), else ``expired`` if it expired everywhere, else ``failed``; ``zones`` has each one's."""
        results = {name: job.results[name] for name in job.request.zones if name in job.results}
        zones = {name: {"state": kind.value, **({"reason": fields["reason"]} if "reason" in fields else {})}
                 for name, (kind, fields) in results.items()}
        missed = "; ".join(f"zone {name}: {zone.get('reason', zone['state'])}"
                           for name, zone in zones.items() if zone["state"] != EventKind.DONE.value)
        done = [fields for kind, fields in results.values() if kind is EventKind.DONE]
        if done:
            kind, fields = EventKind.DONE, {**done[0], **({"reason": missed} if missed else {})}
        else:
            kinds = {kind for kind, _ in results.values()}
            kind = EventKind.EXPIRED if kinds == {EventKind.EXPIRED} else EventKind.FAILED
            fields = {**next(iter(results.values()))[1], "reason": missed}
        fields["zones"] = zones
        if len(job.zone_started) > 1:
            fields["start_skew_ms"] = round((max(job.zone_started.values()) - min(job.zone_started.values())) * 1000,
                                            3)
        return kind, fields

    def _output_chunks(self, job: Job, beat: str = "playback") -> Iterator[np.ndarray]:
        """The chunks to deliver; each beat allows the consumer the chunk's duration to play it."""
        if job.request.chime:
            self.heartbeat.beat(beat, self._chime.size / job.sample_rate)
            yield self._chime * job.request.volume
        for chunk in job.chunks():
            self.heartbeat.beat(beat, chunk.size / job.sample_rate)
            yield chunk * job.request.volume if job.request.volume != 1.0 else chunk

    def _deliver(self, job: Job, lane: _Lane) -> tuple[EventKind, dict[str, Any]]:
        """Play and/or publish the job in one lane; returns how it ended there."""
        request = job.request
        if not job.has_audio():
            if lane.cut.is_set():
                return EventKind.FAILED, {"reason": lane.cut_reason or job.cancel_reason}
            return EventKind.FAILED, {"reason": f"synthesis failed: {job.error}", "engine": job.engine}
        if request.expired():
            job.cancel("ttl elapsed")
            return EventKind.EXPIRED, {"reason": "ttl elapsed before playback"}

        def on_start() -> None:
            if job.first_audio_due():
                self._first_audio(job, lane)

        if lane.zone is not None:
            return self._deliver_zone(job, lane, lane.zone, on_start)
        if request.output in ("play", "both"):
            outcome = self._play_with_retry(job, lane, on_start)
            if outcome is not None:
                return outcome
        if request.output in ("publish", "both") and not job.cancelled.is_set():
            stream = self._publisher.open(request, job.sample_rate)
            for chunk in self._output_chunks(job):
                stream.write(chunk)
                on_start()
            self.heartbeat.beat("playback", job.samples / job.sample_rate)  # a remote player may take as long
            stream.close(job.cancelled)
        return self._outcome(job, lane)

    def _deliver_zone(
        self, job: Job, lane: _Lane, zone: ZoneOutput, on_start: Callable[[], None]
    ) -> tuple[EventKind, dict[str, Any]]:
        """A zone's sound card, or its topic: one WAV, the zone's lead-in and volume in it, then the time it
        takes to play, so the zone's next announcement does not talk over it."""
        if zone.audio is not None:
            outcome = self._play_with_retry(job, lane, on_start)
            return outcome if outcome is not None else self._outcome(job, lane)
        assert zone.publisher is not None and job.gate is not None
        job.gate.arrive(zone.name, lane.cut)
        job.zone_started.setdefault(zone.name, time.monotonic())
        stream = zone.publisher.open(job.request, job.sample_rate)
        stream.write(np.zeros(round(zone.lead_in_ms * job.sample_rate / 1000), np.float32))
        volume = zone.volume_at(self._minute())
        for chunk in self._output_chunks(job, lane.beat):
            if lane.cut.is_set():
                break
            stream.write(chunk * volume if volume != 1.0 else chunk)
            on_start()
        seconds = job.samples / job.sample_rate
        self.heartbeat.beat(lane.beat, seconds)
        if not lane.cut.is_set():
            stream.close(lane.cut)
            lane.cut.wait(seconds)
        return self._outcome(job, lane)

    def _play_with_retry(
        self, job: Job, lane: _Lane, on_start: Callable[[], None]
    ) -> tuple[EventKind, dict[str, Any]] | None:
        """Play locally, retrying device errors with backoff until it works or the request expires.

        Returns the terminal event when the request ended here (expired while the device was failing). In a
        zone, the first try opens the device and waits for the announcement's other zones (:class:`_StartGate`);
        a device that fails to open lets them start without it.
        """
        zone = lane.zone
        audio = self._audio if zone is None else zone.audio
        assert audio is not None
        request = job.request
        delay = self._audio_settings.retry_initial_s
        attempt = 0
        where = {} if zone is None else {"zone": zone.name}

        def on_ready() -> None:
            if zone is not None and job.gate is not None:
                job.gate.arrive(zone.name, lane.cut)
                job.zone_started.setdefault(zone.name, time.monotonic())

        while True:
            try:
                chunks = self._output_chunks(job, lane.beat)
                if zone is None:
                    audio.play(chunks, job.sample_rate, lane.cut, on_start)
                else:
                    audio.play(chunks, job.sample_rate, lane.cut, on_start, on_ready=on_ready,
                               lead_in_ms=job.lead_in_ms, gain=zone.volume_at(self._minute()))
                return None
            except AudioDeviceError as exc:
                if zone is not None and job.gate is not None:
                    job.gate.leave(zone.name)
                attempt += 1
                log.warning("audio device error on %s%s (attempt %d): %s", request.id,
                            f" in zone {zone.name}" if zone is not None else "", attempt, exc)
                self._events.emit(
                    request,
                    EventKind.FAILED,
                    reason=f"audio device error: {exc}",
                    retrying=True,
                    attempt=attempt,
                    retry_in_s=delay,
                    **where,
                )
            self.heartbeat.beat(lane.beat, delay)
            if lane.cut.wait(delay):
                return None
            if request.expired():
                return EventKind.EXPIRED, {"reason": "ttl elapsed while the audio device failed"}
            delay = min(delay * 2, self._audio_settings.retry_max_s)

    def _first_audio(self, job: Job, lane: _Lane) -> None:
        latency_ms = round((time.monotonic() - job.request.received_at) * 1000)
        self.last_latency_ms = latency_ms
        fields: dict[str, Any] = {"latency_ms": latency_ms, "engine": job.engine, "sample_rate": job.sample_rate}
        if lane.zone is not None:
            fields["zone"] = lane.zone.name
        if job.first_chunk_at is not None:
            fields["synth_ms"] = round((job.first_chunk_at - job.started_at) * 1000)
        if job.fallback_reason:
            fields.update(fallback=True, fallback_reason=job.fallback_reason)
        if job.cached:
            fields["cached"] = True
        self._events.emit(job.request, EventKind.FIRST_AUDIO, **fields)

    def _outcome(self, job: Job, lane: _Lane) -> tuple[EventKind, dict[str, Any]]:
        """``audio_ms`` is the audio delivered, chime included (what a published WAV holds and ``audio_sha256``
        covers); ``speech_ms`` the synthesised speech alone, which the real-time factor is measured against."""
        speech_ms = round(job.speech_samples / job.sample_rate * 1000)
        chime = self._chime.size if job.request.chime else 0
        fields: dict[str, Any] = {
            "engine": job.engine,
            "fallback": job.fallback_reason is not None,
            "audio_ms": round((chime + job.samples) / job.sample_rate * 1000),
            "speech_ms": speech_ms,
            "total_ms": round((time.monotonic() - job.request.received_at) * 1000),
        }
        if job.synth_done_at is not None:
            synth_ms = round((job.synth_done_at - job.started_at) * 1000)
            fields.update(synth_ms=synth_ms, rtf=round(synth_ms / speech_ms, 3) if speech_ms else None)
        if job.fallback_reason:
            fields["fallback_reason"] = job.fallback_reason
        if job.cached:
            fields["cached"] = True
        if lane.cut.is_set():
            return EventKind.FAILED, {"reason": lane.cut_reason or job.cancel_reason, **fields}
        if job.truncated:
            return EventKind.FAILED, {"reason": job.halt_reason, **fields}
        if job.error is not None:
            return EventKind.FAILED, {"reason": f"synthesis failed: {job.error}", **fields}
        fields["audio_sha256"] = self._audio_sha256(job)
        if job.cache_entry is not None:
            fields["cache_entry"] = job.cache_entry
        return EventKind.DONE, fields

    def _audio_sha256(self, job: Job) -> str:
        """SHA-256 of the s16le PCM delivered (chime and volume included; a published WAV's data chunk):
        the audit trail's record of what was said."""
        digest = hashlib.sha256()
        for chunk in self._output_chunks(job):
            digest.update(to_pcm16(chunk))
        return digest.hexdigest()
