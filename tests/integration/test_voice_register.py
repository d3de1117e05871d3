"""Registering a voice over MQTT (``<prefix>/<node_id>/voices/register``) and the retained voice list
following voices added or removed while the daemon runs."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from daemon.model.bundle import Bundle
from daemon.model.engine import Engine
from daemon.model.hardware import HardwareProfile
from tests.conftest import Daemon, Recorder
from tests.unit.model.test_engine import make_wav


def register(daemon: Daemon, **fields: object) -> None:
    daemon.recorder.publish(daemon.topics.voice_register, json.dumps(fields))


def voice_names(daemon: Daemon, recorder: Recorder, predicate=lambda names: True) -> list[str]:
    def wanted(msg) -> bool:
        return predicate([v["name"] for v in msg.json()["voices"]])

    return [v["name"] for v in recorder.wait_for(daemon.topics.voices, wanted).json()["voices"]]


def test_register_a_voice_over_mqtt_then_speak_with_it(
    start_daemon, recorder: Recorder, demo_bundle: Path  # noqa: F811
) -> None:
    daemon = start_daemon(engine={"bundle": str(demo_bundle)})
    assert daemon.service.engine_state() == "ready"
    wav = base64.b64encode(make_wav(seconds=4.0)).decode()
    register(daemon, id="reg-1", name="carol", text="Hello there, this is my voice.", lang="en", wav_base64=wav,
             description="the front desk")
    event = daemon.wait_event("reg-1", "voice_registered", timeout=60)
    assert event["voice"] == "carol" and event["seconds"] == 4.0
    assert "carol" in voice_names(daemon, recorder, lambda names: "carol" in names)

    daemon.say({"id": "as-carol", "text": "Testing one two.", "voice": "carol", "lang": "en"})
    done = daemon.wait_event("as-carol", "done", timeout=60)
    assert done["engine"].startswith("GPT-SoVITS") and done["fallback"] is False

    # The same checks as the CLI: a clip that is too short, a bad name, broken base64, a missing field.
    short = base64.b64encode(make_wav(seconds=1.0)).decode()
    register(daemon, id="reg-short", name="dave", text="Hi.", lang="en", wav_base64=short)
    assert "3-10 s" in daemon.wait_event("reg-short", "rejected", timeout=30)["reason"]
    register(daemon, id="reg-name", name="../evil", text="Hi there.", lang="en", wav_base64=wav)
    assert "invalid" in daemon.wait_event("reg-name", "rejected", timeout=30)["reason"]
    register(daemon, id="reg-b64", name="erin", text="Hi there.", lang="en", wav_base64="not base64!")
    assert "base64" in daemon.wait_event("reg-b64", "rejected")["reason"]
    register(daemon, id="reg-lang", name="erin", text="Hi there.", wav_base64=wav)
    assert "lang" in daemon.wait_event("reg-lang", "rejected")["reason"]
    daemon.recorder.publish(daemon.topics.voice_register, b"\xff not json")
    assert "JSON" in daemon.wait_event(None, "rejected")["reason"]


def test_voices_changed_outside_the_daemon_are_republished(
    start_daemon, recorder: Recorder, demo_bundle: Path, tmp_path: Path  # noqa: F811
) -> None:
    """``gsv-edge voice add/remove`` work on the state directory; the retained list follows them."""
    daemon = start_daemon(engine={"bundle": str(demo_bundle)})
    assert voice_names(daemon, recorder) == ["en"]  # no cloned voice yet: only the eSpeak NG fallback voice
    cli = Engine(Bundle.load(demo_bundle), HardwareProfile.load("x86-cpu"), daemon.service.settings.state_dir)
    cli.register_voice("frank", make_wav(), "Hello there, this is me.", "en")
    daemon.say({"id": "any", "text": "Anything.", "voice": "frank"})  # accepted: intake reads voices per message
    daemon.wait_event("any", "done", timeout=60)
    assert "frank" in voice_names(daemon, recorder, lambda names: "frank" in names)  # status publish re-lists
    cli.voices_store.remove("frank")
    daemon.service.mqtt.publish_status(daemon.service.status())  # what any event does
    voice_names(daemon, recorder, lambda names: "frank" not in names)


def test_registration_needs_the_neural_engine(start_daemon) -> None:
    daemon = start_daemon()  # eSpeak NG only
    wav = base64.b64encode(make_wav()).decode()
    register(daemon, id="reg-x", name="gina", text="Hello there.", lang="en", wav_base64=wav)
    assert "GPT-SoVITS" in daemon.wait_event("reg-x", "rejected")["reason"]
