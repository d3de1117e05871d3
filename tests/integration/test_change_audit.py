"""Who changed what: each change to the box is an audit row naming who made it. Voices over HTTP (the token),
over MQTT (only the topic: MQTT 3.1.1 names no publisher) and with ``gsv-edge voice`` (the OS user), tokens with
``gsv-edge token``, reloads over HTTP, with ``gsv-edge reload`` and as a bare SIGHUP (nobody), all against the
real daemon, broker and command line; and ``GET /v1/voices`` says when and by whom a voice was registered."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import pwd
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from daemon.commands import exit_codes
from daemon.core.audit import CHANGE_OUTCOMES, read_records
from daemon.model.bundle import Bundle
from daemon.model.engine import Engine
from daemon.model.hardware import HardwareProfile
from tests.conftest import Recorder
from tests.integration.test_durability import REPO, DaemonProcess, daemon_process  # noqa: F401
from tests.integration.test_http_native import MANY, error, tokens, voice_form
from tests.integration.test_reload import reload
from tests.unit.model.test_engine import make_wav

ME = pwd.getpwuid(os.geteuid()).pw_name
NOT_ME = "not-the-os-user"  # what $USER says in the commands' environment: the trail must not believe it


def changes(state_dir: Path) -> list[dict[str, Any]]:
    return [row for row in read_records(state_dir) if row["outcome"] in CHANGE_OUTCOMES]


def who(row: dict[str, Any]) -> tuple[Any, ...]:
    return row["outcome"], row["protocol"], row["token_name"], row["os_user"], row["subject"]


def gsv(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GSV_EDGE_")}
    env.update(PYTHONPATH=str(REPO), USER=NOT_ME, LOGNAME=NOT_ME)
    return subprocess.run([sys.executable, "-m", "daemon", *args, "--config", str(config)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


# -- HTTP ------------------------------------------------------------------------------------------


def test_voices_changed_over_http_are_audited_with_the_token(http_daemon, demo_bundle: Path, tmp_path: Path) -> None:
    made = tokens(tmp_path, curator=["voices"], boss=["admin"])
    engine = Engine(Bundle.load(demo_bundle), HardwareProfile.load("x86-cpu"), tmp_path / "voices")
    engine.register_voice("elder", make_wav(seed=1), "This is a reference clip.", "en")
    record = tmp_path / "voices" / "voices" / "elder" / "voice.json"
    old = {k: v for k, v in json.loads(record.read_text()).items() if k not in ("created_by", "created_via")}
    record.write_text(json.dumps(old))  # as a version that kept no who wrote it
    daemon, url = http_daemon(engine, **MANY)

    added = httpx.post(f"{url}/v1/voices", **voice_form(audio=make_wav(seed=3)), headers=made["curator"], timeout=120)
    assert added.status_code == 201, added.text
    assert (added.json()["created_by"], added.json()["created_via"]) == ("curator", "http")
    listed = {v["name"]: v for v in httpx.get(f"{url}/v1/voices", headers=made["boss"]).json()["voices"]}
    assert (listed["carol"]["created_by"], listed["carol"]["created_via"]) == ("curator", "http")
    assert listed["carol"]["created_at"] and listed["carol"]["created_at"] >= listed["elder"]["created_at"]
    assert (listed["elder"]["created_by"], listed["elder"]["created_via"]) == (None, None)  # still listed
    assert listed["en"]["created_at"] is None  # eSpeak NG's own voice was never registered
    assert httpx.delete(f"{url}/v1/voices/carol", headers=made["curator"]).status_code == 204
    assert error(httpx.delete(f"{url}/v1/voices/carol", headers=made["curator"]), 404)  # a refusal, not a change

    assert [who(row) for row in changes(tmp_path / "state")] == [
        ("voice_added", "http", "curator", None, "carol"), ("voice_removed", "http", "curator", None, "carol")]
    page = httpx.get(f"{url}/v1/audit", params={"kind": "change"}, headers=made["boss"]).json()
    assert [row["outcome"] for row in page["rows"]] == ["voice_removed", "voice_added"] and page["total"] == 2
    assert page["rows"][1]["voice"] == "carol" and "en, " in page["rows"][1]["reason"]
    requests = httpx.get(f"{url}/v1/audit", params={"kind": "request"}, headers=made["boss"]).json()["rows"]
    assert [row["outcome"] for row in requests] == ["rejected"]  # the refused second removal
    assert httpx.get(f"{url}/v1/audit", params={"outcome": "voice_added", "token": "curator"},
                     headers=made["boss"]).json()["total"] == 1
    assert error(httpx.get(f"{url}/v1/audit", params={"kind": "all"}, headers=made["boss"]), 400)["param"] == "kind"
    table = list(csv.DictReader(io.StringIO(httpx.get(f"{url}/v1/audit", params={"format": "csv", "kind": "change"},
                                                      headers=made["boss"]).text)))
    assert [(row["outcome"], row["token_name"], row["subject"], row["os_user"]) for row in table] == [
        ("voice_removed", "curator", "carol", ""), ("voice_added", "curator", "carol", "")]
    assert daemon.service.audit.write_errors == 0


def test_reloads_over_http_are_audited_with_the_token_refused_or_not(http_daemon, tmp_path: Path) -> None:
    from daemon.app.reload import Reloader

    made = tokens(tmp_path, ops=["admin"])
    daemon, url = http_daemon(**MANY)
    refused = httpx.get(f"{url}/control", params={"command": "restart"}, headers=made["ops"])
    assert refused.status_code == 400 and "not started by gsv-edge serve" in refused.json()["Exception"]
    [config] = list(tmp_path.glob("t*.toml"))
    daemon.service.reload_hook = Reloader(daemon.service, config).reload
    assert httpx.get(f"{url}/control", params={"command": "restart"}, headers=made["ops"]).json() == {
        "message": "success"}
    assert httpx.post(f"{url}/v1/reload", headers=made["ops"], timeout=120).json()["reloaded"] is True
    first, second, third = changes(tmp_path / "state")
    assert who(first) == ("reload_refused", "http", "ops", None, None) and "gsv-edge serve" in first["reason"]
    assert who(second) == ("reloaded", "http", "ops", None, None) and second["reason"].startswith("reloaded:")
    assert second["client"].startswith("127.0.0.1:")
    assert who(third) == ("reloaded", "http", "ops", None, None)  # POST /v1/reload, the console's button


# -- MQTT ------------------------------------------------------------------------------------------


def test_a_voice_registered_over_mqtt_is_audited_with_its_topic(start_daemon, recorder: Recorder, demo_bundle: Path,
                                                                tmp_path: Path) -> None:
    daemon = start_daemon(engine={"bundle": str(demo_bundle)})
    wav = base64.b64encode(make_wav(seconds=4.0)).decode()
    daemon.recorder.publish(daemon.topics.voice_register, json.dumps(
        {"id": "reg-1", "name": "dora", "text": "Hello there, this is my voice.", "lang": "en", "wav_base64": wav}))
    daemon.wait_event("reg-1", "voice_registered", timeout=60)
    [row] = changes(tmp_path / "state")
    assert who(row) == ("voice_added", "native", None, None, "dora")
    assert row["topic"] == daemon.topics.voice_register and row["client"] is None
    [info] = [info for info in daemon.service.voices() if info.name == "dora"]
    assert (info.created_by, info.created_via) == (None, "native") and info.created_at


# -- the command line ------------------------------------------------------------------------------


def test_token_changes_name_the_os_user_not_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f"state_dir = {json.dumps(str(tmp_path / 'state'))}\n")
    added = gsv("token", "add", "kitchen", "--scope", "speak,voices", config=config)
    assert added.returncode == exit_codes.OK and not added.stderr, added.stderr
    assert gsv("token", "revoke", "kitchen", config=config).returncode == exit_codes.OK
    assert gsv("token", "revoke", "kitchen", config=config).returncode == exit_codes.INPUT  # no change, no row
    made, revoked = changes(tmp_path / "state")
    assert who(made) == ("token_added", "cli", None, ME, "kitchen") and made["reason"] == "scopes speak,voices"
    assert who(revoked) == ("token_revoked", "cli", None, ME, "kitchen")
    assert ME != NOT_ME
    listing = gsv("audit", config=config).stdout.splitlines()
    assert [line.split("\t")[1:5] for line in listing] == [["token_added", "cli", ME, "kitchen"],
                                                         ["token_revoked", "cli", ME, "kitchen"]]


def test_voice_changes_with_the_command_line_name_the_os_user(demo_bundle: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = tmp_path / "config.toml"
    config.write_text(f"state_dir = {json.dumps(str(state))}\n[engine]\nbundle = {json.dumps(str(demo_bundle))}\n")
    clip = tmp_path / "clip.wav"
    clip.write_bytes(make_wav(seed=5))
    added = gsv("voice", "add", "fern", "--ref", str(clip), "--text", "This is a reference clip.", "--lang", "en",
                config=config)
    assert added.returncode == exit_codes.OK, added.stderr
    record = json.loads((state / "voices" / "fern" / "voice.json").read_text())
    assert (record["created_by"], record["created_via"]) == (ME, "cli")
    assert gsv("voice", "remove", "fern", config=config).returncode == exit_codes.OK
    assert [who(row) for row in changes(state)] == [("voice_added", "cli", None, ME, "fern"),
                                                   ("voice_removed", "cli", None, ME, "fern")]


def test_gsv_edge_reload_names_its_user_and_a_bare_sighup_nobody(daemon_process: Any) -> None:  # noqa: F811
    daemon: DaemonProcess = daemon_process()
    daemon.start()
    original = daemon.config.read_text()
    daemon.config.write_text(original.replace("reconnect_max_s = 1.0", "reconnect_max_s = 2.0"))
    accepted = reload(daemon)
    assert accepted.returncode == exit_codes.OK, accepted
    assert daemon.proc is not None
    daemon.config.write_text(original + "\nthis is not toml = = =\n")
    os.kill(daemon.proc.pid, signal.SIGHUP)  # as systemd's ExecReload, or an operator's kill -HUP
    deadline = time.monotonic() + 60
    while len(rows := changes(daemon.state_dir)) < 2:
        assert time.monotonic() < deadline, rows
        time.sleep(0.1)
    cli, bare = rows
    assert who(cli) == ("reloaded", "cli", None, ME, None) and "mqtt.reconnect_max_s" in cli["reason"]
    assert who(bare) == ("reload_refused", "signal", None, None, None) and "refused" in bare["reason"]
