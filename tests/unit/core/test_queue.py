"""Queue policy: priority order, preemption, TTL expiry, duplicate ids, bounded size."""

from __future__ import annotations

import threading
import time
import warnings

from daemon.core.request_queue import MemoryQueue, Request
from tests.conftest import Recorder
from tests.doubles import ToneEngine

with warnings.catch_warnings():  # rhasspy-hermes imports audioop, deprecated since Python 3.11
    warnings.simplefilter("ignore", DeprecationWarning)
    from rhasspyhermes.tts import TtsSay


def _request(request_id: str, priority: str = "normal", ttl_s: float = 60.0, interrupt: bool = False) -> Request:
    return Request(
        id=request_id,
        text=request_id,
        expires_at=time.time() + ttl_s,
        priority=priority,  # type: ignore[arg-type]
        interrupt=interrupt,
    )


def _drain(queue: MemoryQueue) -> list[str]:
    order = []
    while (request := queue.pop()) is not None:
        order.append(request.id)
    return order


def test_memory_queue_orders_by_priority_then_arrival() -> None:
    queue = MemoryQueue(max_depth=10, dedup_window_s=60)
    for request_id, priority in [
        ("n1", "normal"),
        ("l1", "low"),
        ("h1", "high"),
        ("n2", "normal"),
        ("e1", "emergency"),
    ]:
        assert queue.put(_request(request_id, priority)).status == "queued"
    queue.put(_request("n3", "normal", interrupt=True))  # an interrupt goes first within its priority
    assert _drain(queue) == ["e1", "h1", "n3", "n1", "n2", "l1"]


def test_memory_queue_duplicates_full_and_displacement() -> None:
    queue = MemoryQueue(max_depth=2, dedup_window_s=60)
    assert queue.put(_request("a")).status == "queued"
    assert queue.put(_request("a")).status == "duplicate"
    assert queue.put(_request("b", "low")).status == "queued"
    assert queue.put(_request("c", "low")).status == "full"
    admission = queue.put(_request("d", "high"))
    assert admission.status == "queued" and admission.displaced is not None and admission.displaced.id == "b"
    queue.requeue(_request("r"))  # preempted work goes back in front of its band, past the bound
    assert _drain(queue) == ["d", "r", "a"]


def test_memory_queue_dedup_window_expires_and_expired_requests_are_removed() -> None:
    queue = MemoryQueue(max_depth=5, dedup_window_s=0.05)
    queue.put(_request("x", ttl_s=0.01))
    time.sleep(0.06)
    assert [r.id for r in queue.remove_expired()] == ["x"]
    assert queue.put(_request("x")).status == "queued"  # the window has passed


def test_priority_order_end_to_end(start_daemon) -> None:
    gate = threading.Event()
    daemon = start_daemon(synth=ToneEngine(seconds=0.05, gate=gate))
    daemon.say({"id": "first", "text": "Busy."})
    daemon.wait_event("first", "started")
    for request_id, priority in [("low", "low"), ("normal", "normal"), ("high", "high")]:
        daemon.say({"id": request_id, "text": "Waiting.", "priority": priority})
        daemon.wait_event(request_id, "queued")
    gate.set()
    daemon.wait_event("low", "done")
    started = [e["id"] for e in daemon.events() if e["event"] == "started"]
    assert started == ["first", "high", "normal", "low"]


def test_emergency_cuts_remote_playback_and_overtakes_pending_work(start_daemon, recorder: Recorder) -> None:
    """A Hermes site playing long audio is cut; the request already synthesised for later is requeued."""
    recorder.subscribe("hermes/#")
    daemon = start_daemon(synth=ToneEngine(seconds=5.0))
    recorder.publish(TtsSay.topic(), TtsSay(text="Long story.", id="story").to_json())
    daemon.wait_event("story", "first_audio")
    recorder.publish(TtsSay.topic(), TtsSay(text="Next.", id="next").to_json())
    daemon.wait_event("next", "started")
    time.sleep(0.2)  # let "next" finish synthesising and wait for the player
    began = time.monotonic()
    daemon.say({"id": "fire", "text": "Fire alarm.", "priority": "emergency"})
    cut = daemon.wait_event("story", "failed")
    assert cut["reason"] == "interrupted by fire"
    assert time.monotonic() - began < 1.0
    daemon.wait_event("next", "first_audio", timeout=10)
    terminal = [e["id"] for e in daemon.events() if e["event"] in ("done", "failed")]
    assert terminal[:2] == ["story", "fire"]
    requeued = [e for e in daemon.events("next") if e["event"] == "queued" and e.get("requeued")]
    assert requeued and requeued[0]["reason"] == "preempted by fire"


def test_expired_requests_are_dropped_with_an_event(start_daemon) -> None:
    gate = threading.Event()
    daemon = start_daemon(synth=ToneEngine(seconds=0.05, gate=gate))
    daemon.say({"id": "blocker", "text": "Busy."})
    daemon.wait_event("blocker", "started")
    daemon.say({"id": "stale", "text": "Too late.", "ttl_s": 0.2})
    daemon.say({"id": "past", "text": "Already over.", "expires_at": "2001-01-01T00:00:00Z"})
    assert daemon.wait_event("past", "expired")["reason"] == "expired before it was queued"
    time.sleep(0.3)
    gate.set()
    assert "ttl" in daemon.wait_event("stale", "expired")["reason"]
    assert [e["event"] for e in daemon.events("stale")] == ["queued", "expired"]


def test_a_redelivery_is_answered_as_a_duplicate_and_new_content_under_the_same_id_is_spoken(
    start_daemon, recorder: Recorder
) -> None:
    daemon = start_daemon(synth=ToneEngine(seconds=0.05))
    daemon.say({"id": "dup", "text": "Once."})
    first = daemon.wait_event("dup", "done")
    daemon.say({"id": "dup", "text": "Once."})  # e.g. a QoS 1 redelivery
    assert daemon.wait_event("dup", "duplicate")["state"] == "done"
    daemon.say({"id": "dup", "text": "Something else."})  # the same id, other content: a new request
    recorder.wait_for(
        daemon.topics.events,
        lambda m: m.json()["id"] == "dup" and m.json()["event"] == "done" and m.json().get("seq") != first.get("seq"),
    )
    kinds = [e["event"] for e in daemon.events("dup")]
    assert kinds == ["queued", "started", "first_audio", "done", "duplicate"] + ["queued", "started", "first_audio",
                                                                                 "done"]
    assert len(recorder.on(daemon.topics.audio("dup"))) == 2


def test_full_queue_rejects_and_emergency_displaces(start_daemon) -> None:
    gate = threading.Event()
    daemon = start_daemon(synth=ToneEngine(seconds=0.05, gate=gate), queue={"max_depth": 2})
    daemon.say({"id": "busy", "text": "Busy."})
    daemon.wait_event("busy", "started")
    for request_id in ("q1", "q2"):
        daemon.say({"id": request_id, "text": "Queued."})
        daemon.wait_event(request_id, "queued")
    daemon.say({"id": "overflow", "text": "No room."})
    assert daemon.wait_event("overflow", "rejected")["reason"] == "queue full"
    daemon.say({"id": "alarm", "text": "Emergency.", "priority": "emergency"})
    assert daemon.wait_event("q2", "rejected")["reason"] == "queue full: displaced by alarm"
    gate.set()
    daemon.wait_event("q1", "done")
    done = [e["id"] for e in daemon.events() if e["event"] == "done"]
    assert done == ["busy", "alarm", "q1"]


def test_a_requests_sampling_survives_the_state_database_and_tells_content_apart(tmp_path) -> None:
    from daemon.core.audio_cache import cache_key
    from daemon.core.durable_queue import _from_json, _to_json, content_digest
    from daemon.speech.synthesizer import Sampling

    plain = Request(id="a", text="Hello.", expires_at=time.time() + 60)
    seeded = Request(id="a", text="Hello.", expires_at=plain.expires_at, sampling=Sampling(top_k=5, seed=7))
    assert _from_json(_to_json(seeded)).sampling == Sampling(top_k=5, seed=7)
    assert _from_json(_to_json(plain)).sampling is None
    digests = {content_digest(r) for r in (plain, seeded, Request(**{**seeded.__dict__, "sampling": Sampling(seed=8)}))}
    assert len(digests) == 3, "a repeat with other sampling is other content"

    class Identified(ToneEngine):
        identity = "tone v1"

    keys = {cache_key(Identified(), r, 16000).digest() for r in (plain, seeded)}
    assert len(keys) == 2, "audio rendered with other sampling is cached apart"
