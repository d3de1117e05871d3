"""A fleet of boxes on one MQTT 5 shared subscription: each request on ``<prefix>/say`` is taken by
exactly one box; ``<prefix>/<node_id>/say`` still addresses one box."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from daemon.config import ConfigError, load_settings
from tests.conftest import Daemon, Recorder, to_toml
from tests.doubles import ToneEngine

SHARED_SAY = "gsv-edge/say"


def start_fleet(start_daemon, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, size: int) -> list[Daemon]:
    boxes = []
    for n in range(size):  # each box has its own state directory (queue database, cache), as on real boxes
        monkeypatch.setenv("GSV_EDGE_STATE_DIR", str(tmp_path / f"box{n}"))
        boxes.append(start_daemon(synth=ToneEngine(seconds=0.02), mqtt={"share_group": "hall"}))
    return boxes


def done_by(boxes: list[Daemon]) -> dict[str, list[str]]:
    """request id -> the node ids that reported it done."""
    found: dict[str, list[str]] = {}
    for box in boxes:
        for event in box.events():
            if event["event"] == "done":
                found.setdefault(event["id"], []).append(box.topics.node_id)
    return found


def wait_all_done(boxes: list[Daemon], ids: list[str], recorder: Recorder) -> None:
    for request_id in ids:
        recorder.wait_for(
            "gsv-edge/+/events", lambda m, rid=request_id: m.json()["id"] == rid and m.json()["event"] == "done"
        )


def test_a_burst_is_split_between_boxes_and_spoken_once(
    start_daemon, recorder: Recorder, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    boxes = start_fleet(start_daemon, monkeypatch, tmp_path, 2)
    ids = [f"burst-{n}" for n in range(20)]
    for request_id in ids:
        recorder.publish(SHARED_SAY, f'{{"id": "{request_id}", "text": "Announcement {request_id}."}}')
    wait_all_done(boxes, ids, recorder)

    done = done_by(boxes)
    assert sorted(done) == sorted(ids)
    assert all(len(nodes) == 1 for nodes in done.values()), done  # none spoken twice
    started = Counter(e["id"] for box in boxes for e in box.events() if e["event"] == "started")
    assert set(started.values()) == {1}
    per_box = Counter(nodes[0] for nodes in done.values())
    assert len(per_box) == 2 and min(per_box.values()) >= 5, per_box  # both boxes took a share

    # The node's own topic still reaches that box alone.
    first, second = boxes
    first.say({"id": "only-first", "text": "Just this box."})
    first.wait_event("only-first", "done")
    assert not second.events("only-first")


def test_a_stopped_box_leaves_the_group(
    start_daemon, recorder: Recorder, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Its persistent session must not go on taking (and holding) a share of the requests while it is down."""
    first, second = start_fleet(start_daemon, monkeypatch, tmp_path, 2)
    second.service.stop()
    recorder.wait_for(second.topics.availability, lambda m: m.payload == b"offline")
    ids = [f"after-{n}" for n in range(6)]
    for request_id in ids:
        recorder.publish(SHARED_SAY, f'{{"id": "{request_id}", "text": "Still served."}}')
    wait_all_done([first], ids, recorder)
    assert set(done_by([first])) == set(ids)


def test_share_group_must_be_a_single_topic_level(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(to_toml({"mqtt": {"share_group": "a/b"}}))
    with pytest.raises(ConfigError, match="mqtt.share_group"):
        load_settings(config)
