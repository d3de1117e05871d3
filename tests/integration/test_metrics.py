"""The Prometheus endpoint counts what the events report: a done and a failed request, latency and RTF
histograms, queue depth and the broker connection."""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest

from daemon.speech.synthesizer import SynthesisError
from tests.conftest import _free_port
from tests.doubles import ToneEngine, failing_engine

pytest.importorskip("prometheus_client")


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def test_metrics_count_a_done_and_a_failed_request(start_daemon: Any) -> None:
    port = _free_port()
    engine = ToneEngine(seconds=0.1)
    daemon = start_daemon(synth=engine, fallback=failing_engine("broken fallback"), metrics={"port": port})
    daemon.say({"id": "ok", "text": "Fine."})
    daemon.wait_event("ok", "done")
    engine.error = SynthesisError("model exploded")
    daemon.say({"id": "bad", "text": "Doomed."})
    daemon.wait_event("bad", "failed")
    daemon.say(b'{"text": 5}')
    daemon.wait_event(None, "rejected")

    values = scrape(port)
    assert values['gsv_edge_requests_total{outcome="done",protocol="native"}'] == 1
    assert values['gsv_edge_requests_total{outcome="failed",protocol="native"}'] == 1
    assert values['gsv_edge_requests_total{outcome="rejected",protocol="native"}'] == 1
    assert values["gsv_edge_engine_errors_total"] == 1
    assert values["gsv_edge_queue_wait_seconds_count"] == 2 and values["gsv_edge_first_audio_seconds_count"] == 1
    assert values["gsv_edge_real_time_factor_count"] == 1
    assert values["gsv_edge_queue_depth"] == 0 and values["gsv_edge_broker_connected"] == 1
    assert values["gsv_edge_state_db_write_errors"] == 0


def test_metrics_bind_localhost_by_default(start_daemon: Any) -> None:
    port = _free_port()
    daemon = start_daemon(synth=ToneEngine(), metrics={"port": port})
    assert daemon.service.settings.metrics.host == "127.0.0.1"
    assert scrape(port)["gsv_edge_broker_connected"] == 1
