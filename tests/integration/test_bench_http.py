"""``python -m bench.http_api --quick --json`` runs end to end: its report has every figure, and its accounting
holds (no request lost, duplicated or answered otherwise than documented). Timings are never asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MOSQUITTO

REPO = Path(__file__).resolve().parents[2]
PATHS = ("direct", "api_v2", "openai")


@pytest.fixture(scope="module")
def report() -> dict:
    if not os.path.exists(MOSQUITTO):
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "bench.http_api", "--quick", "--json"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_overhead_has_both_paths_measured_on_the_same_texts(report: dict) -> None:
    over = report["overhead"]
    assert over["texts"] == 6 and over["repeats"] == 2
    assert set(over["paths"]) == set(PATHS) and set(over["overhead_ms"]) == {"api_v2", "openai"}
    for path in PATHS:
        figures = over["paths"][path]
        assert {"p50", "p90"} <= set(figures["first_ms"]) and {"p50", "p90"} <= set(figures["total_ms"])
        assert figures["audio_s"] > 0
    # the seed reaches the decoder over api_v2: the same tokens, the same PCM as the direct call
    assert over["api_v2_same_pcm_as_direct"] == over["texts"]
    assert report["command"] == "python -m bench.http_api --quick --json"


def test_load_every_client_answered_200_and_audited_once(report: dict) -> None:
    load = report["load"]
    assert load["clients"] == 50 and load["requests"] == 50
    assert load["statuses"] == {"200": 50} and load["errors_by_status"] == {}
    assert load["audit_outcomes"] == {"done": 50}
    assert load["lost"] == load["duplicated"] == load["mismatched"] == load["undocumented"] == 0
    assert set(load["latency_ms"]) == {"p50", "p90", "p99", "max"}


def test_a_full_queue_refuses_with_retry_after_and_audits_every_refusal(report: dict) -> None:
    refusal = report["refusal"]
    assert refusal["all_answered_while_busy"] is True
    statuses = refusal["statuses"]
    assert set(statuses) == {"200", "503"} and sum(statuses.values()) == refusal["clients"] == 50
    # the engine was busy until every request was queued or refused: only what the queue holds (and the requests
    # the synthesis threads took, one each: the speaker's and, for an engine that batches, the publish lanes') is
    # spoken
    assert refusal["max_depth"] <= statuses["200"] <= refusal["max_depth"] + refusal["synthesis_threads"]
    assert refusal["retry_after"] == ["5"]
    assert refusal["audit_outcomes"] == {"done": statuses["200"], "rejected": statuses["503"]}
    assert refusal["lost"] == refusal["duplicated"] == refusal["mismatched"] == refusal["undocumented"] == 0
    assert report["sound"] is True
