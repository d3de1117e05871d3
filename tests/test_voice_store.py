"""The voice store as the daemon uses it: how often one request reads the voices directory, and that voices
added or removed by the daemon itself or by another process are seen at once."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from daemon.model.bundle import Bundle
from daemon.model.engine import Engine
from daemon.model.hardware import HardwareProfile
from tests.conftest import Recorder
from tests.demo_fixtures import demo_bundle  # noqa: F401  (fixture)
from tests.test_engine import make_wav


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
