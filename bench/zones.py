"""Start skew between zones: how far apart two sound cards begin one announcement for both.

Two zones on two ALSA devices play the same request (``"zones": "all"``) through the real pipeline and
sounddevice; the terminal event's ``start_skew_ms`` is the gap between the moments each zone's stream, its
device open, wrote its first sample (the zones wait for each other there). Without ``--devices`` the two
are ALSA ``file`` devices on ``null`` (as in the tests), so the figure is the daemon's own share of the skew;
real cards add their own output latency differences on top.

    python -m bench.zones --runs 100
    python -m bench.zones --runs 100 --no-gate    # each zone starts as soon as its own device is open
    python -m bench.zones --devices "USB Audio,Headphones" --runs 20
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ASOUND = '<{system}>\n' + ''.join(
    f'pcm.{name} {{\n  type file\n  slave.pcm "null"\n  file "{{root}}/{name}.raw"\n  format "raw"\n}}\n'
    for name in ("gsvzone1", "gsvzone2"))


class Endings:
    """The pipeline's event sink: keeps each request's terminal event."""

    def __init__(self) -> None:
        self.done: dict[str, dict[str, Any]] = {}
        self._cond = threading.Condition()

    def emit(self, request: Any, kind: Any, **fields: Any) -> None:
        from daemon.core.events import is_terminal

        if is_terminal(kind, fields):
            with self._cond:
                self.done[request.id] = {"event": kind.value, **fields}
                self._cond.notify_all()

    def wait(self, request_id: str, timeout: float = 30) -> dict[str, Any]:
        with self._cond:
            if not self._cond.wait_for(lambda: request_id in self.done, timeout):
                raise SystemExit(f"no ending for {request_id} within {timeout}s")
            return self.done[request_id]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--devices", help="two output device names, comma-separated (default: ALSA file devices)")
    parser.add_argument("--no-gate", action="store_true",
                        help="zones do not wait for each other (what the start gate saves)")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    if args.no_gate:
        from daemon.core import pipeline

        pipeline.START_GATE_S = 0.0
    with tempfile.TemporaryDirectory() as root:
        if args.devices:
            devices = [name.strip() for name in args.devices.split(",")]
        else:
            conf = Path(root) / "asound.conf"
            conf.write_text(ASOUND.replace("{system}", "/usr/share/alsa/alsa.conf").replace("{root}", root))
            os.environ["ALSA_CONFIG_PATH"] = str(conf)  # before PortAudio loads
            devices = ["gsvzone1", "gsvzone2"]
        figures = measure(devices, args.runs)
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


def measure(devices: list[str], runs: int) -> dict[str, Any]:
    from daemon.audio.output import AudioOutput
    from daemon.config import AudioSettings
    from daemon.core.pipeline import Pipeline, ZoneOutput
    from daemon.core.request_queue import MemoryQueue, Request
    from tests.doubles import ToneEngine

    settings = AudioSettings(lead_in_ms=50, tail_ms=20)
    zones = [ZoneOutput(f"z{i}", audio=AudioOutput(settings.model_copy(update={"output_device": device})),
                        lead_in_ms=50) for i, device in enumerate(devices)]
    names = tuple(zone.name for zone in zones)
    endings = Endings()
    engine = ToneEngine(seconds=0.1)
    pipeline = Pipeline(MemoryQueue(max_depth=8, dedup_window_s=0), engine, engine, endings, None,  # type: ignore[arg-type]
                        None, settings, zones=zones)
    pipeline.start()
    skews = []
    try:
        for run in range(runs):
            rid = f"skew-{run}"
            pipeline.submit(Request(id=rid, text="Attention.", expires_at=time.time() + 60, zones=names,
                                    output="play"))
            ending = endings.wait(rid)
            if ending["event"] != "done" or any(z["state"] != "done" for z in ending["zones"].values()):
                raise SystemExit(f"{rid} did not play everywhere: {ending}")
            skews.append(ending["start_skew_ms"])
    finally:
        pipeline.stop()
    skews.sort()
    from daemon.core import pipeline as module

    return {"devices": devices, "runs": runs, "gate": module.START_GATE_S > 0,
            "start_skew_ms": {"p50": round(statistics.median(skews), 3),
                              "p99": round(skews[min(len(skews) - 1, round(0.99 * (len(skews) - 1)))], 3),
                              "max": round(skews[-1], 3)}}


if __name__ == "__main__":
    main()
