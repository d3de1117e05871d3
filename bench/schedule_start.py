"""Schedule start error: how late a scheduled announcement's first audio is, rendered ahead or not.

    python -m bench.schedule_start [--runs 100] [--gap-s 1] [--ahead-s 300] [--lead-s 30] [--engine espeak|demo]
                                   [--json [FILE]]

``gsv-edge serve`` runs in this process (``Service``) with a private mosquitto, publish-only output (no sound
card: first audio is the first chunk handed to MQTT) and the rendered-audio cache on. Each mode gets a fresh
daemon and state directory and ``--runs`` one-shot schedules, added the way MQTT and HTTP add them
(``Service.add_schedule``), due ``--gap-s`` apart on the wall clock, each with its own text (two sentences, so no
run finds another's audio in the cache). ``rendered``: ``cache.prerender_s`` is ``--ahead-s`` (default the
setting's default), so each run is rendered into the cache up to that long before it is due, the first due
``--lead-s`` after the schedules are added (time for the renders that fall due at once: with the default window,
all of them); ``synthesised``: ``cache.prerender_s = 0``, each run is synthesised when due.

Measured from the event bus in process (a subscriber's clock, not the events' rounded ``ts``), per run, against
its due time (the Unix time in its id, ``NAME@DUE``): ``queued`` (the runner woke, recorded the due time and
queued the run: the part that does not depend on the audio) and ``first_audio`` (the start error: the first chunk
delivered). Reported per mode: p50 / p99 / max in ms, and how many runs started from the cache. The engine:
eSpeak NG (default; nothing to build) or ``demo``, the untrained demo bundle with a cloned voice (needs torch to
build it, as ``bench.http_api``). The exit status is 1 when a run did not end ``done`` or ran twice.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import tempfile
import threading
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from bench.run import log, machine
from bench.soak import TEXTS, Mosquitto
from daemon.app.service import Service
from daemon.config import load_settings
from daemon.core.events import Event, EventKind
from daemon.core.schedules import make
from daemon.speech.synthesizer import Synthesizer

MODES = {"rendered": True, "synthesised": False}
SYNTHESISED_LEAD_S = 3  # from the schedules added to the first due time, when nothing is rendered ahead
END_TIMEOUT_S = 120.0  # after the last due time, for the last runs to end


class Clocked:
    """The wall-clock time each run's events reach the bus (a subscriber), by run id and kind."""

    def __init__(self) -> None:
        self.at: dict[str, dict[str, float]] = defaultdict(dict)
        self.fields: dict[str, dict[str, Any]] = defaultdict(dict)
        self.counts: dict[tuple[str, str], int] = defaultdict(int)
        self._cond = threading.Condition()

    def on_event(self, event: Event) -> None:
        now = time.time()
        request = event.request
        if request is None or not request.topic or not request.topic.startswith("schedule/"):
            return
        with self._cond:
            self.at[request.id].setdefault(event.kind.value, now)
            self.counts[(request.id, event.kind.value)] += 1
            if event.kind is EventKind.STARTED:
                self.fields[request.id] = dict(event.fields)
            self._cond.notify_all()

    def ended(self) -> int:
        return sum(1 for kinds in self.at.values() if {"done", "failed", "expired", "rejected"} & set(kinds))

    def wait_ended(self, count: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.ended() >= count, timeout)


def texts(count: int) -> list[str]:
    return [f"{TEXTS[n % len(TEXTS)].format(n=n)} {TEXTS[(n + 1) % len(TEXTS)].format(n=n + 7)}"
            for n in range(count)]


def nearest_rank(values: list[float], fraction: float) -> float:
    """The smallest value with at least ``fraction`` of them at or below it (p99 of 100 runs: the 99th, not the
    largest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)] if ordered else float("nan")


def spread(values: list[float]) -> dict[str, float]:
    return {"p50": round(nearest_rank(values, 0.50), 1), "p99": round(nearest_rank(values, 0.99), 1),
            "max": round(max(values), 1) if values else float("nan")}


def measure(directory: Path, broker: Mosquitto, engine: Synthesizer | None, voice: str | None, mode: str,
            runs: int, gap_s: int, ahead_s: float, lead_s: int) -> dict[str, Any]:
    """One daemon, ``runs`` one-shots; the start error of each."""
    config = directory / f"{mode}.toml"
    config.write_text(
        f'state_dir = "{directory / mode}"\nlog_level = "WARNING"\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\nnode_id = "bench-{mode}"\n'
        f"[queue]\nmax_depth = {runs + 8}\n"
        "[homeassistant]\nenabled = false\n"
        f"[cache]\nmax_mb = 256\nprerender_s = {ahead_s if MODES[mode] else 0}\n"
    )
    service = Service(load_settings(config), engine=engine)
    clocked = Clocked()
    service.bus.subscribe(clocked)
    service.start()
    try:
        if not service.mqtt.ready.wait(10):
            raise RuntimeError("the daemon did not subscribe to its topics")
        lead = lead_s if MODES[mode] else SYNTHESISED_LEAD_S
        first = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=lead)
        dues: dict[str, float] = {}
        for n, text in enumerate(texts(runs)):
            due = first + timedelta(seconds=n * gap_s)
            payload = {"text": text, "lang": "en", **({"voice": voice} if voice else {})}
            schedule = make(f"run{n:03d}", payload, "UTC", at=due.replace(tzinfo=None).isoformat(), late_s=60)
            service.add_schedule(schedule)
            dues[schedule.run_id(due)] = due.timestamp()
        log(f"{mode}: {runs} runs due from {first.isoformat()} every {gap_s:g} s")
        last = max(dues.values())
        finished = clocked.wait_ended(runs, max(0.0, last - time.time()) + END_TIMEOUT_S)
    finally:
        service.stop()
    queued = [clocked.at[rid]["queued"] - due for rid, due in dues.items() if "queued" in clocked.at[rid]]
    first_audio = [clocked.at[rid]["first_audio"] - due for rid, due in dues.items()
                   if "first_audio" in clocked.at[rid]]
    done = sum(1 for rid in dues if "done" in clocked.at[rid])
    twice = sum(1 for (rid, kind), count in clocked.counts.items() if kind in ("queued", "done") and count > 1)
    per_run = [{"id": rid, "cached": bool(clocked.fields[rid].get("cached")),
                **{f"{kind}_ms": round(1000 * (clocked.at[rid][kind] - due), 1)
                   for kind in ("queued", "started", "first_audio", "done") if kind in clocked.at[rid]}}
               for rid, due in dues.items()]
    return {"mode": mode, "runs": runs, "prerender_s": ahead_s if MODES[mode] else 0, "all_ended": finished,
            "done": done, "ran_twice": twice,
            "cached": sum(1 for rid in dues if clocked.fields[rid].get("cached")),
            "queued_ms": spread([1000 * v for v in queued]), "start_error_ms": spread([1000 * v for v in first_audio]),
            "per_run": per_run}


def build(directory: Path, kind: str, threads: int) -> tuple[Synthesizer | None, str | None]:
    """The engine and voice to speak with: None for eSpeak NG (the daemon's own fallback voice)."""
    if kind == "espeak":
        return None, None
    from bench.http_api import build_engine
    from bench.measure import VOICE

    log("building the demo bundle and the benchmark voice")
    engine = build_engine(directory, threads)
    for _ in engine.synthesize("The engine warms up before the runs.", VOICE, "en"):
        pass  # onnxruntime's first run prepares its kernels: not part of any run
    return engine, VOICE


def run(runs: int, gap_s: int, ahead_s: float, lead_s: int, kind: str, threads: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gsv-bench-schedules-") as tmp:
        directory = Path(tmp)
        engine, voice = build(directory, kind, threads)
        broker = Mosquitto(directory)
        broker.start()
        try:
            modes = [measure(directory, broker, engine, voice, mode, runs, gap_s, ahead_s, lead_s) for mode in MODES]
        finally:
            broker.stop()
    return {"engine": kind, "gap_s": gap_s, "lead_s": lead_s, "modes": modes}


def sound(result: dict[str, Any]) -> bool:
    return all(m["all_ended"] and m["done"] == m["runs"] and m["ran_twice"] == 0 for m in result["modes"])


def table(result: dict[str, Any]) -> str:
    info = result["machine"]
    lines = [
        f"Machine: {info['cpu']}, {info['cores']} cores; load average at start {info['load_average'][0]:.2f}",
        f"Command: {result['command']}",
        f"Engine: {result['engine']}; one-shots {result['gap_s']:g} s apart, publish-only output",
        "",
        "| mode | `cache.prerender_s` | runs | from the cache | done | queued - due p50 / p99 / max (ms) "
        "| start error (first audio - due) p50 / p99 / max (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for m in result["modes"]:
        q, s = m["queued_ms"], m["start_error_ms"]
        lines.append(f"| {m['mode']} | {m['prerender_s']:g} | {m['runs']} | {m['cached']} | {m['done']} | "
                     f"{q['p50']} / {q['p99']} / {q['max']} | {s['p50']} / {s['p99']} / {s['max']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.schedule_start", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100, help="one-shot schedules per mode")
    parser.add_argument("--gap-s", type=int, default=1, help="whole seconds between due times")
    parser.add_argument("--ahead-s", type=float, default=300.0, help="cache.prerender_s of the rendered mode")
    parser.add_argument("--lead-s", type=int, default=30,
                        help="seconds from adding the schedules to the first due time, in the rendered mode")
    parser.add_argument("--engine", choices=("espeak", "demo"), default="espeak",
                        help="eSpeak NG, or the demo bundle (needs torch to build it)")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads (demo)")
    parser.add_argument("--json", nargs="?", const="-", metavar="FILE",
                        help="the results as JSON: on stdout instead of the table, or into FILE")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if args.runs < 1 or args.gap_s < 1 or args.ahead_s <= 0 or args.lead_s < 1:
        parser.error("--runs, --gap-s and --lead-s must be at least 1, --ahead-s above 0")
    info = machine(args.threads)
    result = run(args.runs, args.gap_s, args.ahead_s, args.lead_s, args.engine, args.threads)
    result = {"machine": info, "command": shlex.join(["python", "-m", "bench.schedule_start", *argv]), **result}
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
