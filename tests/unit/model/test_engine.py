"""The engine end to end on the demo bundle: voices, synthesis, streaming, and every bad input."""

from __future__ import annotations

import io
import json
import math
import shutil
import socket
import wave
from itertools import islice
from pathlib import Path

import numpy as np
import pytest

from daemon.audio.wav import AudioError
from daemon.commands.cli import main as cli_main
from daemon.model.bundle import Bundle, BundleError
from daemon.model.engine import Engine, SynthesisOptions
from daemon.model.hardware import HardwareProfile
from daemon.model.voices import VoiceError
from daemon.speech.synthesizer import Sampling, SynthesisError, UnknownVoice

MIXED = "各位旅客请注意，开往上海的G12次列车即将进站。Please stand behind the yellow line. 谢谢合作！"


def make_wav(seconds: float = 4.0, rate: int = 22050, amplitude: float = 0.3, channels: int = 1,
             seed: int = 0) -> bytes:
    """A voiced-sounding test clip: a 150 Hz buzz with syllable-rate modulation and a little noise."""
    t = np.arange(int(seconds * rate)) / rate
    x = amplitude * np.sin(2 * np.pi * 150 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2
    x += amplitude * 0.07 * np.random.default_rng(seed).standard_normal(len(t))
    frames = np.repeat(x[:, None], channels, axis=1)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(frames, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


@pytest.fixture()
def engine(demo_bundle: Path, tmp_path: Path) -> Engine:  # noqa: F811
    return Engine(Bundle.load(demo_bundle), HardwareProfile.load("x86-cpu"), tmp_path / "state")


@pytest.fixture()
def voiced(engine: Engine) -> Engine:
    engine.register_voice("alice", make_wav(), "这是一段参考录音。", "zh")
    return engine


@pytest.fixture(scope="module")
def speaking(demo_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """``voiced`` registered once for the module, for tests that only synthesize with it; a test that registers,
    removes, patches or counts from zero takes its own ``voiced``."""
    engine = Engine(Bundle.load(demo_bundle), HardwareProfile.load("x86-cpu"), tmp_path_factory.mktemp("state"))
    engine.register_voice("alice", make_wav(), "这是一段参考录音。", "zh")
    return engine


def test_register_and_speak_mixed_paragraph(speaking: Engine) -> None:
    audio = np.concatenate(list(speaking.stream(MIXED, "alice", "zh", SynthesisOptions(seed=3))))
    seconds = len(audio) / speaking.sample_rate
    phones = sum(len(speaking.phones_and_bert(s, "zh")[0]) for s in speaking.segments(MIXED, "zh"))
    # semantic tokens are 25 Hz (40 ms); the decode is capped at 40 + 5 per phone, plus 0.3 s per pause
    assert 0.5 < seconds < (40 + 5 * phones) * 0.04 * len(speaking.segments(MIXED, "zh")) + 1
    assert audio.dtype == np.float32 and np.isfinite(audio).all() and np.abs(audio).max() <= 1.0
    assert np.abs(audio).max() > 0.001, "silence out"


def test_streaming_matches_whole_and_has_several_segments(speaking: Engine) -> None:
    chunks = list(speaking.stream(MIXED, "alice", "zh", SynthesisOptions(seed=7)))
    assert len(chunks) > 1
    again = np.concatenate(list(speaking.stream(MIXED, "alice", "zh", SynthesisOptions(seed=7))))
    np.testing.assert_array_equal(np.concatenate(chunks), again)
    other = np.concatenate(list(speaking.stream(MIXED, "alice", "zh", SynthesisOptions(seed=8))))
    assert other.shape != again.shape or not np.array_equal(other, again), "the seed has no effect"


def test_a_requests_own_sampling_reaches_the_decoder(speaking: Engine) -> None:
    """Through the daemon's interface: a seed repeats, another seed differs, a bad value is refused."""
    def say(sampling: Sampling) -> np.ndarray:
        return np.concatenate(list(speaking.synthesize("你好，世界。", "alice", "zh", 1.0, sampling)))

    seeded = say(Sampling(seed=7, temperature=0.8))
    np.testing.assert_array_equal(seeded, say(Sampling(seed=7, temperature=0.8)))
    other = say(Sampling(seed=8, temperature=0.8))
    assert other.shape != seeded.shape or not np.array_equal(other, seeded), "the seed has no effect"
    with pytest.raises(ValueError, match="top_p must be in"):
        Sampling(top_p=1.5)


def test_cached_voice_skips_hubert(voiced: Engine, demo_bundle: Path) -> None:  # noqa: F811
    fresh = Engine(Bundle.load(demo_bundle), HardwareProfile.load("x86-cpu"), voiced.state_dir)
    list(fresh.stream("你好，世界。", "alice", "zh", SynthesisOptions(seed=1)))
    assert fresh.graph_runs["hubert"] == 0 and fresh.graph_runs["sovits_extract_latent"] == 0
    assert fresh.graph_runs["sovits_decoder"] >= 1
    assert voiced.graph_runs["hubert"] == 1, "registration runs HuBERT exactly once"


def test_voice_list_and_remove(voiced: Engine) -> None:
    assert [v.name for v in voiced.voices()] == ["alice"]
    voiced.voices_store.remove("alice")
    with pytest.raises(UnknownVoice, match="alice"):
        list(voiced.stream("你好。", "alice", "zh"))


@pytest.mark.parametrize(
    "clip, message",
    [
        (make_wav(seconds=1.5), "1.50 s; it must be 3-10 s"),
        (make_wav(seconds=12.0), "12.00 s"),
        (make_wav(amplitude=0.0), "silent"),
        (make_wav(amplitude=5.0), "clipped"),
        (b"not a wav at all", "not a WAV file"),
        (make_wav()[:-40000], "truncated"),
        (b"RIFF\x10\x00\x00\x00WAVEfmt ", "no 'fmt ' chunk"),
    ],
    ids=["short", "long", "silent", "clipped", "not-wav", "truncated", "broken-header"],
)
def test_bad_reference_clips(engine: Engine, clip: bytes, message: str) -> None:
    with pytest.raises(AudioError, match=message):
        engine.register_voice("bad", clip, "参考文本。", "zh", clip_name="ref.wav")
    assert not engine.voices_store.exists("bad"), "a failed registration left a voice behind"


def test_stereo_44k_clip_is_accepted(engine: Engine) -> None:
    voice = engine.register_voice("stereo", make_wav(rate=44100, channels=2), "Hello there, this is me.", "en")
    assert voice.meta.seconds == pytest.approx(4.0, abs=0.01)


@pytest.mark.parametrize("name", ["../etc", "a/b", "x+", "#", "", "a" * 65, "bad\0name", "carol\n"])
def test_bad_voice_names(engine: Engine, name: str) -> None:
    with pytest.raises(VoiceError, match="invalid"):
        engine.register_voice(name, make_wav(), "参考文本。", "zh")


def test_bad_text(speaking: Engine) -> None:
    with pytest.raises(SynthesisError, match="empty"):
        list(speaking.stream("   ", "alice", "zh"))
    with pytest.raises(SynthesisError, match="limit"):
        list(speaking.stream("长" * 6000, "alice", "zh"))
    with pytest.raises(ValueError, match="speed"):
        SynthesisOptions(speed=9.0)


@pytest.mark.converter  # builds a second bundle from checkpoints
def test_voice_from_another_bundle_is_refused(voiced: Engine, tmp_path: Path) -> None:
    from quantize.demo import make_demo

    other = make_demo(tmp_path / "other", seed=99, log=lambda _msg: None)
    engine2 = Engine(Bundle.load(other), HardwareProfile.load("x86-cpu"), voiced.state_dir)
    assert engine2.bundle.digest != voiced.bundle.digest
    with pytest.raises(VoiceError, match="made for bundle"):
        list(engine2.stream("你好。", "alice", "zh"))
    assert engine2.voices() == [], "a voice of another bundle is not offered"
    with pytest.raises(VoiceError, match="registered for another bundle"):
        engine2.remove_voice("alice")
    assert [v.name for v in voiced.voices()] == ["alice"], "nor removed through this bundle"


def test_tampered_graph_is_refused(demo_bundle: Path, tmp_path: Path) -> None:  # noqa: F811
    other = tmp_path / "other"
    shutil.copytree(demo_bundle, other)
    data = bytearray((other / "t2s_step.onnx").read_bytes())
    data[-10] ^= 0xFF
    (other / "t2s_step.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="t2s_step.onnx: SHA-256"):
        Bundle.load(other)
    (other / "t2s_step.onnx").write_bytes(bytes(data[:-100]))
    with pytest.raises(BundleError, match="t2s_step.onnx: size"):
        Bundle.load(other)


def test_graph_weights_live_beside_each_graph_and_are_verified(demo_bundle: Path, tmp_path: Path) -> None:  # noqa: F811
    """Every graph keeps its weights in ``<graph>.onnx.data`` (memory-mapped by onnxruntime); the manifest pins
    that file too, so a truncated, altered or missing weights file is refused with its name."""
    import onnx

    bundle = Bundle.load(demo_bundle)
    for name, graph in bundle.graphs.items():
        assert graph.data and graph.data.file == f"{graph.file}.data", name
        model = onnx.load(str(demo_bundle / graph.file), load_external_data=False)
        inline = [t.name for t in model.graph.initializer
                  if t.data_location != onnx.TensorProto.EXTERNAL and len(t.raw_data) >= 1024]
        assert not inline, f"{name}: weights left in the graph file: {inline[:3]}"
        assert graph.size == graph.bytes + (demo_bundle / graph.data.file).stat().st_size
    other = tmp_path / "other"
    shutil.copytree(demo_bundle, other)
    weights = other / "t2s_step.onnx.data"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="t2s_step.onnx.data: SHA-256"):
        Bundle.load(other)
    weights.write_bytes(bytes(data[:-100]))
    with pytest.raises(BundleError, match="t2s_step.onnx.data: size"):
        Bundle.load(other)
    weights.unlink()
    with pytest.raises(BundleError, match="t2s_step.onnx.data: weights of graph 't2s_step'.*missing"):
        Bundle.load(other)


def test_bundle_errors_name_the_file(demo_bundle: Path, tmp_path: Path) -> None:  # noqa: F811
    broken = tmp_path / "broken"
    shutil.copytree(demo_bundle, broken)
    (broken / "sovits_decoder.onnx").unlink()
    with pytest.raises(BundleError, match="sovits_decoder.onnx.*missing"):
        Bundle.load(broken)
    old = json.loads((demo_bundle / "manifest.json").read_text())
    old["format_version"] = 1
    (broken / "manifest.json").write_text(json.dumps(old))
    with pytest.raises(BundleError, match="format_version 1 is not supported.*convert the model again"):
        Bundle.load(broken)
    (broken / "manifest.json").write_text("{ nope")
    with pytest.raises(BundleError, match="manifest.json: not valid JSON"):
        Bundle.load(broken)
    with pytest.raises(BundleError, match="not found"):
        Bundle.load(tmp_path / "nowhere")


def test_say_cli_with_network_blocked(demo_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
                                      capsys: pytest.CaptureFixture) -> None:
    """The whole say path (settings, bundle, front end, voice, synthesis, WAV) attempts no connection."""
    attempts: list = []

    def refuse(self, *args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted during synthesis")

    for name in ("connect", "connect_ex", "sendto"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setenv("GSV_EDGE_STATE_DIR", str(tmp_path / "state"))
    ref = tmp_path / "ref.wav"
    ref.write_bytes(make_wav())
    common = ["--bundle", str(demo_bundle), "--config", str(tmp_path / "none.toml")]
    (tmp_path / "none.toml").write_text("")
    assert cli_main(["voice", "add", "bob", "--ref", str(ref), "--text", "Good morning.", "--lang", "en", *common]) == 0
    out = tmp_path / "out.wav"
    assert cli_main(["say", MIXED, "--voice", "bob", "--lang", "zh", "-o", str(out), "--seed", "1", *common]) == 0
    with wave.open(str(out)) as w:
        assert w.getframerate() == 32000 and w.getnchannels() == 1 and w.getsampwidth() == 2
        assert w.getnframes() > 32000 // 2
    assert attempts == []
    assert cli_main(["say", "hi", "--voice", "nobody", "-o", str(out), *common]) == 3
    assert "unknown voice 'nobody'" in capsys.readouterr().err
    assert cli_main(["say", "hi", "--voice", "bob", "-o", str(out), "--bundle", str(tmp_path / "nope"),
                     "--config", str(tmp_path / "none.toml")]) == 4


def test_lexicon_from_config_changes_pronunciation(demo_bundle: Path, tmp_path: Path,  # noqa: F811
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """``engine.lexicon`` reaches the front end of the engine that ``say`` builds."""
    from daemon.commands.engine_options import build_engine

    lex = tmp_path / "lexicon.tsv"
    lex.write_text("gizmo\tG IH1 Z M OW0\n")
    config = tmp_path / "config.toml"
    config.write_text(f'[engine]\nbundle = "{demo_bundle}"\nlexicon = "{lex}"\n')
    monkeypatch.setenv("GSV_EDGE_STATE_DIR", str(tmp_path / "state"))
    args = type("Args", (), {"config": config, "bundle": None, "profile": None})()
    engine = build_engine(args)
    _, _, result = engine.phones_and_bert("A gizmo.", "en")
    assert "G IH1 Z M OW0" in " ".join(result.phones)
    engine.lexicon = None
    _, _, plain = engine.phones_and_bert("A gizmo.", "en")
    assert "G IH1 Z M OW0" not in " ".join(plain.phones), "the test word must differ without the lexicon"


def test_chunk_sizes_start_short_and_grow_to_the_chunk() -> None:
    """A quarter-size first chunk (never under FIRST_CHUNK_TOKENS), then growth by at most CHUNK_GROWTH per
    chunk, capped at chunk_tokens."""
    from daemon.model.engine import CHUNK_GROWTH, FIRST_CHUNK_TOKENS, MIN_CHUNK_TOKENS, chunk_sizes

    assert list(islice(chunk_sizes(25), 6)) == [6, 9, 14, 21, 25, 25]
    for chunk in (MIN_CHUNK_TOKENS, 20, 25, 50, 100, 500):
        sizes = list(islice(chunk_sizes(chunk), 40))
        assert sizes[0] == min(chunk, max(FIRST_CHUNK_TOKENS, chunk // 4))
        assert all(a <= b <= math.ceil(a * CHUNK_GROWTH) for a, b in zip(sizes, sizes[1:], strict=False))
        assert sizes[-1] == chunk, f"chunk_tokens={chunk} never reached"


def test_chunked_streaming_starts_early_and_keeps_the_tokens(speaking: Engine) -> None:
    """chunk_tokens vocodes while decoding: more, shorter pieces following chunk_sizes; same tokens, so about
    the same length."""
    from daemon.model.engine import chunk_sizes

    text = "Please stand behind the yellow line."
    whole = list(speaking.stream(text, "alice", "en", SynthesisOptions(seed=5)))
    runs_before = speaking.graph_runs["sovits_decoder"]
    pieces = speaking.stream(text, "alice", "en", SynthesisOptions(seed=5, chunk_tokens=20))
    first = next(pieces)
    assert speaking.graph_runs["sovits_decoder"] == runs_before + 1, "first audio after one chunk is vocoded"
    rest = list(pieces)
    per_token = 2 * 640  # two 20 ms latent frames of 640 samples per 25 Hz token
    fade = int(speaking.sample_rate * 0.01)
    sizes = list(islice(chunk_sizes(20), len(rest)))
    # the first chunk (6 tokens) minus the cross-fade tail held back for the next one; each later full chunk
    # gives back the held tail and holds its own, so it is exactly its tokens long
    assert len(first) == sizes[0] * per_token - fade
    middle = rest[:-2]  # the segment's last, partial chunk and its pause follow
    assert len(middle) >= 3, "the test sentence must span several chunks"
    assert [len(p) for p in middle] == [s * per_token for s in sizes[1 : 1 + len(middle)]]
    chunked = np.concatenate([first, *rest])
    total = np.concatenate(whole)
    # same tokens; upstream's early-stop quirk drops one token from whole-segment decodes
    assert abs(len(chunked) - len(total)) <= per_token * len(whole)
    assert len(rest) + 1 > len(whole) and np.isfinite(chunked).all() and np.abs(chunked).max() <= 1.0
    with pytest.raises(ValueError, match="chunk_tokens"):
        SynthesisOptions(chunk_tokens=3)


def test_long_segments_are_vocoded_in_windows(voiced: Engine) -> None:
    """A segment longer than vocode_window_tokens goes through the vocoder window by window (bounded memory):
    no run sees more than a window plus context on both sides, the audio keeps every token's length, and,
    without noise, it matches the whole-segment decode (the context makes the seams exact)."""
    from daemon.model.engine import CHUNK_CONTEXT_TOKENS, PAUSE_SECONDS, VOCODE_WINDOW_TOKENS

    text = "Please stand behind the yellow line."
    options = SynthesisOptions(seed=5, noise_scale=0.0)
    pause = int(voiced.sample_rate * PAUSE_SECONDS)
    per_token = 2 * 640
    window = 16
    seen: list[int] = []
    run = voiced.run

    def recording(graph: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if graph == "sovits_decoder":
            seen.append(feeds["codes"].shape[-1])
        return run(graph, feeds)

    try:
        voiced.vocode_window_tokens = 10**6
        whole = list(voiced.stream(text, "alice", "en", options))
        tokens = (len(whole[0]) - pause) // per_token
        assert len(whole) == 1 and tokens > 2 * window, "the test sentence must be one segment of several windows"
        voiced.run, voiced.vocode_window_tokens = recording, window  # type: ignore[method-assign]
        windowed = list(voiced.stream(text, "alice", "en", options))
    finally:
        voiced.__dict__.pop("run", None)
        voiced.vocode_window_tokens = VOCODE_WINDOW_TOKENS
    assert len(seen) == -(-tokens // window) and max(seen) <= window + 2 * CHUNK_CONTEXT_TOKENS
    assert len(windowed) == len(seen) + 1 and not windowed[-1].any(), "the windows, then the segment's pause"
    audio, reference = np.concatenate(windowed), whole[0]
    assert len(audio) == len(reference), "same tokens, same length"
    snr = 10 * np.log10(np.sum(reference**2) / np.sum((audio - reference) ** 2))
    assert snr > 40, f"windowed vocoding differs from whole-segment: {snr:.1f} dB"


def test_building_a_bundle_is_all_or_nothing(demo_bundle: Path, tmp_path: Path) -> None:  # noqa: F811
    from daemon.model.bundle import building

    out = tmp_path / "made"
    with pytest.raises(RuntimeError), building(out) as work:
        shutil.copytree(demo_bundle, work, dirs_exist_ok=True)
        raise RuntimeError("interrupted half way")
    assert not out.exists() and not (tmp_path / "made.partial").exists()
    with pytest.raises(BundleError), building(out) as work:
        (work / "manifest.json").write_text("{}")  # not a bundle: refused, removed
    assert not out.exists() and not (tmp_path / "made.partial").exists()
    with building(out) as work:
        shutil.copytree(demo_bundle, work, dirs_exist_ok=True)
    assert Bundle.load(out).digest == Bundle.load(demo_bundle).digest


def test_inspect_groups_the_step_graphs_cache_inputs(demo_bundle: Path) -> None:  # noqa: F811
    from daemon.commands.inspect import describe_bundle

    text = describe_bundle(demo_bundle)
    step = next(line for line in text.splitlines() if line.strip().startswith("t2s_step"))
    n = Bundle.load(demo_bundle).manifest.t2s.n_layer
    assert f"past_key_0..{n - 1}[" in step and f"past_value_0..{n - 1}[" in step
    assert "past_key_1[" not in step and "seqlens_k['batch']" in step


ANNOUNCEMENT = ("Attention please. The train to the airport leaves from platform two. It is running ten minutes late. "
                "Please mind the gap. Thank you for travelling with us.")


@pytest.mark.parametrize(("precision", "kv_cache"), [("fp32", "fp32"), ("int8", "fp32"), ("int8", "int8-shared")])
def test_the_sentences_of_one_text_decode_together_with_the_audio_of_each_alone(
        demo_bundle: Path, tmp_path: Path, precision: str, kv_cache: str) -> None:
    """A five-sentence text decodes its first sentence alone and the others side by side (``max_batch`` 3, so the
    fifth joins when one stops), and speaks exactly what the same engine speaks with batching off; also with the
    int8 K/V cache whose scales every request shares."""
    from quantize.quantization import quantize_bundle

    path = demo_bundle
    if precision == "int8":
        path = tmp_path / "int8"
        quantize_bundle(demo_bundle, path, "int8", fidelity=False, log=lambda _msg: None, kv_cache=kv_cache)
    profile = HardwareProfile.load("x86-cpu")
    batched = Engine(Bundle.load(path), profile, tmp_path / "state", max_batch=3)
    alone = Engine(Bundle.load(path), profile, tmp_path / "state", max_batch=1)
    batched.register_voice("alice", make_wav(), "This is a reference recording.", "en")
    assert batched.t2s.batchable and len(batched.segments(ANNOUNCEMENT, "en")) == 5
    assert alone.t2s.batch_session is (None if precision == "int8" else alone.t2s.step_session)
    done: list[int] = []
    together = list(batched.stream(ANNOUNCEMENT, "alice", "en", SynthesisOptions(seed=3),
                                   on_segment=lambda i, _n: done.append(i)))
    one_by_one = list(alone.stream(ANNOUNCEMENT, "alice", "en", SynthesisOptions(seed=3)))
    assert done == [0, 1, 2, 3, 4]
    assert max(batched.t2s.batch_steps) == 3 and not alone.t2s.batch_steps
    assert len(together) == len(one_by_one)
    for a, b in zip(together, one_by_one, strict=True):
        np.testing.assert_array_equal(a, b)
