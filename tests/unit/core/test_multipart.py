"""Multi-part announcements in the pipeline and the durable queue: the parts' audio in order (each voice its own
tone, the chime's samples, pauses and the gap between repeats to the sample), one set of events, cutting and
requeueing as a whole, each text part cached under its own key, and the parts kept across a restart."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from daemon.core.audio_cache import AudioCache
from daemon.core.durable_queue import DurableQueue
from daemon.core.events import EventKind, is_terminal
from daemon.core.pipeline import STOPPING, builtin_chime
from daemon.core.request_queue import Part, Request
from daemon.core.state_db import StateDb
from tests.doubles import VoiceTones, tone
from tests.unit.core.test_pipeline import Rig, SoundCard

RATE = VoiceTones.sample_rate
SECONDS = 0.05  # each sentence's tone
CHIME = Part(chime=True)


def say(voice: str | None, text: str = "One.") -> Part:
    return Part(text=text, voice=voice)


def pause(seconds: float) -> Part:
    return Part(pause_s=seconds)


def announcement(rid: str, parts: tuple[Part, ...], **fields: Any) -> Request:
    text = "\n".join(part.text for part in parts if part.text is not None)
    return Request(id=rid, text=text, expires_at=time.time() + 60, parts=parts, **fields)


def expected(parts: tuple[Part, ...], repeat: int = 1, gap_s: float = 0.0, seconds: float = SECONDS) -> np.ndarray:
    """What the parts should sound like, built from the doubles' own tones and the built-in chime."""
    pieces: list[np.ndarray] = []
    for part in parts:
        if part.chime:
            pieces.append(builtin_chime(RATE))
        elif part.pause_s is not None:
            pieces.append(np.zeros(round(part.pause_s * RATE), np.float32))
        else:
            assert part.text is not None
            sentences = [s for s in part.text.split(".") if s.strip()]
            pieces += [tone(seconds, RATE, VoiceTones.FREQS[part.voice])] * len(sentences)
    once = np.concatenate(pieces)
    gap = np.zeros(round(gap_s * RATE), np.float32)
    return np.concatenate([once] + [np.concatenate((gap, once)) for _ in range(repeat - 1)])


def terminal_events(rig: Rig, rid: str) -> list[tuple[EventKind, dict[str, Any]]]:
    return [(kind, fields) for kind, fields in rig.events.of(rid) if is_terminal(kind, fields)]


def test_parts_play_in_order_and_repeat_after_the_gap_as_one_request() -> None:
    parts = (CHIME, say("tone-b", "Un. Deux."), pause(0.25), say("tone-a", "One."))
    with Rig(engine=VoiceTones(seconds=SECONDS)) as rig:
        rig.pipeline.submit(announcement("pa", parts, repeat=2, repeat_gap_s=0.5))
        done = rig.events.wait("pa")
    delivered = np.concatenate(rig.published.audio["pa"])
    want = expected(parts, repeat=2, gap_s=0.5)
    assert delivered.size == want.size and np.array_equal(delivered, want)
    pause_at = builtin_chime(RATE).size + 2 * round(SECONDS * RATE)  # after the chime and the two tone-b sentences
    assert not np.any(delivered[pause_at:pause_at + round(0.25 * RATE)]) and np.any(delivered[pause_at - 100:pause_at])
    assert rig.events.kinds("pa") == ["queued", "started", "first_audio", "done"]
    assert done["audio_ms"] == round(want.size / RATE * 1000)
    assert done["speech_ms"] == round(3 * round(SECONDS * RATE) / RATE * 1000)  # synthesised once, not per repeat
    assert rig.engine.calls == ["Un. Deux.", "One."]


def test_each_voice_sounds_its_own_tone() -> None:
    """The doubles' voices differ where the test looks: the dominant frequency of each spoken part."""
    parts = (say("tone-a"), say("tone-b"))
    with Rig(engine=VoiceTones(seconds=SECONDS)) as rig:
        rig.pipeline.submit(announcement("voices", parts))
        rig.events.wait("voices")
    delivered = np.concatenate(rig.published.audio["voices"])
    half = delivered.size // 2
    peaks = [np.argmax(np.abs(np.fft.rfft(segment))) * RATE / segment.size
             for segment in (delivered[:half], delivered[half:])]
    assert [round(peak, -1) for peak in peaks] == [440.0, 660.0]


def test_volume_applies_to_every_part_and_a_chime_only_announcement_is_a_bell() -> None:
    with Rig(engine=VoiceTones(seconds=SECONDS)) as rig:
        rig.pipeline.submit(announcement("bell", (CHIME, pause(0.1), CHIME), volume=0.5))
        done = rig.events.wait("bell")
    delivered = np.concatenate(rig.published.audio["bell"])
    assert done["event"] == "done" and rig.engine.calls == []
    assert np.array_equal(delivered, expected((CHIME, pause(0.1), CHIME)) * 0.5)
    assert done["speech_ms"] == 0


def test_an_emergency_cuts_a_multi_part_announcement_once_and_requeues_a_waiting_one_whole() -> None:
    pace = threading.Semaphore(0)
    card = SoundCard(pace=pace)
    playing = (CHIME, say("tone-b", "A. B. C. D."), pause(0.1), say("tone-a", "E."))
    waiting = (CHIME, say("tone-a", "Later."), pause(0.2), say("tone-b", "Plus tard."))
    with Rig(engine=VoiceTones(seconds=SECONDS), card=card) as rig:
        rig.pipeline.submit(announcement("long", playing, repeat=3, output="play"))
        pace.release()
        rig.events.wait("long", EventKind.FIRST_AUDIO)
        rig.pipeline.submit(announcement("next", waiting, repeat=2, repeat_gap_s=0.3, output="play"))
        rig.events.wait("next", EventKind.STARTED)  # rendered, waiting for the speaker
        rig.pipeline.submit(announcement("fire", (say("tone-a", "Evacuate."),), priority="emergency",
                                         output="play"))
        for _ in range(400):
            pace.release()
        cut = rig.events.wait("long")
        rig.events.wait("fire")
        later = rig.events.wait("next")
    assert cut["event"] == "failed" and cut["reason"] == "interrupted by fire"
    assert later["event"] == "done"
    assert [kind.value for kind, _ in terminal_events(rig, "long")] == ["failed"]
    assert [kind.value for kind, _ in terminal_events(rig, "next")] == ["done"]
    requeued = [f for k, f in rig.events.of("next") if k is EventKind.QUEUED and f.get("requeued")]
    assert [f["reason"] for f in requeued] == ["preempted by fire"]
    order = [rid for rid, kind, _ in rig.events.log if kind is EventKind.DONE]
    assert order == ["fire", "next"]
    # the requeued announcement is rendered again and played whole, from its chime to its last repeat
    want = expected(waiting, repeat=2, gap_s=0.3)
    played = np.concatenate(card.played)
    assert np.array_equal(played[-want.size:], want)


def test_a_drain_stops_rendering_between_parts_and_the_rendered_beginning_still_plays() -> None:
    pace = threading.Semaphore(0)
    parts = (say("tone-a", "A."), pause(0.1), say("tone-b", "B. C."))
    with Rig(engine=VoiceTones(seconds=SECONDS, pace=pace)) as rig:
        rig.pipeline.submit(announcement("pa", parts, repeat=2, repeat_gap_s=0.2))
        pace.release()
        rig.events.wait("pa", EventKind.FIRST_AUDIO)
        drained = threading.Thread(target=rig.pipeline.drain, args=(10.0,))
        drained.start()
        pace.release()
        pace.release()
        drained.join(10.0)
        end = rig.events.wait("pa")
    assert end["event"] == "failed" and end["reason"] == STOPPING
    assert [kind.value for kind, _ in terminal_events(rig, "pa")] == ["failed"]
    delivered = np.concatenate(rig.published.audio["pa"])
    whole = expected(parts, repeat=2, gap_s=0.2)
    at_least = expected((say("tone-a", "A."), pause(0.1), say("tone-b", "B.")))
    assert at_least.size <= delivered.size < whole.size and np.array_equal(delivered, whole[:delivered.size])


def test_each_text_part_is_cached_under_its_own_key(tmp_path: Path) -> None:
    class Known(VoiceTones):
        identity = "voice tones v1"

    engine = Known(seconds=SECONDS)
    with Rig(engine=engine, cache=AudioCache(tmp_path, 1 << 24)) as rig:
        rig.pipeline.submit(announcement("one", (CHIME, say("tone-a", "Attention."), say("tone-b", "Achtung."))))
        first = rig.events.wait("one")
        rig.pipeline.submit(announcement("two", (say("tone-b", "Achtung."), pause(0.1), say("tone-a", "New."))))
        second = rig.events.wait("two")
        rig.pipeline.submit(announcement("three", (say("tone-a", "Attention."), say("tone-b", "Achtung.")),
                                         repeat=2))
        third = rig.events.wait("three")
        rig.pipeline.submit(Request(id="plain", text="Attention.", voice="tone-a", expires_at=time.time() + 60))
        plain = rig.events.wait("plain")
    assert engine.calls == ["Attention.", "Achtung.", "New."]  # every text part rendered once
    assert "cached" not in first and "cached" not in second  # "New." had to be synthesised
    assert third["cached"] is True and plain["cached"] is True
    started = [f for k, f in rig.events.of("three") if k is EventKind.STARTED]
    assert started[0]["cached"] is True and started[0]["parts"] == 2
    assert len(rig.pipeline.cache or ()) == 3  # no entry for chimes, pauses or repeats
    assert "cache_entry" not in third  # no single entry holds a multi-part announcement


def test_parts_survive_a_restart_and_other_parts_are_another_request(tmp_path: Path) -> None:
    parts = (CHIME, say("tone-b", "请注意。"), pause(0.5), say("tone-a", "Attention please."))
    db = StateDb.in_dir(tmp_path)
    queue = DurableQueue(db, max_depth=10, dedup_window_s=600)
    assert queue.put(announcement("pa", parts, repeat=2, repeat_gap_s=1.5)).status == "queued"
    db.close()
    again = DurableQueue(StateDb.in_dir(tmp_path), max_depth=10, dedup_window_s=600)
    [resumed] = again.resumed
    assert resumed.parts == parts and resumed.repeat == 2 and resumed.repeat_gap_s == 1.5
    assert again.put(announcement("pa", parts, repeat=2, repeat_gap_s=1.5)).status == "duplicate"
    assert again.put(announcement("pa", parts[1:], repeat=2, repeat_gap_s=1.5)).status == "queued"
    assert again.put(announcement("pa", parts, repeat=3, repeat_gap_s=1.5)).status == "queued"
