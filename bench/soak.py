"""Bounded soak and fault injection: ``gsv-edge serve`` and mosquitto as real processes on 127.0.0.1.

``python -m bench.soak --requests 10000`` sends native ``say`` requests (eSpeak NG fallback voice,
publish-only output) through a private mosquitto with at most ``--window`` outstanding and prints
throughput, queue-wait and end-to-end latency percentiles, the daemon's memory over the run, and the
accounting: sent, accepted, completed, failed, expired, rejected, lost, duplicated.

``--faults N`` additionally injects N faults spread over the run, alternating ``kill -9`` of the daemon
(restarted at once on the same state directory) and a mosquitto restart, and prints each recovery time:
kill -> online again and kill -> first request done; broker back -> first request done.

Lost = accepted (``queued``) but no terminal event by the end; duplicated = more than one distinct
terminal event, or ``started`` again after ``done``. Identical QoS 1 redeliveries are counted once.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parent.parent
TERMINAL = {"done", "failed", "expired", "rejected"}
TEXTS = [
    "The train to the airport leaves from platform {n}.",
    "Visitor number {n}, please come to the front desk.",
    "Doctor {n} to the emergency department.",
    "Gate {n} is now boarding.",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Mosquitto:
    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        data = directory / "mosquitto"
        data.mkdir()
        conf = directory / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {data}/\nmax_queued_messages 100000\n"
            + ("user root\n" if os.geteuid() == 0 else "")
        )
        self.command = [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


class Daemon:
    def __init__(self, directory: Path, port: int) -> None:
        self.node_id = "soak"
        self.config = directory / "config.toml"
        self.config.write_text(
            f'state_dir = "{directory / "state"}"\nlog_level = "WARNING"\n'
            f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\nnode_id = "{self.node_id}"\n'
            "reconnect_min_s = 0.1\nreconnect_max_s = 0.5\n"
            "[queue]\nmax_depth = 1000\nrate_limit_per_s = 100000\nrate_limit_burst = 100000\n"
            "[homeassistant]\nenabled = false\n"
        )
        self.log = directory / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "daemon", "serve", "--config", str(self.config)],
                cwd=REPO, stdout=log, stderr=log,
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)

    def rss_mb(self) -> float | None:
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text() if self.proc else ""
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return None


class Client:
    """Sends requests and records every event, with a persistent session so a broker restart loses nothing."""

    def __init__(self, port: int, base: str) -> None:
        self.base = base
        self.cond = threading.Condition()
        self.seen: set[str] = set()  # raw event payloads: identical QoS 1 redeliveries count once
        self.events: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.sent_at: dict[str, float] = {}
        self.done_at: dict[str, float] = {}
        self.terminal: set[str] = set()
        self.online_at: list[float] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"soak-{uuid.uuid4().hex[:6]}",
                                  clean_session=False)
        self.client.max_queued_messages_set(0)
        self.client.max_inflight_messages_set(100)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: c.subscribe([(f"{base}/events", 1), (f"{base}/availability", 1)])
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, _client: Any, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        if msg.topic.endswith("/availability"):
            if msg.payload == b"online":
                with self.cond:
                    self.online_at.append(now)
            return
        raw = msg.payload.decode()
        with self.cond:
            if raw in self.seen:
                return
            self.seen.add(raw)
            event = json.loads(raw)
            request_id = event.get("id")
            if request_id is None:
                return
            event["_at"] = now
            self.events[request_id].append(event)
            if event["event"] in TERMINAL and not event.get("retrying"):
                self.terminal.add(request_id)
                if event["event"] == "done":
                    self.done_at[request_id] = now
            self.cond.notify_all()

    def say(self, request_id: str, text: str) -> None:
        with self.cond:
            self.sent_at[request_id] = time.monotonic()
        payload = json.dumps({"id": request_id, "text": text, "lang": "en", "ttl_s": 3600})
        self.client.publish(f"{self.base}/say", payload, qos=1)

    def outstanding(self) -> int:
        with self.cond:
            return len(self.sent_at) - len(self.terminal & self.sent_at.keys())

    def first_done_after(self, moment: float, timeout: float = 60) -> float | None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                after = [t for t in self.done_at.values() if t > moment]
                if after:
                    return min(after) - moment
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def online_after(self, moment: float, timeout: float = 60) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.cond:
                after = [t for t in self.online_at if t > moment]
            if after:
                return min(after) - moment
            time.sleep(0.01)
        return None


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def run(requests: int, window: int, faults: int, drain_s: float) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="gsv-soak-"))
    broker = Mosquitto(directory)
    broker.start()
    daemon = Daemon(directory, broker.port)
    client = Client(broker.port, f"gsv-edge/{daemon.node_id}")
    began_start = time.monotonic()
    daemon.start()
    assert client.online_after(began_start - 1, 30) is not None, "daemon did not come online"
    rss: list[tuple[int, float]] = []
    fault_at = {int(requests * (k + 1) / (faults + 1)) for k in range(faults)}
    recoveries: list[dict[str, Any]] = []
    kinds = ["kill -9 daemon", "restart mosquitto"]
    began = time.monotonic()
    last_sample = 0.0
    for n in range(requests):
        while client.outstanding() >= window:
            with client.cond:
                client.cond.wait(0.05)
        if n in fault_at:
            kind = kinds[len(recoveries) % 2]
            moment = time.monotonic()
            if kind.startswith("kill"):
                daemon.kill()
                daemon.start()
                online = client.online_after(moment)
            else:
                broker.stop()
                time.sleep(0.5)
                moment = time.monotonic()
                broker.start()
                online = None
            recoveries.append({"fault": kind, "at_request": n, "online_s": online, "moment": moment})
        client.say(f"soak-{n}", TEXTS[n % len(TEXTS)].format(n=n))
        now = time.monotonic()
        if now - last_sample >= 1.0 and (mb := daemon.rss_mb()) is not None:
            rss.append((n, mb))
            last_sample = now
    deadline = time.monotonic() + drain_s
    while client.outstanding() and time.monotonic() < deadline:
        time.sleep(0.1)
    elapsed = time.monotonic() - began
    for recovery in recoveries:
        first_done = client.first_done_after(recovery.pop("moment"), timeout=0)
        recovery["first_done_s"] = None if first_done is None else round(first_done, 2)
        recovery["online_s"] = None if recovery["online_s"] is None else round(recovery["online_s"], 2)
    if (mb := daemon.rss_mb()) is not None:
        rss.append((requests, mb))
    daemon.stop()
    client.client.loop_stop()
    broker.stop()

    accepted = {i for i, evs in client.events.items() if any(e["event"] == "queued" for e in evs)}
    outcome = defaultdict(int)
    duplicated = 0
    details = {}
    for request_id, evs in client.events.items():
        terminal = [e for e in evs if e["event"] in TERMINAL and not e.get("retrying")]
        if terminal:
            outcome[terminal[0]["event"]] += 1
        done_seen = False
        twice = len(terminal) > 1
        for event in evs:
            if event["event"] == "done":
                done_seen = True
            elif event["event"] == "started" and done_seen:
                twice = True
        duplicated += twice
        if twice:
            details[request_id] = [{k: v for k, v in e.items() if k != "_at"} for e in evs]
    lost = len(accepted - client.terminal)
    waits = [e["wait_ms"] for evs in client.events.values() for e in evs if e["event"] == "started"]
    e2e = [(client.done_at[i] - client.sent_at[i]) * 1000 for i in client.done_at if i in client.sent_at]
    steady = [mb for n, mb in rss if n >= requests * 0.1]
    return {
        "requests_sent": requests,
        "accepted": len(accepted),
        "completed": outcome["done"],
        "failed": outcome["failed"],
        "expired": outcome["expired"],
        "rejected": outcome["rejected"],
        "lost": lost,
        "duplicated": duplicated,
        "seconds": round(elapsed, 1),
        "throughput_per_s": round(outcome["done"] / elapsed, 1),
        "queue_wait_ms": {p: round(percentile(waits, f), 1) for p, f in (("p50", .5), ("p95", .95), ("p99", .99))},
        "end_to_end_ms": {p: round(percentile(e2e, f), 1) for p, f in (("p50", .5), ("p95", .95), ("p99", .99))},
        "rss_mb": {
            "after_10pct": round(steady[0], 1) if steady else None,
            "end": round(rss[-1][1], 1) if rss else None,
            "max": round(max(mb for _, mb in rss), 1) if rss else None,
            "growth_after_warmup": round(steady[-1] - steady[0], 1) if len(steady) > 1 else None,
            "median_first_vs_last_quarter": (
                round(statistics.median(steady[: max(1, len(steady) // 4)]), 1) if steady else None,
                round(statistics.median(steady[-max(1, len(steady) // 4):]), 1) if steady else None,
            ),
        },
        "recoveries": recoveries,
        "duplicated_details": details,
        "window": window,
        "workdir": str(directory),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--window", type=int, default=8, help="requests outstanding at most (closed loop)")
    parser.add_argument("--faults", type=int, default=0, help="faults to inject, alternating kill -9 / broker")
    parser.add_argument("--drain-s", type=float, default=120.0, help="wait this long for the last requests")
    args = parser.parse_args()
    result = run(args.requests, args.window, args.faults, args.drain_s)
    print(json.dumps(result, indent=2))
    return 0 if result["lost"] == 0 and result["duplicated"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
