"""The Wyoming TTS server, spoken to with the ``wyoming`` package's own client, as Home Assistant does."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncClient, AsyncTcpClient, AsyncUnixClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped, SynthesizeVoice

from daemon.app.service import Service
from daemon.config import ConfigError, Settings, load_settings
from daemon.core.audit import read_records
from daemon.frontend import installed_languages
from daemon.model.bundle import Bundle
from daemon.model.engine import Engine
from daemon.model.hardware import HardwareProfile
from daemon.protocols.wyoming import complete_sentences
from tests.conftest import Daemon, to_toml
from tests.doubles import ToneEngine, failing_engine
from tests.unit.model.test_engine import make_wav

TIMEOUT_S = 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Answer:
    """Everything a server sent back for one request."""

    events: list[Event] = field(default_factory=list)

    def of(self, kind: type) -> list:
        return [kind.from_event(e) for e in self.events if kind.is_type(e.type)]

    @property
    def types(self) -> list[str]:
        return [e.type for e in self.events if not AudioChunk.is_type(e.type)]

    @property
    def samples(self) -> np.ndarray:
        return np.frombuffer(b"".join(c.audio for c in self.of(AudioChunk)), dtype="<i2")


async def read_until(client: AsyncClient, *ends: type) -> Answer:
    """Read events until one of ``ends`` (an ``error`` always ends it too)."""
    answer = Answer()
    while True:
        event = await client.read_event()
        assert event is not None, f"connection closed after {answer.types}"
        answer.events.append(event)
        if Error.is_type(event.type) or any(end.is_type(event.type) for end in ends):
            return answer


async def synthesize(client: AsyncClient, text: str, voice: str | None = None) -> Answer:
    """Home Assistant's non-streaming request: it stops reading at the first ``audio-stop``."""
    await client.write_event(Synthesize(text=text, voice=SynthesizeVoice(name=voice) if voice else None).event())
    return await read_until(client, AudioStop)


async def describe(client: AsyncClient) -> Info:
    await client.write_event(Describe().event())
    answer = await read_until(client, Info)
    return answer.of(Info)[0]


@pytest.fixture
def wyoming_daemon(start_daemon: Callable[..., Daemon]) -> Callable[..., tuple[Daemon, Callable[[], AsyncClient]]]:
    """A daemon with a Wyoming port on 127.0.0.1, and a factory of clients connected to it."""

    def start(synth=None, fallback=None, queue=None, audio=None, **wyoming) -> tuple[Daemon, Callable[[], AsyncClient]]:
        port = free_port()
        sections = {"wyoming": {"uri": f"tcp://127.0.0.1:{port}", **wyoming}}
        if queue:
            sections["queue"] = queue
        if audio:
            sections["audio"] = audio
        daemon = start_daemon(synth, fallback, **sections)
        return daemon, lambda: AsyncTcpClient("127.0.0.1", port, connect_timeout=5, read_timeout=TIMEOUT_S)

    return start


# -- the real engine --------------------------------------------------------------------------------


def test_satellites_asking_at_once_are_synthesised_side_by_side(wyoming_daemon, demo_bundle: Path,  # noqa: F811
                                                                  tmp_path: Path) -> None:
    """Four Wyoming clients ask at once (four Home Assistant satellites). Their audio goes back over their
    connections, not to the box's speaker, so the daemon's publish lanes synthesise them together: their decodes
    share T2S steps in the background batch, and each client gets its whole answer."""
    engine = Engine(Bundle.load(demo_bundle), HardwareProfile.load("x86-cpu"), tmp_path / "voices")
    engine.register_voice("alice", make_wav(), "这是一段参考录音。", "zh")
    daemon, connect = wyoming_daemon(engine)
    assert engine.decodes is not None and daemon.service.pipeline.synthesis_threads == 1 + engine.max_batch
    texts = [f"第{n}号站台的列车即将进站，请各位旅客站在黄线以内排队等候上车" for n in range(4)]  # one sentence each
    answers: list[Answer] = []

    async def ask(text: str) -> Answer:
        async with connect() as client:
            return await synthesize(client, text, voice="alice")

    async def together() -> None:
        answers.extend(await asyncio.gather(*(ask(text) for text in texts)))

    def until(done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while not done() and time.monotonic() < deadline:
            time.sleep(0.01)

    before = engine.t2s.batch_steps.copy()
    clients = threading.Thread(target=asyncio.run, args=(together(),))
    pipeline, loop = daemon.service.pipeline, engine.decodes
    with loop.foreground():  # stands for the speaker's work: background decodes wait to join until it ends
        with pipeline.engine_lock.exclusive():  # all four taken by the lanes before any starts
            clients.start()
            until(lambda: len([state for state, _ in pipeline.lineup() if state != "queued"]) == 4)
            lineup = pipeline.lineup()
        until(lambda: loop.waiting == 4)
        waiting = loop.waiting
    clients.join(TIMEOUT_S * 2)
    assert len(lineup) == 4 and "queued" not in {state for state, _ in lineup}  # each in a publish lane of its own
    assert waiting == 4 and len(answers) == 4
    for answer in answers:
        assert answer.types == ["audio-start", "audio-stop"] and np.abs(answer.samples).max() > 30
    steps = engine.t2s.batch_steps - before
    assert max(steps) == 4 and loop.steps[False] > 0  # the four requests' decodes stepped together, in the background


def test_describe_lists_voices_and_both_engines_speak(wyoming_daemon, demo_bundle: Path, tmp_path: Path) -> None:  # noqa: F811
    engine = Engine(Bundle.load(demo_bundle), HardwareProfile.load("x86-cpu"), tmp_path / "voices")
    engine.register_voice("alice", make_wav(), "这是一段参考录音。", "zh", description="Alice, announcer")
    engine.register_voice("bob", make_wav(seed=1), "This is a reference clip.", "en")
    engine.register_voice("wing", make_wav(seed=2), "呢段係參考錄音。", "all_yue")
    engine.register_voice("any", make_wav(seed=3), "这是一段参考录音。", "auto")
    daemon, connect = wyoming_daemon(engine)

    async def talk() -> tuple[Info, Answer, Answer]:
        async with connect() as client:
            info = await describe(client)
        async with connect() as client:
            neural = await synthesize(client, "你好。", voice="alice")
        async with connect() as client:
            fallback = await synthesize(client, "Hello there.", voice="en")
        return info, neural, fallback

    info, neural, fallback = asyncio.run(talk())
    [program] = info.tts
    assert program.installed and program.supports_synthesize_streaming and program.version
    voices = {v.name: v for v in program.voices}
    assert set(voices) == {"alice", "bob", "wing", "any", "en"}  # registered voices, plus the eSpeak NG fallback
    assert voices["alice"].languages == ["zh"] and voices["alice"].description == "Alice, announcer"
    # a mode is listed as its language, auto as every language read here (the extras installed)
    assert voices["wing"].languages == ["yue"]
    assert voices["any"].languages == list(installed_languages())
    assert voices["bob"].languages == ["en"] and voices["en"].languages == ["en"]
    assert voices["en"].attribution.name == "eSpeak NG" and all(v.installed for v in program.voices)

    for answer in (neural, fallback):
        assert answer.types == ["audio-start", "audio-stop"]
        [start] = answer.of(AudioStart)
        assert (start.rate, start.width, start.channels) == (engine.sample_rate, 2, 1)
        assert all(c.rate == engine.sample_rate for c in answer.of(AudioChunk))
        seconds = answer.samples.size / engine.sample_rate
        assert 0.3 < seconds < 15 and np.abs(answer.samples).max() > 30
    for name in (engine.name, "espeak-ng fallback"):  # published just after the audio went out
        done = daemon.recorder.wait_for(
            daemon.topics.events, lambda m, n=name: m.json()["event"] == "done" and m.json()["engine"] == n
        ).json()
        assert done["source"] == "wyoming" and not done["fallback"]  # eSpeak NG chosen, not fallen back to


# -- the protocol, on a tone engine ---------------------------------------------------------------


def test_multi_sentence_text_is_one_audio_run_of_the_right_length(wyoming_daemon) -> None:
    engine = ToneEngine(seconds=0.2)
    _daemon, connect = wyoming_daemon(engine, samples_per_chunk=500, sentence_silence_s=0.1)

    async def talk() -> Answer:
        async with connect() as client:
            return await synthesize(client, "One. Two. Three.", voice="tone-b")

    answer = asyncio.run(talk())
    assert answer.types == ["audio-start", "audio-stop"]
    chunks = answer.of(AudioChunk)
    assert all((c.rate, c.width, c.channels) == (16000, 2, 1) and c.samples <= 500 for c in chunks)
    assert answer.samples.size == round(3 * (0.2 + 0.1) * 16000)  # three sentences, each with its silence
    assert engine.calls == ["One. Two. Three."]


def test_streaming_speaks_each_sentence_once_and_before_the_stop(wyoming_daemon) -> None:
    engine = ToneEngine(seconds=0.2)
    _daemon, connect = wyoming_daemon(engine)

    async def talk() -> tuple[Answer, Answer]:
        async with connect() as client:
            await client.write_event(SynthesizeStart(voice=SynthesizeVoice(name="tone-a")).event())
            for text in ("Good morn", "ing. The train is ", "late"):
                await client.write_event(SynthesizeChunk(text=text).event())
            early = await read_until(client, AudioStop)  # the first sentence is spoken while text still comes
            await client.write_event(SynthesizeChunk(text=" again.").event())
            # Home Assistant repeats the whole text for servers without streaming; it must not be spoken twice.
            await client.write_event(Synthesize(text="Good morning. The train is late again.").event())
            await client.write_event(SynthesizeStop().event())
            rest = await read_until(client, SynthesizeStopped)
            return early, rest

    early, rest = asyncio.run(talk())
    assert early.types == ["audio-start", "audio-stop"] and early.samples.size == 0.2 * 16000
    assert rest.types == ["audio-start", "audio-stop", "synthesize-stopped"]
    assert engine.calls == ["Good morning.", "The train is late again."]


def test_errors_name_the_problem_and_the_server_keeps_serving(wyoming_daemon) -> None:
    _daemon, connect = wyoming_daemon(ToneEngine(), queue={"max_text_chars": 40})

    async def talk() -> tuple[list[Error], Info, Answer]:
        async with connect() as client:
            errors = []
            for text, voice in (("Hello.", "nobody"), ("   ", None), ("Far too long. " * 5, None)):
                answer = await synthesize(client, text, voice)
                assert answer.types == ["error"]
                errors += answer.of(Error)
            info = await describe(client)  # the same connection still answers
        async with connect() as client:  # and so does a new one, as Home Assistant opens per request
            spoken = await synthesize(client, "Hello.")
        return errors, info, spoken

    errors, info, spoken = asyncio.run(talk())
    assert [e.code for e in errors] == ["unknown-voice", "invalid-request", "invalid-request"]
    assert "nobody" in errors[0].text and "empty" in errors[1].text and "too long" in errors[2].text
    assert info.tts[0].name == "gsv-edge"
    assert spoken.types == ["audio-start", "audio-stop"] and spoken.samples.size > 0


def test_engine_failure_is_an_error_event(wyoming_daemon) -> None:
    daemon, connect = wyoming_daemon(failing_engine(), failing_engine("broken-fallback"))

    async def talk() -> Answer:
        async with connect() as client:
            return await synthesize(client, "Hello.")

    answer = asyncio.run(talk())
    [error] = answer.of(Error)
    assert error.code == "failed" and "model exploded" in error.text
    assert daemon.service.wyoming is not None


def test_two_clients_at_once_both_get_their_audio(wyoming_daemon) -> None:
    engine = ToneEngine(seconds=0.3)
    _daemon, connect = wyoming_daemon(engine)

    async def one(text: str) -> Answer:
        async with connect() as client:
            return await synthesize(client, text)

    async def talk() -> list[Answer]:
        return list(await asyncio.gather(one("First client."), one("Second client. Two sentences.")))

    first, second = asyncio.run(talk())
    assert first.types == second.types == ["audio-start", "audio-stop"]
    assert first.samples.size == 0.3 * 16000 and second.samples.size == 2 * 0.3 * 16000
    assert sorted(engine.calls) == ["First client.", "Second client. Two sentences."]


def test_connection_limit(wyoming_daemon) -> None:
    _daemon, connect = wyoming_daemon(ToneEngine(), max_connections=1)

    async def talk() -> tuple[Answer, Answer]:
        async with connect() as holder:
            await describe(holder)  # counted by the server
            async with connect() as extra:
                refused = await synthesize(extra, "Hello.")
                assert await extra.read_event() is None  # and closed
        async with connect() as client:  # the slot is free again
            spoken = await synthesize(client, "Hello.")
        return refused, spoken

    refused, spoken = asyncio.run(talk())
    assert [e.code for e in refused.of(Error)] == ["too-many-connections"]
    assert spoken.types == ["audio-start", "audio-stop"]


def test_wyoming_shares_the_queue_and_an_emergency_goes_first(wyoming_daemon) -> None:
    """A Wyoming request waits in the same queue as MQTT ones, at its configured priority."""
    gate = threading.Event()
    engine = ToneEngine(seconds=0.1, gate=gate)
    daemon, connect = wyoming_daemon(engine, priority="low")

    async def talk() -> Answer:
        async with connect() as client:
            await client.write_event(Synthesize(text="From Home Assistant.").event())
            return await read_until(client, AudioStop)

    daemon.say({"id": "first", "text": "Blocking the engine."})
    daemon.wait_event("first", "started")

    async def scenario() -> Answer:
        task = asyncio.ensure_future(talk())
        queued = lambda m: m.json()["event"] == "queued" and m.json()["source"] == "wyoming"  # noqa: E731
        await asyncio.to_thread(daemon.recorder.wait_for, daemon.topics.events, queued)
        daemon.say({"id": "alarm", "text": "Emergency.", "priority": "emergency"})
        await asyncio.to_thread(daemon.wait_event, "alarm", "queued")
        gate.set()
        return await task

    answer = asyncio.run(scenario())
    assert answer.types == ["audio-start", "audio-stop"]
    assert engine.calls == ["Blocking the engine.", "Emergency.", "From Home Assistant."]


def wyoming_event(daemon: Daemon, event: str) -> dict:
    """The first ``event`` of a Wyoming request on the events topic."""
    wanted = lambda m: m.json()["event"] == event and m.json()["source"] == "wyoming"  # noqa: E731
    return daemon.recorder.wait_for(daemon.topics.events, wanted).json()


def wait_for_hang_up(daemon: Daemon) -> None:
    wyoming = daemon.service.wyoming
    assert wyoming is not None
    deadline = time.monotonic() + 5
    while wyoming._connections and time.monotonic() < deadline:  # the server has seen the hang-up
        time.sleep(0.01)


def test_a_client_that_hangs_up_is_not_spoken_for(wyoming_daemon) -> None:
    """Its queued request is taken out of the queue at once, not left for the engine to find."""
    gate = threading.Event()
    engine = ToneEngine(seconds=0.1, gate=gate)
    daemon, connect = wyoming_daemon(engine)
    daemon.say({"id": "first", "text": "Blocking the engine."})
    daemon.wait_event("first", "started")

    async def hang_up() -> None:
        async with connect() as client:
            await client.write_event(Synthesize(text="Nobody will hear this.").event())
            await asyncio.to_thread(wyoming_event, daemon, "queued")

    try:
        asyncio.run(hang_up())
        wait_for_hang_up(daemon)
        failed = wyoming_event(daemon, "failed")  # while the engine is still busy with "first"
    finally:
        gate.set()
    assert failed["reason"] == "client disconnected"
    daemon.wait_event("first", "done")
    assert engine.calls == ["Blocking the engine."]
    assert daemon.service.queue.states(failed["id"]) == ["failed"]
    [record] = [r for r in read_records(daemon.service.settings.state_dir) if r["request_id"] == failed["id"]]
    assert (record["outcome"], record["reason"], record["protocol"]) == ("failed", "client disconnected", "wyoming")


def test_a_client_that_hangs_up_mid_answer_stops_its_synthesis(wyoming_daemon) -> None:
    pace = threading.Semaphore(0)
    engine = ToneEngine(seconds=0.1, pace=pace)
    daemon, connect = wyoming_daemon(engine)

    async def hang_up() -> Event | None:
        async with connect() as client:
            await client.write_event(Synthesize(text="One. Two. Three. Four.").event())
            pace.release()  # the first sentence only
            return await client.read_event()

    first = asyncio.run(hang_up())
    assert first is not None and AudioStart.is_type(first.type)
    wait_for_hang_up(daemon)
    pace.release(3)  # enough for the rest of the text, should synthesis go on
    failed = wyoming_event(daemon, "failed")
    assert failed["reason"] == "client disconnected"
    assert engine.sentences[0] == "One" and "Three" not in engine.sentences  # stopped at the next sentence
    assert not [e for e in daemon.events(failed["id"]) if e["event"] == "done"]
    assert daemon.service.queue.states(failed["id"]) == ["failed"]


def test_a_client_that_hangs_up_while_synthesised_ahead_is_dropped(wyoming_daemon, alsa) -> None:
    """Its request is synthesised while the speaker still plays another: the hang-up stops that too."""
    pace = threading.Semaphore(1)  # the announcement on the speaker: one sentence
    engine = ToneEngine(seconds=2.0, pace=pace)
    daemon, connect = wyoming_daemon(engine, audio={"output_device": "gsvtest", "lead_in_ms": 50, "tail_ms": 50})
    daemon.say({"id": "playing", "text": "Two seconds of tone.", "output": "play"})
    daemon.wait_event("playing", "first_audio")

    async def hang_up() -> None:
        async with connect() as client:
            await client.write_event(Synthesize(text="One. Two. Three.").event())
            await asyncio.to_thread(wyoming_event, daemon, "started")
            pace.release()  # its first sentence, synthesised ahead of playback

            def first_sentence() -> None:
                deadline = time.monotonic() + 5
                while engine.sentences[1:] != ["One"] and time.monotonic() < deadline:
                    time.sleep(0.01)

            await asyncio.to_thread(first_sentence)

    asyncio.run(hang_up())
    wait_for_hang_up(daemon)
    pace.release(2)  # enough for the rest of the text, should synthesis go on
    failed = wyoming_event(daemon, "failed")
    assert failed["reason"] == "client disconnected"
    assert daemon.wait_event("playing", "done")["audio_ms"] == 2000
    assert engine.sentences[1] == "One" and "Three" not in engine.sentences
    assert daemon.service.queue.states(failed["id"]) == ["failed"]


def test_audio_start_is_sent_once_the_request_is_started(wyoming_daemon) -> None:
    """A request waiting in the queue gets nothing yet: Home Assistant's timeout runs from audio-start."""
    gate = threading.Event()
    engine = ToneEngine(seconds=0.1, gate=gate)
    daemon, connect = wyoming_daemon(engine)
    daemon.say({"id": "first", "text": "Blocking the engine."})
    daemon.wait_event("first", "started")

    async def talk() -> tuple[bool, str, Answer]:
        async with connect() as client:
            await client.write_event(Synthesize(text="When it is my turn.").event())
            queued = await asyncio.to_thread(wyoming_event, daemon, "queued")
            try:
                early = await asyncio.wait_for(client.read_event(), 1.0)
            except TimeoutError:
                early = None
            gate.set()
            answer = await read_until(client, AudioStop)
            return early is None, queued["id"], answer

    try:
        nothing_early, request_id, answer = asyncio.run(talk())
    finally:
        gate.set()
    assert nothing_early, "the client heard from a request still waiting in the queue"
    assert answer.types == ["audio-start", "audio-stop"]
    daemon.wait_event(request_id, "done")
    assert [e["event"] for e in daemon.events(request_id)] == ["queued", "started", "first_audio", "done"]


def test_unix_socket(start_daemon, tmp_path: Path) -> None:
    path = tmp_path / "wyoming.sock"
    start_daemon(ToneEngine(), wyoming={"uri": f"unix://{path}"})

    async def talk() -> Answer:
        async with AsyncUnixClient(path, connect_timeout=5, read_timeout=TIMEOUT_S) as client:
            return await synthesize(client, "Over a socket.")

    assert asyncio.run(talk()).types == ["audio-start", "audio-stop"]


# -- configuration ----------------------------------------------------------------------------------


def test_off_by_default_and_validated(tmp_path: Path) -> None:
    wyoming = Settings().wyoming
    assert wyoming.uri is None and not wyoming.zeroconf and wyoming.priority == "normal"
    for bad in ({"uri": "tcp://0.0.0.0"}, {"uri": "http://x:10200"}, {"zeroconf": True},
                {"uri": "unix:///run/x.sock", "zeroconf": True}, {"samples_per_chunk": 0}):  # fmt: skip
        path = tmp_path / "bad.toml"
        path.write_text(to_toml({"wyoming": bad}))
        with pytest.raises(ConfigError, match="wyoming"):
            load_settings(path)
    path.write_text(to_toml({"wyoming": {"uri": "tcp://0.0.0.0:10200", "zeroconf": True}}))
    assert load_settings(path).wyoming.zeroconf


def test_a_port_in_use_stops_start_up(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "config.toml"
        path.write_text(f'state_dir = "{tmp_path}"\n' + to_toml({"wyoming": {"uri": f"tcp://127.0.0.1:{port}"}}))
        service = Service(load_settings(path), engine=ToneEngine())
        assert service.wyoming is not None
        with pytest.raises(ConfigError, match="wyoming.uri"):
            service.start()
        service.stop()


def test_complete_sentences() -> None:
    assert complete_sentences("Hello there. It costs 3.5 euro") == (["Hello there."], "It costs 3.5 euro")
    assert complete_sentences("Done!\nNext") == (["Done!"], "Next")
    assert complete_sentences("“Quoted.” Then") == (["“Quoted.”"], "Then")
    assert complete_sentences("你好。今天天气") == (["你好。"], "今天天气")
    assert complete_sentences("No end yet.") == ([], "No end yet.")
