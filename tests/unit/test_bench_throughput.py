"""``bench.measure``'s ``throughput`` section on the demo bundle: the keys scripts read, each a measured figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench import workload as w
from bench.measure import throughput
from daemon.audio.wav import encode_wav
from daemon.model.bundle import Bundle
from daemon.model.engine import Engine
from daemon.model.hardware import CPU, HardwareProfile


def test_throughput_names_every_batch_size_concurrency_and_first_audio(demo_bundle: Path, tmp_path: Path) -> None:
    # bench.measure.profile's, without its process-wide thread pool (the sessions of later tests could not start)
    hardware = HardwareProfile(name="bench-cpu", providers=[CPU], intra_op_threads=2, inter_op_threads=1)
    engine = Engine(Bundle.load(demo_bundle), hardware, tmp_path, max_batch=max(w.BATCH_SIZES))
    voice = engine.register_voice("bench", encode_wav(w.reference_clip(), w.SAMPLE_RATE), w.PROMPT_TEXT, w.LANG)
    phone_ids, bert, _ = engine.phones_and_bert(w.SENTENCE, w.LANG)
    phones = np.concatenate([voice.prompt_phone_ids, phone_ids])[None]
    all_bert = np.concatenate([voice.prompt_bert, bert], axis=1)[None]
    result = throughput(engine, voice, phones, all_bert, voice.prompt_tokens[None], steps=20, repeats=1)
    assert set(result["t2s_tokens_per_s"]) == {"1", "2", "4", "8"}
    assert all(v > 0 for v in result["t2s_tokens_per_s"].values())
    assert result["five_sentence_speedup"] == (result["five_sentence_s"]["sequential"]
                                               / result["five_sentence_s"]["batched"])
    assert set(result["five_sentence_first_audio_ms"]) == {"sequential", "batched"}
    assert set(result["e2e_audio_s_per_s"]) == {"1", "2", "4", "8"}
    assert all(v > 0 for v in result["e2e_audio_s_per_s"].values())
    assert result["e2e_speedup_4"] == result["e2e_audio_s_per_s"]["4"] / result["e2e_audio_s_per_s"]["1"]
    assert all(result[f"first_audio{kind}_{when}_ms"] > 0
               for kind in ("", "_chunked") for when in ("idle", "under_load"))
    assert max(engine.t2s.batch_steps) == max(w.BATCH_SIZES)
    assert engine.decodes is not None and engine.decodes.steps[False] > 0  # the requests decoded in the background
