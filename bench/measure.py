"""One bundle measured through the normal engine, in a process of its own so peak RSS is this bundle's.

``python -m bench.measure voice BUNDLE STATE`` registers the benchmark voice (HuBERT runs here, once, as
``gsv-edge voice add`` would); ``python -m bench.measure run BUNDLE STATE --out FILE.json`` loads only what
synthesis needs and measures. Printed numbers are medians of per-step times and minima of repeated runs, so
other load on the machine shows less.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import workload as w
from daemon.audio.wav import encode_wav
from daemon.model.bundle import Bundle
from daemon.model.engine import PAUSE_SECONDS, Engine, SynthesisOptions
from daemon.model.hardware import CPU, CUDA, HardwareProfile, use_global_thread_pool
from daemon.model.sampling import SamplingParams
from daemon.model.t2s import Decode, DecodeBatch

VOICE = "bench"


def profile(threads: int, provider: str) -> HardwareProfile:
    """The measuring process's profile; its sessions share one thread pool, as in ``gsv-edge serve``."""
    providers = [CUDA, CPU] if provider == "cuda" else [CPU]
    hardware = HardwareProfile(name=f"bench-{provider}", providers=providers, intra_op_threads=threads,
                               inter_op_threads=1)
    use_global_thread_pool(hardware)
    return hardware


def register(bundle: Path, state: Path, threads: int, provider: str) -> None:
    engine = Engine(Bundle.load(bundle), profile(threads, provider), state)
    engine.register_voice(VOICE, encode_wav(w.reference_clip(), w.SAMPLE_RATE), w.PROMPT_TEXT, w.LANG)


def peak_rss_mb() -> float:
    """This process's peak resident set. VmHWM, not getrusage: ru_maxrss survives exec, so a child would
    report its parent's peak when that was higher."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed_decode(engine: Engine, phones: np.ndarray, bert: np.ndarray, prompt: np.ndarray, steps: int
                 ) -> tuple[np.ndarray, list[float], float]:
    """Semantic tokens, seconds per KV-cache step (each including sampling and the cache write), and the
    seconds to the first token (prefill + first sample)."""
    marks: list[float] = []
    t0 = time.perf_counter()
    run = Decode(engine.t2s, phones, bert, prompt, SamplingParams(), np.random.default_rng(0), early_stop_num=steps)
    for _ in run:
        marks.append(time.perf_counter())
    result = run.result
    if result.stopped_by != "early_stop":
        raise RuntimeError(f"decode stopped by {result.stopped_by} after {len(marks)} steps; the benchmark "
                           "needs a fixed step count (random weights that never emit EOS)")
    return result.semantic, list(np.diff(marks)), marks[0] - t0


def first_chunk(engine: Engine, text: str, voice) -> float:
    """Seconds until ``engine.stream`` yields its first audio: the whole one-sentence segment."""
    t0 = time.perf_counter()
    next(iter(engine.stream(text, voice, w.LANG, SynthesisOptions(seed=0))))
    return time.perf_counter() - t0


def chunked_playback(engine: Engine, text: str, voice, chunk_tokens: int) -> tuple[float, float]:
    """Seconds to the first chunk of a chunked stream, and the seconds playback would stall after it: a
    player that starts with the first chunk and plays in real time waits whenever a chunk arrives after the
    audio before it has run out. Shows whether a short first chunk buys latency at the price of gaps."""
    t0 = time.perf_counter()
    first, stalled, play_end = None, 0.0, 0.0
    for chunk in engine.stream(text, voice, w.LANG, SynthesisOptions(seed=0, chunk_tokens=chunk_tokens)):
        now = time.perf_counter()
        if first is None:
            first, play_end = now - t0, now
        stalled += max(0.0, now - play_end)
        play_end = max(play_end, now) + chunk.size / engine.sample_rate
    assert first is not None
    return first, stalled


def tokens_per_second(engine: Engine, phones: np.ndarray, bert: np.ndarray, prompt: np.ndarray, batch: int,
                      steps: int) -> float:
    """T2S tokens per second with ``batch`` decodes of ``steps`` tokens stepping together (prefills excluded)."""
    runs = [Decode(engine.t2s, phones, bert, prompt, SamplingParams(), np.random.default_rng(i), early_stop_num=steps)
            for i in range(batch)]
    together = DecodeBatch(engine.t2s)
    for run in runs:
        together.join(run)
    t0 = time.perf_counter()
    while len(together):
        together.step()
    return batch * (steps - 1) / (time.perf_counter() - t0)


def in_threads(work: list) -> list:
    """Each callable in a thread of its own, all started together, as the daemon's publish lanes run requests;
    their results in order."""
    results: list = [None] * len(work)

    def run(i: int) -> None:
        results[i] = work[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(work))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def spoken(engine: Engine, voice, text: str, seed: int, background: bool, chunk_tokens: int = 0
           ) -> tuple[float, int]:
    """Seconds to the first audio of ``text`` through ``engine.stream``, and the samples of speech."""
    t0 = time.perf_counter()
    first, samples = None, 0
    options = SynthesisOptions(seed=seed, background=background, chunk_tokens=chunk_tokens)
    for chunk in engine.stream(text, voice, w.LANG, options):
        first = first or time.perf_counter() - t0
        samples += chunk.size
    assert first is not None
    return first, samples - round(PAUSE_SECONDS * engine.sample_rate) * len(engine.segments(text, w.LANG))


def concurrent_audio(engine: Engine, voice, requests: int) -> float:
    """Audio seconds per wall second with ``requests`` one-sentence requests synthesised at once (in the
    background, as publish lanes do): their decodes meet in the engine's loop, their vocoding runs in their threads."""
    t0 = time.perf_counter()
    done = in_threads([lambda i=i: spoken(engine, voice, w.SENTENCE, i, True) for i in range(requests)])
    return sum(samples for _, samples in done) / engine.sample_rate / (time.perf_counter() - t0)


def first_audio_under_load(engine: Engine, voice, load: int, chunk_tokens: int = 0) -> float:
    """Seconds to the first audio of a one-sentence request for the speaker (streamed in chunks of
    ``chunk_tokens``, or whole) that arrives while ``load`` one-sentence background requests are decoding."""
    loop = engine.decodes
    assert loop is not None
    started = loop.steps[False]
    background = threading.Thread(target=in_threads, args=(
        [lambda i=i: spoken(engine, voice, w.SENTENCE, 100 + i, True) for i in range(load)],))
    background.start()
    while loop.steps[False] < started + 5 and background.is_alive():  # the background batch is running
        time.sleep(0.001)
    first, _ = spoken(engine, voice, w.SENTENCE, 0, False, chunk_tokens)
    background.join()
    return first


def throughput(engine: Engine, voice, phones: np.ndarray, bert: np.ndarray, prompt: np.ndarray, steps: int,
               repeats: int) -> dict[str, Any]:
    """The batching figures (docs/performance.md#batching): T2S tokens per second per batch size; audio seconds
    per wall second with 1, 2, 4 and 8 one-sentence requests at once; the five-sentence announcement end to end
    with its sentences decoded side by side against one by one; and the first audio of a request for the speaker,
    whole and streamed in chunks, while four background requests decode, against the same request alone."""
    loop = engine.decodes
    if loop is None:
        return {"batchable": False}
    tokens = {str(b): max(tokens_per_second(engine, phones, bert, prompt, b, steps) for _ in range(repeats))
              for b in w.BATCH_SIZES}
    engine.max_tokens = w.SENTENCE_STEPS // 2  # random weights never stop: each sentence gets this many tokens
    audio = {str(n): max(concurrent_audio(engine, voice, n) for _ in range(repeats)) for n in w.BATCH_SIZES}
    first_audio = {}
    for name, chunk in (("", 0), ("_chunked", w.STREAM_CHUNK)):
        first_audio[f"first_audio{name}_idle_ms"] = 1000 * min(
            spoken(engine, voice, w.SENTENCE, 0, False, chunk)[0] for _ in range(repeats))
        first_audio[f"first_audio{name}_under_load_ms"] = 1000 * min(
            first_audio_under_load(engine, voice, w.LOAD_REQUESTS, chunk) for _ in range(repeats))

    def announcement(batched: bool) -> tuple[float, float]:
        """Seconds to the first audio and to the end."""
        engine.decodes = loop if batched else None
        t0 = time.perf_counter()
        first = None
        for _ in engine.stream(w.ANNOUNCEMENT, voice, w.LANG, SynthesisOptions(seed=0)):
            first = first or time.perf_counter() - t0
        engine.decodes = loop
        return first, time.perf_counter() - t0

    runs = {"sequential": [announcement(False) for _ in range(repeats)],
            "batched": [announcement(True) for _ in range(repeats)]}
    total = {k: min(end for _, end in v) for k, v in runs.items()}
    return {"t2s_tokens_per_s": tokens, "e2e_audio_s_per_s": audio,
            "e2e_speedup_4": audio["4"] / audio["1"], "five_sentence_s": total,
            "five_sentence_first_audio_ms": {k: 1000 * min(first for first, _ in v) for k, v in runs.items()},
            "five_sentence_speedup": total["sequential"] / total["batched"], **first_audio}


def measure(bundle_dir: Path, state: Path, threads: int, provider: str, steps: int, repeats: int
            ) -> dict[str, Any]:
    bundle = Bundle.load(bundle_dir)
    engine = Engine(bundle, profile(threads, provider), state, max_batch=max(w.BATCH_SIZES))
    voice = engine.voice(VOICE)
    phone_ids, bert, _ = engine.phones_and_bert(w.LONG_TEXT, w.LANG)
    phones = np.concatenate([voice.prompt_phone_ids, phone_ids])[None]
    all_bert = np.concatenate([voice.prompt_bert, bert], axis=1)[None]
    prompt = voice.prompt_tokens[None]
    rng = np.random.default_rng(0)

    timed_decode(engine, phones, all_bert, prompt, 12)  # warm-up: sessions, arenas, first-run costs
    engine.decode_audio(np.zeros(8, np.int64), phone_ids, voice.ge, 1.0, 0.5, rng)

    feeds = {"phone_ids": phones, "bert": all_bert, "prompt": prompt}
    prefill = []
    for _ in range(3 * repeats):
        t0 = time.perf_counter()
        engine.t2s.prefill_session.run(None, feeds)
        prefill.append(time.perf_counter() - t0)

    per_step = None
    for _ in range(repeats):
        tokens, times, _ = timed_decode(engine, phones, all_bert, prompt, steps)
        per_step = times if per_step is None else list(np.minimum(per_step, times))

    vocoder = []  # as the engine vocodes a segment: in windows beyond engine.vocode_window_tokens
    for _ in range(repeats):
        t0 = time.perf_counter()
        audio = np.concatenate(list(engine.vocode(tokens, phone_ids, voice, SynthesisOptions(), rng)))
        vocoder.append(time.perf_counter() - t0)
    audio_seconds = audio.size / engine.sample_rate

    # End to end through Engine.stream: text front end, prefill, `steps` decode steps, SoVITS decoder.
    engine.max_tokens = steps
    e2e = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        samples = sum(chunk.size for chunk in engine.stream(w.LONG_TEXT, voice, w.LANG, SynthesisOptions(seed=0)))
        e2e.append((time.perf_counter() - t0) / (samples / engine.sample_rate - PAUSE_SECONDS))

    engine.max_tokens = w.SENTENCE_STEPS
    first = min(first_chunk(engine, w.SENTENCE, voice) for _ in range(repeats))

    # Chunked streaming through the engine (engine.stream_chunk_tokens = STREAM_CHUNK), played in real time.
    chunked = [chunked_playback(engine, w.SENTENCE, voice, w.STREAM_CHUNK) for _ in range(repeats)]

    batching = throughput(engine, voice, phones, all_bert, prompt, w.QUICK_STEPS, repeats)

    return {
        "throughput": batching,
        "prefill_ms": 1000 * float(np.median(prefill)),
        "decode_ms_per_step": 1000 * float(np.median(per_step)),
        "vocoder_rtf": min(vocoder) / audio_seconds,
        "rtf_e2e": min(e2e),
        "first_audio_ms": 1000 * first,
        "first_audio_chunked_ms": 1000 * min(first for first, _ in chunked),
        "stall_chunked_ms": 1000 * min(stall for _, stall in chunked),
        "peak_rss_mb": peak_rss_mb(),
        "bundle_mb": sum(g.size for g in bundle.graphs.values()) / 1e6,
        "audio_seconds": audio_seconds,
        "kv_start": int(phones.shape[1] + prompt.shape[1]),
        "per_step_ms": [1000 * t for t in per_step],
        "provider": engine.provider,
        "load_average": os.getloadavg()[0],
        "graph_runs": dict(engine.graph_runs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("action", choices=("voice", "run"))
    parser.add_argument("bundle", type=Path)
    parser.add_argument("state", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--provider", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--steps", type=int, default=w.STEPS)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.action == "voice":
        register(args.bundle, args.state, args.threads, args.provider)
        return 0
    result = measure(args.bundle, args.state, args.threads, args.provider, args.steps, args.repeats)
    text = json.dumps(result)
    if args.out:
        args.out.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
