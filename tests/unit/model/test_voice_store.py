"""The voice store as the daemon uses it: how often one request reads the voices directory, and that voices
added or removed by the daemon itself or by another process are seen at once."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from daemon.model.bundle import Bundle
from daemon.model.engine import Engine
from daemon.model.hardware import HardwareProfile
from daemon.model.voices import Voice, VoiceMeta, VoiceStore
from tests.conftest import Recorder
from tests.unit.model.test_engine import make_wav


class StoreReads:
    """Counts, under one voices directory, its listings, the ``voice.json`` records read and the features
    loaded, whatever code does them."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.counts: Counter[str] = Counter()
        iterdir, read_text, load = Path.iterdir, Path.read_text, np.load

        def counted_iterdir(path: Path):
            if path == root:
                self.counts["listings"] += 1
            return iterdir(path)

        def counted_read_text(path: Path, *args, **kwargs):
            if path.name == "voice.json" and path.is_relative_to(root):
                self.counts["records"] += 1
            return read_text(path, *args, **kwargs)

        def counted_load(file, *args, **kwargs):
            if isinstance(file, Path) and file.name == "features.npz" and file.is_relative_to(root):
                self.counts["features"] += 1
            return load(file, *args, **kwargs)

        monkeypatch.setattr(Path, "iterdir", counted_iterdir)
        monkeypatch.setattr(Path, "read_text", counted_read_text)
        monkeypatch.setattr(np, "load", counted_load)


def settle(root: Path, seconds_ago: float = 60.0) -> None:
    """As if the voices directory had last changed ``seconds_ago``."""
    then = time.time() - seconds_ago
    os.utime(root, (then, then))


def stored_voice(name: str) -> Voice:
    meta = VoiceMeta(name, "digest", "demo", "clip", "text", "en", f"key-{name}", "now", 4.0)
    return Voice(meta, np.zeros(4, np.int64), np.zeros(3, np.int64), np.zeros((1024, 3), np.float32),
                 np.zeros((1, 512, 1), np.float32))


@pytest.mark.parametrize("voice", ["alice", None])
def test_one_request_reads_the_voice_store_once(
    start_daemon, recorder: Recorder, demo_bundle: Path, monkeypatch: pytest.MonkeyPatch, voice: str | None  # noqa: F811
) -> None:
    """A say naming a cloned voice, or none (the first registered speaks): its features are read from disk,
    the voice list is not (it is held in memory and only re-read when the voices directory changes)."""
    daemon = start_daemon(engine={"bundle": str(demo_bundle)})
    state = daemon.service.settings.state_dir
    Engine(Bundle.load(demo_bundle), HardwareProfile.load("x86-cpu"), state).register_voice(
        "alice", make_wav(), "Hello there, this is me.", "en")
    settle(state / "voices")
    daemon.say({"id": "warm", "text": "Testing one two.", "voice": "alice", "lang": "en"})
    daemon.wait_event("warm", "done", timeout=60)

    statuses = threading.Condition()
    published: list[str] = []
    publish_status = daemon.service.mqtt.publish_status

    def counted_publish_status(status) -> None:  # every event but started/first_audio ends here, after its send
        publish_status(status)
        with statuses:
            published.append(status["state"])
            statuses.notify_all()

    monkeypatch.setattr(daemon.service.mqtt, "publish_status", counted_publish_status)
    reads = StoreReads(state / "voices", monkeypatch)
    daemon.say({"id": "measured", "text": "Testing three four.", "lang": "en", **({"voice": voice} if voice else {})})
    done = daemon.wait_event("measured", "done", timeout=60)
    with statuses:  # queued and done: both have re-published the voice list
        assert statuses.wait_for(lambda: len(published) >= 2, timeout=10)
    assert done["fallback"] is False
    assert reads.counts == {"features": 1}, reads.counts


def test_the_list_is_read_again_only_when_the_directory_changes(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    daemon, cli = VoiceStore(tmp_path), VoiceStore(tmp_path)  # e.g. gsv-edge voice add in another process
    assert daemon.list() == []
    cli.save(stored_voice("alice"))
    settle(daemon.root)
    reads = StoreReads(daemon.root, monkeypatch)
    assert [m.name for m in daemon.list()] == ["alice"] and reads.counts["listings"] == 1
    assert daemon.meta("alice").key == "key-alice" and daemon.list()[0].name == "alice"
    assert reads.counts == {"listings": 1, "records": 1}  # held in memory since

    cli.save(stored_voice("bob"))  # a new entry moves the directory's modification time
    assert [m.name for m in daemon.list()] == ["alice", "bob"]
    cli.remove("alice")
    assert [m.name for m in daemon.list()] == ["bob"]
    assert reads.counts["listings"] == 3


def test_a_change_within_the_clock_tick_of_the_listing_is_not_missed(tmp_path: Path) -> None:
    """A coarse file-system clock can leave the directory's mtime as it was after a change; a listing of a
    directory that changed moments ago is therefore not kept."""
    daemon, cli = VoiceStore(tmp_path), VoiceStore(tmp_path)
    cli.save(stored_voice("alice"))
    settle(daemon.root, seconds_ago=0.5)
    listed_at = daemon.root.stat().st_mtime_ns
    assert [m.name for m in daemon.list()] == ["alice"]
    cli.save(stored_voice("bob"))
    os.utime(daemon.root, ns=(listed_at, listed_at))  # the same mtime as at the listing
    assert [m.name for m in daemon.list()] == ["alice", "bob"]


def test_the_stores_own_changes_are_seen_at_once(tmp_path: Path) -> None:
    store = VoiceStore(tmp_path)
    store.save(stored_voice("alice"))
    settle(store.root)
    assert [m.name for m in store.list()] == ["alice"]
    unchanged = store.root.stat().st_mtime_ns
    store.save(stored_voice("bob"))
    os.utime(store.root, ns=(unchanged, unchanged))
    assert [m.name for m in store.list()] == ["alice", "bob"]
    settle(store.root)
    unchanged = store.root.stat().st_mtime_ns
    store.list()
    store.remove("alice")
    os.utime(store.root, ns=(unchanged, unchanged))
    assert [m.name for m in store.list()] == ["bob"]
