"""``python -m bench.schedule_start`` runs end to end on eSpeak NG: every run of both modes ends ``done`` once, the
rendered mode's runs all start from the cache and the synthesised mode's none. Timings are never asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MOSQUITTO

REPO = Path(__file__).resolve().parents[2]


def test_the_schedule_start_bench_accounts_for_every_run() -> None:
    if not os.path.exists(MOSQUITTO):
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "bench.schedule_start", "--runs", "3", "--lead-s", "4", "--json"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["sound"] is True and report["engine"] == "espeak"
    rendered, synthesised = report["modes"]
    assert (rendered["mode"], rendered["cached"], rendered["done"]) == ("rendered", 3, 3)
    assert (synthesised["mode"], synthesised["cached"], synthesised["done"]) == ("synthesised", 0, 3)
    for mode in (rendered, synthesised):
        assert mode["ran_twice"] == 0 and len(mode["per_run"]) == 3
        assert [run["id"].split("@")[0] for run in mode["per_run"]] == ["run000", "run001", "run002"]
        assert all({"queued_ms", "first_audio_ms", "done_ms"} <= set(run) for run in mode["per_run"])
        assert set(mode["start_error_ms"]) == {"p50", "p99", "max"}
