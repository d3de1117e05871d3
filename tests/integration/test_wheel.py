"""The wheel a box installs: it holds every file the code reads at run time, and installed into a fresh
virtualenv outside the checkout it builds the demo bundle, registers a voice, speaks Chinese, English, Japanese,
Korean and Cantonese with the neural engine, finds the hardware profiles by name and serves MQTT and HTTP with the
neural engine ready.

The virtualenv is made once for the module (``pip install WHEEL[convert,ja,ko,yue]``: the demo needs torch, and
the language extras are checked to install and speak from the wheel); every
command runs from a directory of its own, without PYTHONPATH, so nothing of the checkout can be imported.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import uuid
import wave
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import soundfile

from tests.conftest import Broker, Recorder, to_toml
from tests.integration.test_http import free_port
from tests.paths import REPO
from tests.unit.model.test_engine import make_wav

PACKAGES = ("daemon", "quantize", "hardware")  # [tool.setuptools.packages.find] in pyproject.toml
DEMO = Path("models") / "demo"  # where make-demo writes by default, relative to the working directory


def _run(cmd: list[str | Path], cwd: Path | None = None, env: dict[str, str] | None = None,
         stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, input=stdin, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def _source_files() -> set[str]:
    """Files of the installed packages in the checkout, as wheel member names (``*.md`` are notes)."""
    return {
        p.relative_to(REPO).as_posix()
        for package in PACKAGES
        for p in (REPO / package).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".md")
    }


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built as a user builds it (pip, with build isolation) from a copy of the sources, so a stale ``build/``
    left in the checkout cannot leak files into it."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for package in PACKAGES:
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, src])
    return next(out.glob("gsv_edge-*.whl"))


def test_the_wheel_holds_every_file_the_code_reads(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        members = set(archive.namelist())
    wanted = _source_files()
    assert {"daemon/frontend/data/symbols_v2.txt", "quantize/data/official_weights.json",
            "hardware/x86-cpu.toml"} <= wanted
    assert not wanted - members, f"missing from {wheel.name}: {sorted(wanted - members)}"


@dataclass
class Box:
    """The virtualenv the wheel went into and a working directory outside the checkout."""

    venv: Path
    work: Path
    env: dict[str, str]

    def gsv_edge(self, *args: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return _run([self.venv / "bin" / "gsv-edge", *args], cwd=self.work, env=self.env, stdin=stdin)


@pytest.fixture(scope="module")
def box(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    """Removed afterwards: with torch the virtualenv is over a gigabyte, and pytest keeps its last runs' files."""
    venv = tmp_path_factory.mktemp("venv")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV") and not k.startswith("GSV_EDGE_")}
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    # without PYTHONPATH: pip would take a checkout's gsv_edge.egg-info on it for gsv-edge already installed
    _run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q", "--no-compile",
          f"{wheel}[convert,ja,ko,yue]"], env=env)
    work = tmp_path_factory.mktemp("work")
    env["GSV_EDGE_STATE_DIR"] = str(work / "state")
    (work / "gsv-edge.toml").write_text("")  # not /etc/gsv-edge/config.toml, whatever this host has there
    yield Box(venv, work, env)
    shutil.rmtree(venv, ignore_errors=True)


@pytest.fixture(scope="module")
def voiced(box: Box) -> Box:
    """``make-demo`` with its default output, then a voice registered for that bundle."""
    box.gsv_edge("make-demo")
    (box.work / "ref.wav").write_bytes(make_wav())
    box.gsv_edge("voice", "add", "alice", "--ref", "ref.wav", "--text", "今天的会议改到下午三点。", "--lang", "zh",
                 *COMMON)
    return box


COMMON = ("--bundle", str(DEMO), "--profile", "x86-cpu", "--config", "gsv-edge.toml")


@pytest.mark.wheel
def test_the_commands_run_the_installed_code(box: Box) -> None:
    where = _run([box.venv / "bin" / "python", "-c", "import daemon, hardware, quantize; "
                  "print(daemon.__file__, hardware.__file__, quantize.__file__)"], cwd=box.work, env=box.env)
    for module in where.stdout.split():
        assert Path(module).is_relative_to(box.venv), where.stdout


@pytest.mark.wheel
def test_make_demo_writes_into_the_working_directory(voiced: Box) -> None:
    help_text = voiced.gsv_edge("make-demo", "--help").stdout
    assert "default ./models/demo" in help_text and str(voiced.venv) not in help_text
    assert json.loads((voiced.work / DEMO / "manifest.json").read_text())["untrained"] is True
    assert voiced.gsv_edge("voice", "list", *COMMON).stdout.startswith("alice\tzh\t")


@pytest.mark.wheel
@pytest.mark.parametrize(("lang", "text"), [
    ("zh", "各位旅客请注意，列车即将进站。"),
    ("en", "Please mind the gap between the train and the platform."),
    ("ja", "まもなく一番線に電車が参ります。"),
    ("ko", "잠시 후 3번 승강장에 열차가 들어옵니다."),
    ("yue", "而家時間係上午10:30，電量剩返85%。"),
])
def test_say_speaks_with_the_neural_engine(voiced: Box, lang: str, text: str) -> None:
    rate = json.loads((voiced.work / DEMO / "manifest.json").read_text())["sample_rate"]
    said = voiced.gsv_edge("say", "--voice", "alice", "--lang", lang, "--seed", "0", "-o", f"{lang}.wav", *COMMON,
                           stdin=text)
    assert "[demo bundle: untrained weights, noise]" in said.stdout  # the GPT-SoVITS engine spoke, not eSpeak NG
    with wave.open(io.BytesIO((voiced.work / f"{lang}.wav").read_bytes())) as wav:
        assert wav.getframerate() == rate and wav.getnchannels() == 1 and wav.getsampwidth() == 2
        audio = np.frombuffer(wav.readframes(wav.getnframes()), "<i2")
    assert audio.size > rate // 2 and np.abs(audio).max() > 0.001 * 32768, "silence out"


@pytest.mark.wheel
def test_hardware_profiles_load_by_name_from_the_installed_package(box: Box) -> None:
    code = ("from daemon.model.hardware import HardwareProfile, known_profiles; "
            "p = HardwareProfile.load('jetson-orin-nano-8gb'); "
            "print(' '.join(known_profiles())); print(p.providers[0], p.source)")
    names, loaded = _run([box.venv / "bin" / "python", "-c", code], cwd=box.work, env=box.env).stdout.splitlines()
    assert set(names.split()) == {p.stem for p in (REPO / "hardware").glob("*.toml")}
    provider, source = loaded.split()
    assert provider == "TensorrtExecutionProvider" and Path(source).is_relative_to(box.venv)


@pytest.mark.wheel
def test_the_installed_daemon_serves_with_the_neural_engine(
    voiced: Box, mosquitto_broker: Broker, recorder: Recorder
) -> None:
    node = f"w{uuid.uuid4().hex[:8]}"
    config = voiced.work / f"{node}.toml"
    port = free_port()
    config.write_text(to_toml({
        "mqtt": {"host": mosquitto_broker.host, "port": mosquitto_broker.port, "node_id": node},
        "engine": {"bundle": str(voiced.work / DEMO)},
        "http": {"port": port},
    }))
    base = f"gsv-edge/{node}"
    recorder.subscribe(f"{base}/#")
    log = voiced.work / f"{node}.log"
    with log.open("wb") as out:
        daemon = subprocess.Popen([voiced.venv / "bin" / "gsv-edge", "serve", "--config", config], cwd=voiced.work,
                                  env=voiced.env, stdout=out, stderr=out)
    try:
        status = recorder.wait_for(f"{base}/status", timeout=120).json()
        assert status["engine_state"] == "ready" and "engine_error" not in status, log.read_text()
        say = {"id": "mixed", "text": "列车即将进站。Please mind the gap.", "voice": "alice"}
        recorder.publish(f"{base}/say", json.dumps(say))
        done = recorder.wait_for(f"{base}/events", lambda m: m.json()["event"] in ("done", "failed"), 120).json()
        assert done["event"] == "done" and done["fallback"] is False and done["engine"] == status["model"], done
        # the HTTP API of the installed package, asked by the official OpenAI client
        speech = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x").audio.speech.create(
            model="tts-1", voice="alice", input="Please mind the gap.", response_format="flac")
        samples, rate = soundfile.read(io.BytesIO(speech.content))
        assert rate == status["sample_rate"] and len(samples) > rate * 0.2, log.read_text()
        console = httpx.get(f"http://127.0.0.1:{port}/", follow_redirects=True)  # the web console's files
        assert console.status_code == 200 and "console.js" in console.text
        assert httpx.get(f"http://127.0.0.1:{port}/console/lang/en.json").json()["login.submit"]
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
