"""The HTTP API against the engine itself, and a burst of clients through the one queue.

    python -m bench.http_api [--quick] [--texts N] [--repeats N] [--clients N] [--refusal-depth N]
                             [--threads N] [--json [FILE]]

``gsv-edge serve`` runs in this process (``Service``) with the HTTP API on a free 127.0.0.1 port, a private
mosquitto, the demo bundle (``quantize.demo.make_demo``) and a voice cloned from the benchmark's generated
reference clip; the audio cache is off, so every request is synthesised.

Overhead: each text is spoken three ways by the same engine, in an order that rotates from text to text:
``engine.synthesize`` called directly (holding the pipeline's engine lock, the daemon idle), api_v2
``GET /tts`` streamed as raw PCM, and OpenAI ``POST /v1/audio/speech`` streamed as ``pcm`` (httpx, one kept-alive
connection). Each records the time to its first audio and to its end, a text's figure being its fastest of
``--repeats`` rounds; the overhead is HTTP minus direct, text by text. api_v2 carries the seed of the direct
call, so both decode the same tokens and their PCM is compared byte for byte; an OpenAI request has no seed, so
its tokens (and its length) may differ, and its PCM is resampled to OpenAI's rate.

Load: ``--clients`` clients at once, one request each (api_v2 and OpenAI by turns, whole WAV), with room for all
of them in the queue. Refusal: the same burst at a daemon whose ``queue.max_depth`` is ``--refusal-depth``,
arriving while the engine is busy (the bench holds its lock until every request is queued or refused), so the
rest are answered 503 with ``Retry-After``. Every request of both runs is matched to the audit trail by its text:
exactly one row, whose outcome agrees with the response, or it counts as lost, duplicated or mismatched.
The exit status is 1 when any request is lost, duplicated, mismatched or answered otherwise than documented.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench import workload as w
from bench.measure import VOICE, profile
from bench.run import log, machine
from bench.soak import TEXTS, Mosquitto, free_port, percentile
from daemon.app.service import Service
from daemon.audio.wav import encode_wav, to_pcm16
from daemon.config import load_settings
from daemon.core.audit import read_records, text_sha256
from daemon.core.events import Event, EventKind
from daemon.model.bundle import Bundle
from daemon.model.engine import Engine
from daemon.speech.synthesizer import Sampling

VOICE_PROMPT = "This is the reference clip of the benchmark voice."
VOICE_LANG = "en"
SEED = 1000  # text i is decoded with seed SEED + i, directly and over api_v2
LOAD_DEPTH = 1000  # queue.max_depth of the load run: every client fits
CLIENT_TIMEOUT_S = 300.0
PATHS = ("direct", "api_v2", "openai")


# -- the daemon ---------------------------------------------------------------------------------------


def build_engine(directory: Path, threads: int) -> Engine:
    """The demo bundle with the benchmark voice; its sessions share one thread pool, as in ``gsv-edge serve``."""
    from quantize.demo import make_demo

    with warnings.catch_warnings():  # the exporter's tracer warnings say nothing about this run
        warnings.simplefilter("ignore")
        bundle = make_demo(directory / "demo", log=lambda _msg: None)
    engine = Engine(Bundle.load(bundle), profile(threads, "cpu"), directory / "engine")
    engine.register_voice(VOICE, encode_wav(w.reference_clip(), w.SAMPLE_RATE), VOICE_PROMPT, VOICE_LANG)
    return engine


@contextmanager
def daemon(directory: Path, broker: Mosquitto, engine: Engine, name: str, max_depth: int
           ) -> Iterator[tuple[Service, str]]:
    """A started ``Service`` with its own state directory; yields it and the HTTP API's base URL."""
    port = free_port()
    config = directory / f"{name}.toml"
    config.write_text(
        f'state_dir = "{directory / name}"\nlog_level = "WARNING"\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\nnode_id = "bench-{name}"\n'
        f"[queue]\nmax_depth = {max_depth}\n"
        "[homeassistant]\nenabled = false\n"
        f"[http]\nport = {port}\nrate_limit_per_s = 100000\nrate_limit_burst = 100000\n"
        "[cache]\nmax_mb = 0\n"
    )
    service = Service(load_settings(config), engine=engine)
    service.start()
    try:
        if not service.mqtt.ready.wait(10):
            raise RuntimeError("the daemon did not subscribe to its topics")
        yield service, f"http://127.0.0.1:{port}"
    finally:
        service.stop()


# -- overhead -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    first_s: float
    total_s: float
    pcm_sha256: str  # of the 16-bit mono PCM, as a client gets it
    audio_s: float

    @classmethod
    def of(cls, first_s: float, total_s: float, pcm: bytes, rate: int) -> Timing:
        return cls(first_s, total_s, hashlib.sha256(pcm).hexdigest(), len(pcm) / 2 / rate)


def texts(count: int, start: int = 0) -> list[str]:
    """Two sentences each (two chunks: the first arrives before the end), every one different."""
    return [f"{TEXTS[n % len(TEXTS)].format(n=n)} {TEXTS[(n + 1) % len(TEXTS)].format(n=n + 1)}"
            for n in range(start, start + count)]


def direct(service: Service, text: str, seed: int) -> Timing:
    engine = service.engine
    with service.pipeline.engine_lock.exclusive():  # the daemon is idle; this keeps it so
        began = time.perf_counter()
        first = None
        chunks = []
        for chunk in engine.synthesize(text, VOICE, VOICE_LANG, 1.0, Sampling(seed=seed)):
            if first is None and chunk.size:
                first = time.perf_counter() - began
            chunks.append(chunk)
        total = time.perf_counter() - began
    if first is None:
        raise RuntimeError(f"the engine said nothing for {text!r}")
    return Timing.of(first, total, to_pcm16(np.concatenate(chunks)), engine.sample_rate)


def streamed(client: httpx.Client, method: str, path: str, **request: Any) -> Timing:
    began = time.perf_counter()
    first = None
    body = bytearray()
    with client.stream(method, path, **request) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.read()[:300]!r}")
        for piece in response.iter_raw():
            if first is None and piece:
                first = time.perf_counter() - began
            body += piece
        rate = int(response.headers["x-sample-rate"])
    total = time.perf_counter() - began
    if first is None:
        raise RuntimeError(f"{method} {path}: an empty response")
    return Timing.of(first, total, bytes(body), rate)


def api_v2_stream(client: httpx.Client, text: str, seed: int) -> Timing:
    params = {"text": text, "text_lang": VOICE_LANG, "ref_audio_path": VOICE, "prompt_lang": VOICE_LANG,
              "prompt_text": VOICE_PROMPT, "streaming_mode": 1, "media_type": "raw", "seed": seed}
    return streamed(client, "GET", "/tts", params=params)


def openai_stream(client: httpx.Client, text: str) -> Timing:
    body = {"model": "tts-1", "input": text, "voice": VOICE, "response_format": "pcm"}
    return streamed(client, "POST", "/v1/audio/speech", json=body)


def spread(values: list[float]) -> dict[str, float]:
    """Median and 90th percentile, in ms."""
    return {"p50": round(statistics.median(values) * 1000, 1), "p90": round(percentile(values, 0.9) * 1000, 1)}


def overhead(service: Service, url: str, count: int, repeats: int) -> dict[str, Any]:
    """Each text's figure per path is the fastest of its ``repeats`` (rounds over all texts), which keeps
    what other load on the machine adds out of the comparison; the differences are taken text by text."""
    with httpx.Client(base_url=url, timeout=CLIENT_TIMEOUT_S) as client:
        calls: dict[str, Callable[[str, int], Timing]] = {
            "direct": lambda text, seed: direct(service, text, seed),
            "api_v2": lambda text, seed: api_v2_stream(client, text, seed),
            "openai": lambda text, _seed: openai_stream(client, text),
        }
        for path in PATHS:  # warm-up, not counted: the sessions' first runs, the connection
            calls[path](texts(1, start=count)[0], SEED - 1)
        runs: dict[str, list[list[Timing]]] = {path: [[] for _ in range(count)] for path in PATHS}
        for round_ in range(repeats):
            for i, text in enumerate(texts(count)):
                turn = (i + round_) % len(PATHS)
                for path in PATHS[turn:] + PATHS[:turn]:
                    runs[path][i].append(calls[path](text, SEED + i))
            log(f"overhead: round {round_ + 1}/{repeats} done")
    first = {path: [min(t.first_s for t in tries) for tries in runs[path]] for path in PATHS}
    total = {path: [min(t.total_s for t in tries) for tries in runs[path]] for path in PATHS}
    paths = {path: {"first_ms": spread(first[path]), "total_ms": spread(total[path]),
                    "audio_s": round(statistics.median(tries[0].audio_s for tries in runs[path]), 2)}
             for path in PATHS}
    extra = {path: {"first_ms": spread([h - d for h, d in zip(first[path], first["direct"], strict=True)]),
                    "total_ms": spread([h - d for h, d in zip(total[path], total["direct"], strict=True)])}
             for path in PATHS[1:]}
    same = sum(len({t.pcm_sha256 for t in runs["direct"][i] + runs["api_v2"][i]}) == 1 for i in range(count))
    return {"texts": count, "repeats": repeats, "paths": paths, "overhead_ms": extra,
            "api_v2_same_pcm_as_direct": same}


# -- load -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    text: str
    status: int | str  # the HTTP status, or the exception's name when no response came
    retry_after: str | None
    request_id: str | None
    seconds: float


def one_request(url: str, index: int, text: str, barrier: threading.Barrier) -> Answer:
    """api_v2 for odd ``index``, OpenAI for even; the whole WAV."""
    if index % 2:
        path, body = "/tts", {"text": text, "text_lang": VOICE_LANG, "ref_audio_path": VOICE,
                              "prompt_lang": VOICE_LANG, "prompt_text": VOICE_PROMPT}
    else:
        path, body = "/v1/audio/speech", {"model": "tts-1", "input": text, "voice": VOICE, "response_format": "wav"}
    with httpx.Client(base_url=url, timeout=CLIENT_TIMEOUT_S) as client:
        barrier.wait(timeout=60)
        began = time.perf_counter()
        try:
            response = client.post(path, json=body)
        except httpx.HTTPError as exc:
            return Answer(text, type(exc).__name__, None, None, time.perf_counter() - began)
    return Answer(text, response.status_code, response.headers.get("retry-after"),
                  response.headers.get("x-request-id"), time.perf_counter() - began)


def burst(url: str, batch: list[str], meanwhile: Callable[[], None] = lambda: None) -> tuple[list[Answer], float]:
    """Every text from a client of its own, all released at once; ``meanwhile`` runs as they go. Returns the
    answers and the seconds from the release to the last answer."""
    barrier = threading.Barrier(len(batch) + 1)
    with ThreadPoolExecutor(max_workers=len(batch)) as pool:
        futures = [pool.submit(one_request, url, i, text, barrier) for i, text in enumerate(batch)]
        barrier.wait(timeout=60)
        began = time.perf_counter()
        meanwhile()
        answers = [future.result() for future in futures]
    return answers, time.perf_counter() - began


def account(answers: list[Answer], records: list[dict[str, Any]]) -> dict[str, Any]:
    """Each answer against its audit row (found by the text's SHA-256): 200 is ``done`` with the response's request
    id, 503 with ``Retry-After`` is ``rejected`` for a full queue; nothing else is documented."""
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in records:
        if row["protocol"] == "http":
            rows[row["text_sha256"]].append(row)
    statuses = Counter(str(answer.status) for answer in answers)
    lost = duplicated = mismatched = undocumented = 0
    for answer in answers:
        found = rows.get(text_sha256(answer.text), [])
        lost += not found
        duplicated += len(found) > 1
        refused = answer.status == 503 and answer.retry_after is not None
        undocumented += not (answer.status == 200 or refused)
        if len(found) == 1:
            row = found[0]
            agrees = (row["outcome"] == "done" and row["request_id"] == answer.request_id if answer.status == 200
                      else row["outcome"] == "rejected" and row["reason"] == "queue full" if refused else False)
            mismatched += not agrees
    return {
        "requests": len(answers),
        "statuses": dict(sorted(statuses.items())),
        "errors_by_status": {status: n for status, n in sorted(statuses.items()) if status != "200"},
        "audit_outcomes": dict(sorted(Counter(r["outcome"] for r in records if r["protocol"] == "http").items())),
        "lost": lost,
        "duplicated": duplicated,
        "mismatched": mismatched,
        "undocumented": undocumented,
    }


def latency(answers: list[Answer]) -> dict[str, float]:
    """Per-request seconds (send to last byte) of the 200s, in ms."""
    seconds = [a.seconds for a in answers if a.status == 200]
    if not seconds:
        return {}
    return {"p50": round(statistics.median(seconds) * 1000), "p90": round(percentile(seconds, 0.9) * 1000),
            "p99": round(percentile(seconds, 0.99) * 1000), "max": round(max(seconds) * 1000)}


def load(service: Service, url: str, clients: int) -> dict[str, Any]:
    since = time.time()
    answers, wall = burst(url, [TEXTS[n % len(TEXTS)].format(n=n) for n in range(clients)])
    result = account(answers, read_records(service.settings.state_dir, since))
    return {"clients": clients, "max_depth": service.settings.queue.max_depth, "wall_s": round(wall, 2),
            "latency_ms": latency(answers), **result}


class Answered:
    """Counts the HTTP requests the daemon has queued or refused (an event-bus subscriber)."""

    def __init__(self) -> None:
        self._ids: set[str] = set()
        self._cond = threading.Condition()

    def on_event(self, event: Event) -> None:
        request = event.request
        if request is not None and request.source == "http" and event.kind in (EventKind.QUEUED, EventKind.REJECTED):
            with self._cond:
                self._ids.add(request.id)
                self._cond.notify_all()

    def wait_for(self, count: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self._ids) >= count, timeout)


def refusal(service: Service, url: str, clients: int) -> dict[str, Any]:
    answered = Answered()
    service.bus.subscribe(answered)
    outcome: dict[str, bool] = {}
    held, released = threading.Event(), threading.Event()

    def hold() -> None:  # the engine busy, as with a long announcement: the queue fills
        with service.pipeline.engine_lock.exclusive():
            held.set()
            released.wait()

    def busy_until_all_answered() -> None:
        try:
            outcome["all_answered_while_busy"] = answered.wait_for(clients, CLIENT_TIMEOUT_S)
        finally:
            released.set()

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    held.wait()
    try:
        answers, wall = burst(url, [TEXTS[n % len(TEXTS)].format(n=n) for n in range(clients)],
                              busy_until_all_answered)
    finally:
        released.set()  # also when the burst failed before it began
        holder.join()
    result = account(answers, read_records(service.settings.state_dir))
    refused = [a for a in answers if a.status == 503]
    return {"clients": clients, "max_depth": service.settings.queue.max_depth, "wall_s": round(wall, 2),
            "synthesis_threads": service.pipeline.synthesis_threads, **outcome,
            "retry_after": sorted({a.retry_after for a in refused if a.retry_after}), **result}


# -- the run ------------------------------------------------------------------------------------------


def run(count: int, repeats: int, clients: int, refusal_depth: int, threads: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gsv-bench-http-") as tmp:
        directory = Path(tmp)
        log("building the demo bundle and the benchmark voice")
        engine = build_engine(directory, threads)
        broker = Mosquitto(directory)
        broker.start()
        try:
            with daemon(directory, broker, engine, "serve", LOAD_DEPTH) as (service, url):
                log(f"overhead: {count} texts, three ways each, {repeats} rounds")
                over = overhead(service, url, count, repeats)
                log(f"load: {clients} clients at once")
                loaded = load(service, url, clients)
            with daemon(directory, broker, engine, "small-queue", refusal_depth) as (service, url):
                log(f"refusal: {clients} clients at once, queue.max_depth {refusal_depth}, the engine busy")
                refused = refusal(service, url, clients)
        finally:
            broker.stop()
    return {"engine": engine.name, "sample_rate": engine.sample_rate, "overhead": over, "load": loaded,
            "refusal": refused}


def sound(result: dict[str, Any]) -> bool:
    """No request lost, duplicated, mismatched or answered otherwise than documented; the load run all 200."""
    runs = (result["load"], result["refusal"])
    return (all(r["lost"] == r["duplicated"] == r["mismatched"] == r["undocumented"] == 0 for r in runs)
            and result["load"]["statuses"] == {"200": result["load"]["clients"]})


def table(result: dict[str, Any]) -> str:
    info, over, loaded, refused = result["machine"], result["overhead"], result["load"], result["refusal"]
    paths = over["paths"]
    lines = [
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['threads']} threads, onnxruntime "
        f"{info['onnxruntime']}; load average at start {info['load_average'][0]:.2f}",
        f"Command: {result['command']}",
        f"Engine: {result['engine']}; {over['texts']} texts of two sentences, each path's figure per text the "
        f"fastest of {over['repeats']} rounds; audio cache off",
        "",
        "| path | first audio p50 / p90 (ms) | total p50 / p90 (ms) | audio (s) | overhead first p50 / p90 (ms) "
        "| overhead total p50 / p90 (ms) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for path in PATHS:
        p = paths[path]
        extra = over["overhead_ms"].get(path)
        cells = [f"{extra[k]['p50']} / {extra[k]['p90']}" for k in ("first_ms", "total_ms")] if extra else ["–", "–"]
        lines.append(f"| {path} | {p['first_ms']['p50']} / {p['first_ms']['p90']} | {p['total_ms']['p50']} / "
                     f"{p['total_ms']['p90']} | {p['audio_s']} | {cells[0]} | {cells[1]} |")
    lines += [
        "",
        f"api_v2 PCM identical to the direct call's: {over['api_v2_same_pcm_as_direct']} of {over['texts']}",
        "",
        "| run | clients | queue.max_depth | statuses | audit outcomes | lost | duplicated | mismatched "
        "| undocumented | wall (s) | latency p50 / p90 / p99 / max (ms) |",
        "|---|---:|---:|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in (("load", loaded), ("refusal", refused)):
        lat = r.get("latency_ms")
        latencies = f"{lat['p50']} / {lat['p90']} / {lat['p99']} / {lat['max']}" if lat else "–"
        lines.append(f"| {name} | {r['clients']} | {r['max_depth']} | {json.dumps(r['statuses'])} | "
                     f"{json.dumps(r['audit_outcomes'])} | {r['lost']} | {r['duplicated']} | {r['mismatched']} | "
                     f"{r['undocumented']} | {r['wall_s']} | {latencies} |")
    lines.append(f"\nRefused with Retry-After: {refused['retry_after']}; every request queued or refused while the "
                 f"engine was busy: {refused.get('all_answered_while_busy')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http_api", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer texts for the overhead (the bursts are the same)")
    parser.add_argument("--texts", type=int, help="texts for the overhead, each spoken three ways (default 30, "
                                                  "6 with --quick)")
    parser.add_argument("--repeats", type=int, help="rounds over the texts; each figure is a text's fastest "
                                                    "(default 3, 2 with --quick)")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients in each burst")
    parser.add_argument("--refusal-depth", type=int, default=8, help="queue.max_depth of the refusal run")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    parser.add_argument("--json", nargs="?", const="-", metavar="FILE",
                        help="the results as JSON: on stdout instead of the tables, or into FILE")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if not 1 <= args.refusal_depth < args.clients:
        parser.error("--refusal-depth must be at least 1 and below --clients")
    count = args.texts or (6 if args.quick else 30)
    repeats = args.repeats or (2 if args.quick else 3)
    info = machine(args.threads)
    result = run(count, repeats, args.clients, args.refusal_depth, args.threads)
    result = {"machine": info, "command": shlex.join(["python", "-m", "bench.http_api", *argv]), **result}
    result["sound"] = sound(result)
    if args.json == "-":
        print(json.dumps(result, indent=2))
    else:
        print(table(result))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["sound"] else 1


if __name__ == "__main__":
    sys.exit(main())
