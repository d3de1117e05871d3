"""The rendered-audio cache: on disk, size-capped LRU, atomic writes, damaged entries dropped; and the
pipeline skipping synthesis on a hit."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from daemon.core.audio_cache import AudioCache, CacheKey, cache_key
from daemon.core.request_queue import Request
from daemon.model.bundle import Bundle
from daemon.model.engine import Engine
from daemon.model.hardware import HardwareProfile
from daemon.speech.espeak import EspeakVoice
from daemon.speech.synthesizer import SynthesisError
from tests.conftest import Recorder
from tests.doubles import ToneEngine
from tests.integration.test_mqtt_native import read_wav
from tests.unit.model.test_engine import make_wav


def key(text: str = "Doorbell.", **changes: object) -> CacheKey:
    fields: dict[str, object] = {
        "text": text, "voice": "alice", "lang": "en", "speed": 1.0, "engine": "gpt-sovits abc", "sample_rate": 32000
    }
    fields.update(changes)
    return CacheKey(**fields)  # type: ignore[arg-type]


def chunks(seconds: float = 0.5, rate: int = 32000, parts: int = 2, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(-0.5, 0.5, int(seconds * rate / parts)).astype(np.float32) for _ in range(parts)]


def test_round_trip_keeps_chunks_exactly(tmp_path: Path) -> None:
    cache = AudioCache(tmp_path / "audio", 10 << 20)
    audio = chunks(parts=3)
    assert cache.get(key()) is None
    cache.put(key(), audio)
    got = cache.get(key())
    assert got is not None and len(got) == 3
    assert all(np.array_equal(a, b) and b.dtype == np.float32 for a, b in zip(audio, got, strict=True))
    again = AudioCache(tmp_path / "audio", 10 << 20)  # a restart finds it on disk
    assert len(again) == 1 and again.get(key()) is not None
    assert not [p for p in (tmp_path / "audio").iterdir() if p.suffix != ".npz"]  # no temporary files left


def test_anything_that_shapes_the_audio_is_a_miss(tmp_path: Path) -> None:
    cache = AudioCache(tmp_path / "audio", 10 << 20)
    cache.put(key(), chunks())
    for other in (
        key(voice="bob"),
        key(speed=1.25),
        key(engine="gpt-sovits def"),
        key(engine="espeak-ng 1.52.0"),
        key(lang="zh"),
        key(sample_rate=22050),
        key("Doorbell!"),
    ):
        assert cache.get(other) is None, other
    assert cache.get(key()) is not None


def test_eviction_keeps_under_the_cap_and_drops_least_recently_used(tmp_path: Path) -> None:
    one = len(np.concatenate(chunks())) * 4  # bytes of float32 audio per entry (plus a little npz overhead)
    cap = int(one * 3.5)
    cache = AudioCache(tmp_path / "audio", cap)
    for n in range(3):
        cache.put(key(f"text {n}"), chunks(seed=n))
    assert cache.get(key("text 0")) is not None  # used: now the most recent
    cache.put(key("text 3"), chunks(seed=3))
    assert cache.total_bytes <= cap
    assert cache.get(key("text 1")) is None  # least recently used went first
    assert cache.get(key("text 0")) is not None and cache.get(key("text 3")) is not None
    on_disk = sum(p.stat().st_size for p in (tmp_path / "audio").iterdir())
    assert on_disk == cache.total_bytes <= cap
    cache.put(key("huge"), chunks(seconds=20.0))  # larger than the whole cache: not stored, nothing evicted
    assert cache.get(key("huge")) is None and cache.get(key("text 3")) is not None


def test_lru_order_survives_a_restart(tmp_path: Path) -> None:
    one = len(np.concatenate(chunks())) * 4
    cache = AudioCache(tmp_path / "audio", int(one * 2.5))
    cache.put(key("old"), chunks(seed=1))
    cache.put(key("new"), chunks(seed=2))
    past = time.time() - 100
    os.utime(cache.directory / f"{key('new').digest()}.npz", (past, past))  # "new" used long ago
    restarted = AudioCache(tmp_path / "audio", int(one * 2.5))
    restarted.put(key("third"), chunks(seed=3))
    assert restarted.get(key("new")) is None and restarted.get(key("old")) is not None


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),  # truncated
        lambda p: p.write_bytes(b"not a zip file at all"),
        lambda p: p.write_bytes(b""),
    ],
    ids=["truncated", "garbage", "empty"],
)
def test_damaged_entry_is_a_miss_and_removed(tmp_path: Path, damage) -> None:
    cache = AudioCache(tmp_path / "audio", 10 << 20)
    cache.put(key(), chunks())
    path = cache.directory / f"{key().digest()}.npz"
    damage(path)
    assert cache.get(key()) is None
    assert not path.exists() and len(cache) == 0
    cache.put(key(), chunks())  # and it can be stored again
    assert cache.get(key()) is not None


def test_entry_under_another_keys_name_is_refused(tmp_path: Path) -> None:
    cache = AudioCache(tmp_path / "audio", 10 << 20)
    cache.put(key("a"), chunks(seed=1))
    cache.put(key("b"), chunks(seed=2))
    a, b = (cache.directory / f"{key(t).digest()}.npz" for t in ("a", "b"))
    b.write_bytes(a.read_bytes())  # e.g. a file copied over by hand
    assert cache.get(key("b")) is None and not b.exists()


def test_crash_leftovers_are_cleaned(tmp_path: Path) -> None:
    directory = tmp_path / "audio"
    directory.mkdir()
    (directory / ".deadbeef.123.456.tmp").write_bytes(b"half a write")
    AudioCache(directory, 10 << 20)
    assert list(directory.iterdir()) == []


def test_engine_identities(demo_bundle: Path, tmp_path: Path) -> None:  # noqa: F811
    espeak = EspeakVoice("en")
    assert espeak.identity.startswith("espeak-ng ") and espeak.identity.split()[1][0].isdigit()
    unknown = Request(id="r", text="Hello.", expires_at=time.time() + 60)
    assert cache_key(ToneEngine(), unknown, 16000) is None  # an engine without an identity is not cached
    engine = Engine(Bundle.load(demo_bundle), HardwareProfile.load("x86-cpu"), tmp_path / "state")
    identity = engine.identity  # as the cache has always spelled it, so entries written before stay valid
    assert identity == f"gpt-sovits {engine.bundle.digest} int8 CPUExecutionProvider"  # x86-cpu prefers int8
    engine.register_voice("alice", make_wav(seed=1), "Hello there, this is me.", "en")
    request = Request(id="r", text="Hello.", expires_at=time.time() + 60, voice="alice")
    first = cache_key(engine, request, engine.sample_rate)
    engine.register_voice("alice", make_wav(seed=2), "Hello there, this is me.", "en")  # same name, new clip
    second = cache_key(engine, request, engine.sample_rate)
    assert first is not None and second is not None and first != second
    assert cache_key(engine, Request(id="r", text="Hello.", expires_at=0, voice="nobody"), 32000) is None


class CountingTone(ToneEngine):
    """A tone engine the cache knows (an ``identity``); ``calls`` counts real syntheses."""

    identity = "tone v1"


def test_repeated_announcement_is_played_from_the_cache(start_daemon, recorder: Recorder) -> None:
    engine = CountingTone(seconds=0.1)
    daemon = start_daemon(synth=engine, cache={"max_mb": 8})
    daemon.say({"id": "first", "text": "Front door. Back door."})
    first = daemon.wait_event("first", "done")
    assert "cached" not in first and engine.calls == ["Front door. Back door."]

    daemon.say({"id": "again", "text": "Front door. Back door.", "volume": 0.5})
    done = daemon.wait_event("again", "done")
    assert engine.calls == ["Front door. Back door."]  # no second synthesis
    assert done["cached"] is True and done["audio_ms"] == first["audio_ms"]
    assert daemon.wait_event("again", "started")["cached"] is True
    assert daemon.wait_event("again", "first_audio")["cached"] is True
    original, _ = read_wav(recorder.wait_for(daemon.topics.audio("first")).payload)
    replayed, _ = read_wav(recorder.wait_for(daemon.topics.audio("again")).payload)
    assert np.abs(replayed.astype(int) - original.astype(int) // 2).max() <= 1  # same audio, volume on output

    daemon.say({"id": "faster", "text": "Front door. Back door.", "speed": 2.0})
    assert "cached" not in daemon.wait_event("faster", "done")
    assert len(engine.calls) == 2


def test_cache_off(start_daemon) -> None:
    engine = CountingTone(seconds=0.05)
    daemon = start_daemon(synth=engine, cache={"max_mb": 0})
    for n in range(2):
        daemon.say({"id": f"off-{n}", "text": "Same words."})
        assert "cached" not in daemon.wait_event(f"off-{n}", "done")
    assert len(engine.calls) == 2


def test_fallback_rendering_is_not_cached(start_daemon) -> None:
    """A request the engine failed on is tried on the engine again next time, not replayed from eSpeak NG."""
    engine = CountingTone(error=SynthesisError("model exploded"))
    daemon = start_daemon(synth=engine)
    for n in range(2):
        daemon.say({"id": f"fb-{n}", "text": "Fallback words.", "lang": "en"})
        done = daemon.wait_event(f"fb-{n}", "done")
        assert done["fallback"] is True and "cached" not in done
    assert len(engine.calls) == 2
