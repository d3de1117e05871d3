"""Two worker threads: one synthesises the next request while the other plays the current one.

The synthesis thread takes a request from the queue only when the hand-over slot is free, so it is
never more than one request ahead and a late urgent request still overtakes everything queued.
Audio flows through a :class:`Job` chunk by chunk, so output starts with the first sentence.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
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

log = logging.getLogger(__name__)

STOPPING = "daemon stopping"  # why a request is cut or left unfinished by a stop


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


class Job:
    """A request on its way through the pipeline: audio chunks appear here as they are synthesised."""

    def __init__(self, request: Request, sample_rate: int) -> None:
        self.request = request
        self.sample_rate = sample_rate
        self.cancelled = threading.Event()
        self.cancel_reason = ""
        self.halted = threading.Event()  # synthesis stops at the next chunk; what is synthesised is still delivered
        self.halt_reason = ""
        self.truncated = False  # synthesis stopped before the end of the text
        self.engine = ""
        self.fallback_reason: str | None = None
        self.cached = False  # played from the rendered-audio cache, not synthesised
        self.cache_entry: str | None = None  # the digest its audio is (or will be) kept under in that cache
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
            self._cond.notify_all()

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
    ) -> None:
        self._queue = queue
        self.cache = cache
        self.heartbeat = Heartbeat()  # the synthesis and playback loops beat; the systemd watchdog reads it
        self.engine_lock = threading.Lock()  # the engine is not thread-safe: synthesis and voice registration
        self._draining = False
        self._engine = engine
        self._fallback = fallback
        self._events = events
        self._publisher = publisher
        self._audio = audio
        self._audio_settings = audio_settings
        self._chime = self._load_chime(audio_settings, engine.sample_rate)
        self._cond = threading.Condition()
        self._next: Job | None = None  # synthesising (or synthesised), waiting for the player
        self._current: Job | None = None  # being played or published
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
    def busy(self) -> bool:
        with self._cond:
            return self._current is not None or self._next is not None

    def depth(self) -> int:
        return len(self._queue)

    def lineup(self) -> list[tuple[str, Request]]:
        """Every request not yet ended, in the order it is served: ``current`` (being delivered, and synthesised
        while it is), ``next`` (synthesised ahead while the current one plays), then ``queued``."""
        with self._cond:  # the synthesis thread pops under it too: no request is seen twice or missed
            held = [(name, job.request) for name, job in (("current", self._current), ("next", self._next))
                    if job is not None]
            return held + [("queued", request) for request in self._queue.waiting()]

    def set_engine(self, engine: Synthesizer, fallback: Synthesizer) -> None:
        """Switch engines (reload): a request already being synthesised finishes on the old one."""
        chime = self._load_chime(self._audio_settings, engine.sample_rate)
        with self._cond:
            self._engine, self._fallback, self._chime = engine, fallback, chime

    def start(self) -> None:
        self._running = True
        for target, name in ((self._synth_loop, "synthesis"), (self._play_loop, "playback")):
            thread = threading.Thread(target=target, name=f"gsv-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        with self._cond:
            self._running = False
            for job in (self._current, self._next):
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
            pending = self._next
            if pending is not None:
                pending.cancel(STOPPING)
                self._next = None
                self._queue.requeue(pending.request)
            if self._current is not None:
                self._current.halt(STOPPING)
            self._cond.notify_all()
            while self._current is not None and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            return self._current is None

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
            requeued = self._preempt(request) if request.interrupt or request.priority == "emergency" else None
            self._cond.notify_all()
        if requeued is not None:
            self._events.emit(requeued, EventKind.QUEUED, requeued=True, reason=f"preempted by {request.id}")

    def _preempt(self, request: Request) -> Request | None:
        """Cut the current playback if ``request`` may, and put synthesised-but-waiting work back in
        the queue so ``request`` goes first; returns the requeued request."""
        requeued = None
        pending = self._next
        if pending is not None and (request.rank, not request.interrupt) < (pending.request.rank, True):
            pending.cancel(f"preempted by {request.id}")
            self._next = None
            self._queue.requeue(pending.request)
            requeued = pending.request
        current = self._current
        if current is not None and current.request.occupies_speaker and _preempts(request, current.request):
            current.cancel(f"interrupted by {request.id}")
        return requeued

    def cancel(self, request: Request, reason: str) -> None:
        """Drop ``request`` wherever it is: out of the queue, or its synthesis and delivery stopped at the
        next chunk. It ends ``failed`` with ``reason``; nothing happens if it has already ended."""
        with self._cond:
            current, pending = self._current, self._next
            if current is not None and current.request is request:
                current.cancel(reason)  # the playback loop reports it
                return
            if pending is not None and pending.request is request:
                pending.cancel(reason)
                self._next = None
            elif not self._queue.remove(request):
                return
            self._cond.notify_all()
        self._events.emit(request, EventKind.FAILED, reason=reason)

    # -- synthesis ------------------------------------------------------------------------------

    def _synth_loop(self) -> None:
        while True:
            with self._cond:
                request = None
                while self._running and (
                    self._next is not None or self._draining or (request := self._queue.pop()) is None
                ):
                    self._cond.wait(timeout=1.0)
                    self.heartbeat.beat("synthesis")
                if not self._running:
                    return
                assert request is not None
                if request.expired():
                    job = None
                else:
                    job = self._next = Job(request, self._engine.sample_rate)
                    self._cond.notify_all()
            if job is None:
                self._events.emit(request, EventKind.EXPIRED, reason="ttl elapsed while queued")
                continue
            self._synthesize(job)

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
        with self.engine_lock:
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
        sayings = {index: dataclasses.replace(request, text=part.text, voice=part.voice, lang=part.lang,
                                              speed=part.speed, chime=False, parts=(), repeat=1)
                   for index, part in enumerate(request.parts) if part.text is not None}
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
                    with self.engine_lock:
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
        stream = engine.synthesize(say.text, voice, say.lang, say.speed, say.sampling)
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

    def _play_loop(self) -> None:
        while True:
            with self._cond:
                while self._running and self._next is None:
                    self._cond.wait(timeout=1.0)
                    self.heartbeat.beat("playback")
                if not self._running:
                    return
                job, self._next, self._current = self._next, None, self._next
                self._cond.notify_all()
            try:
                kind, fields = self._deliver(job)
            except Exception as exc:  # a bug must not kill the playback thread
                log.exception("delivering %s failed", job.request.id)
                kind, fields = EventKind.FAILED, {"reason": f"internal error: {exc}"}
            with self._cond:
                self._current = None
                self._cond.notify_all()
            self._events.emit(job.request, kind, **fields)  # after clearing: the status then reads idle

    def _output_chunks(self, job: Job) -> Iterator[np.ndarray]:
        """The chunks to deliver; each beat allows the consumer the chunk's duration to play it."""
        if job.request.chime:
            self.heartbeat.beat("playback", self._chime.size / job.sample_rate)
            yield self._chime * job.request.volume
        for chunk in job.chunks():
            self.heartbeat.beat("playback", chunk.size / job.sample_rate)
            yield chunk * job.request.volume if job.request.volume != 1.0 else chunk

    def _deliver(self, job: Job) -> tuple[EventKind, dict[str, Any]]:
        """Play and/or publish the job; returns its terminal event."""
        request = job.request
        if not job.has_audio():
            if job.cancelled.is_set():
                return EventKind.FAILED, {"reason": job.cancel_reason}
            return EventKind.FAILED, {"reason": f"synthesis failed: {job.error}", "engine": job.engine}
        if request.expired():
            job.cancel("ttl elapsed")
            return EventKind.EXPIRED, {"reason": "ttl elapsed before playback"}
        first_audio = threading.Event()

        def on_start() -> None:
            if not first_audio.is_set():
                first_audio.set()
                self._first_audio(job)

        if request.output in ("play", "both"):
            outcome = self._play_with_retry(job, on_start)
            if outcome is not None:
                return outcome
        if request.output in ("publish", "both") and not job.cancelled.is_set():
            stream = self._publisher.open(request, job.sample_rate)
            for chunk in self._output_chunks(job):
                stream.write(chunk)
                on_start()
            self.heartbeat.beat("playback", job.samples / job.sample_rate)  # a remote player may take as long
            stream.close(job.cancelled)
        return self._outcome(job)

    def _play_with_retry(self, job: Job, on_start: Callable[[], None]) -> tuple[EventKind, dict[str, Any]] | None:
        """Play locally, retrying device errors with backoff until it works or the request expires.

        Returns the terminal event when the request ended here (expired while the device was failing).
        """
        assert self._audio is not None
        request = job.request
        delay = self._audio_settings.retry_initial_s
        attempt = 0
        while True:
            try:
                self._audio.play(self._output_chunks(job), job.sample_rate, job.cancelled, on_start)
                return None
            except AudioDeviceError as exc:
                attempt += 1
                log.warning("audio device error on %s (attempt %d): %s", request.id, attempt, exc)
                self._events.emit(
                    request,
                    EventKind.FAILED,
                    reason=f"audio device error: {exc}",
                    retrying=True,
                    attempt=attempt,
                    retry_in_s=delay,
                )
            self.heartbeat.beat("playback", delay)
            if job.cancelled.wait(delay):
                return None
            if request.expired():
                return EventKind.EXPIRED, {"reason": "ttl elapsed while the audio device failed"}
            delay = min(delay * 2, self._audio_settings.retry_max_s)

    def _first_audio(self, job: Job) -> None:
        latency_ms = round((time.monotonic() - job.request.received_at) * 1000)
        self.last_latency_ms = latency_ms
        fields: dict[str, Any] = {"latency_ms": latency_ms, "engine": job.engine, "sample_rate": job.sample_rate}
        if job.first_chunk_at is not None:
            fields["synth_ms"] = round((job.first_chunk_at - job.started_at) * 1000)
        if job.fallback_reason:
            fields.update(fallback=True, fallback_reason=job.fallback_reason)
        if job.cached:
            fields["cached"] = True
        self._events.emit(job.request, EventKind.FIRST_AUDIO, **fields)

    def _outcome(self, job: Job) -> tuple[EventKind, dict[str, Any]]:
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
        if job.cancelled.is_set():
            return EventKind.FAILED, {"reason": job.cancel_reason, **fields}
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
