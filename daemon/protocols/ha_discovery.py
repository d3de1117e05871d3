"""Home Assistant MQTT discovery: one device with a ``notify`` entity (speaks its message) and
diagnostic sensors fed from the retained status topic.

Per-entity config topics sharing one ``device`` block work on every HA version with MQTT notify;
all entities follow the daemon's availability topic (retained ``online``, last will ``offline``).
"""

from __future__ import annotations

from typing import Any

from daemon.protocols.topics import Topics


def discovery_messages(topics: Topics, discovery_prefix: str, version: str) -> list[tuple[str, dict[str, Any]]]:
    node = topics.node_id
    common: dict[str, Any] = {
        "availability_topic": topics.availability,
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": {
            "identifiers": [f"gsv-edge_{node}"],
            "name": f"gsv-edge {node}",
            "manufacturer": "gsv-edge",
            "model": "GPT-SoVITS speech appliance",
            "sw_version": version,
        },
        "origin": {"name": "gsv-edge", "sw_version": version},
    }

    def entity(component: str, object_id: str, **config: Any) -> tuple[str, dict[str, Any]]:
        body = {**common, "unique_id": f"gsv-edge_{node}_{object_id}", **config}
        return f"{discovery_prefix}/{component}/{node}/{object_id}/config", body

    def diagnostic(object_id: str, name: str, field: str, **config: Any) -> tuple[str, dict[str, Any]]:
        return entity(
            "sensor",
            object_id,
            name=name,
            state_topic=topics.status,
            value_template=f"{{{{ value_json.{field} }}}}",
            entity_category="diagnostic",
            **config,
        )

    return [
        entity("notify", "announce", name="Announce", command_topic=topics.say, qos=1, icon="mdi:bullhorn"),
        diagnostic("queue_depth", "Queue depth", "queue_depth", state_class="measurement", icon="mdi:tray-full"),
        diagnostic(
            "last_latency",
            "Last latency",
            "last_latency_ms",
            unit_of_measurement="ms",
            device_class="duration",
            state_class="measurement",
        ),
        diagnostic("engine_state", "Engine state", "engine_state", icon="mdi:account-voice"),
    ]
