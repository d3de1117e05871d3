"""Home Assistant MQTT discovery: one device, a notify entity that speaks, diagnostic sensors."""

from __future__ import annotations

from tests.conftest import Recorder
from tests.doubles import ToneEngine


def _configs(recorder: Recorder, node_id: str) -> dict[str, dict]:
    return {m.topic: m.json() for m in recorder.on(f"homeassistant/+/{node_id}/+/config")}


def test_discovery_published_and_republished_when_home_assistant_returns(start_daemon, recorder: Recorder) -> None:
    recorder.subscribe("homeassistant/#")
    daemon = start_daemon(synth=ToneEngine())
    node = daemon.topics.node_id
    recorder.wait_for(f"homeassistant/sensor/{node}/engine_state/config")
    configs = _configs(recorder, node)
    assert set(configs) == {
        f"homeassistant/notify/{node}/announce/config",
        f"homeassistant/sensor/{node}/queue_depth/config",
        f"homeassistant/sensor/{node}/last_latency/config",
        f"homeassistant/sensor/{node}/engine_state/config",
    }
    devices = {str(c["device"]["identifiers"]) for c in configs.values()}
    assert len(devices) == 1, "all entities belong to one device"
    assert {c["availability_topic"] for c in configs.values()} == {daemon.topics.availability}
    assert len({c["unique_id"] for c in configs.values()}) == 4
    notify = configs[f"homeassistant/notify/{node}/announce/config"]
    assert notify["command_topic"] == daemon.topics.say
    for key in ("queue_depth", "last_latency", "engine_state"):
        sensor = configs[f"homeassistant/sensor/{node}/{key}/config"]
        assert sensor["entity_category"] == "diagnostic" and sensor["state_topic"] == daemon.topics.status

    recorder.wait_for(daemon.topics.availability, lambda m: m.payload == b"online")
    recorder.clear()
    recorder.subscribe(daemon.topics.availability)
    assert recorder.wait_for(daemon.topics.availability).retain  # retained, so HA sees it on subscribe
    recorder.clear()
    recorder.publish("homeassistant/status", "online")
    recorder.wait_for(f"homeassistant/sensor/{node}/engine_state/config", lambda m: not m.retain)
    assert set(_configs(recorder, node)) == set(configs)
    assert recorder.wait_for(daemon.topics.availability, lambda m: not m.retain).payload == b"online"


def test_notify_command_topic_speaks_its_text(start_daemon, recorder: Recorder) -> None:
    recorder.subscribe("homeassistant/#")
    daemon = start_daemon(synth=ToneEngine())
    notify = recorder.wait_for(f"homeassistant/notify/{daemon.topics.node_id}/announce/config").json()
    recorder.publish(notify["command_topic"], "The washing machine has finished.")  # what HA sends
    done = recorder.wait_for(daemon.topics.events, lambda m: m.json()["event"] == "done").json()
    recorder.wait_for(daemon.topics.audio(done["id"]))
    status = recorder.wait_for(daemon.topics.status, lambda m: m.json()["last_latency_ms"] is not None).json()
    assert status["queue_depth"] == 0 and status["engine_state"] == "ready" and status["model"] == "tone"
