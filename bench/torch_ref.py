"""The upstream-style reference: the project's own PyTorch modules in eager mode, run the way upstream's
``infer_panel`` runs them (K/V caches grown by ``torch.cat`` every step, torch sampling), in a process of its
own for peak RSS. Same workload as the ONNX measurement: same texts, clip length and step counts."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import workload as w
from bench.measure import peak_rss_mb
from daemon.frontend import text_to_phones
from daemon.model.spectrogram import decoded_frames, spectrogram
from quantize.checkpoint import read_gpt, read_sovits
from quantize.t2s import BERT_DIM, Text2SemanticDecoder, cache_length, grown, logits_to_probs
from quantize.vits import load_sovits

PROMPT_TOKENS_PER_SECOND = 25


class Reference:
    def __init__(self, gpt: Path, sovits: Path):
        ckpt = read_gpt(gpt)
        self.t2s, _ = Text2SemanticDecoder.from_checkpoint(ckpt.weights, ckpt.config)
        s = read_sovits(sovits)
        self.vits = load_sovits(s.weights, s.config, s.version)
        clip = torch.from_numpy(spectrogram(w.reference_clip()))
        with torch.no_grad():
            self.ge = self.vits.ref_style(clip)
        n_prompt = int((w.REFERENCE_SECONDS + 0.3) * PROMPT_TOKENS_PER_SECOND)  # clip + upstream's 0.3 s pad
        self.prompt = torch.randint(0, 1024, (1, n_prompt), generator=torch.Generator().manual_seed(0))
        self.prompt_phones = self.phones(w.PROMPT_TEXT)

    @staticmethod
    def phones(text: str) -> torch.Tensor:
        return torch.tensor(text_to_phones(text, w.LANG, None).phone_ids, dtype=torch.long)

    @torch.no_grad()
    def decode(self, target: torch.Tensor, steps: int) -> tuple[torch.Tensor, list[float], float]:
        """Upstream's loop: prefill, then per step one token through the model with caches concatenated."""
        phones = torch.cat([self.prompt_phones, target])[None]
        bert = torch.zeros(1, BERT_DIM, phones.shape[1])
        t0 = time.perf_counter()
        logits, ks, vs = self.t2s.prefill(phones, bert, self.prompt)
        prefill = time.perf_counter() - t0
        y = self.prompt.clone()
        times = []
        for idx in range(steps):
            t0 = time.perf_counter()
            if idx > 0:
                pos = torch.tensor([self.prompt.shape[1] + idx - 1])
                logits, ks, vs = self.t2s.step(y[:, -1:], pos, grown(ks), grown(vs), cache_length(ks))
            work = logits[:, :-1].clone()  # EOS sliced off at every step (upstream: first 11): fixed steps
            probs = logits_to_probs(work, y, 1.0, 15, 1.0, 1.35)
            token = torch.argmax(probs / torch.empty_like(probs).exponential_(1), dim=-1, keepdim=True)
            y = torch.cat([y, token], dim=1)
            if idx > 0:
                times.append(time.perf_counter() - t0)
        return y[0, self.prompt.shape[1]:], times, prefill

    @torch.no_grad()
    def vocode(self, tokens: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(1, self.vits.cfg.inter_channels, decoded_frames(len(tokens), 1.0))
        return self.vits.synthesize(tokens[None, None], target[None], self.ge, noise, 0.5).audio

    def speak(self, text: str, steps: int) -> torch.Tensor:
        """Text in, audio out, one segment: front end, decode, vocoder."""
        target = self.phones(text)
        tokens, _, _ = self.decode(target, steps)
        return self.vocode(tokens, target)


def measure(gpt: Path, sovits: Path, threads: int, steps: int, repeats: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    ref = Reference(gpt, sovits)
    target = ref.phones(w.LONG_TEXT)
    ref.decode(target, 12)
    ref.vocode(torch.zeros(8, dtype=torch.long), target)

    prefill, per_step = [], None
    for _ in range(repeats):
        tokens, times, p = ref.decode(target, steps)
        prefill.append(p)
        per_step = times if per_step is None else list(np.minimum(per_step, times))
    vocoder = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        audio = ref.vocode(tokens, target)
        vocoder.append(time.perf_counter() - t0)
    seconds = audio.numel() / ref.vits.cfg.sampling_rate
    e2e, first = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = ref.speak(w.LONG_TEXT, steps).numel()
        e2e.append((time.perf_counter() - t0) / (n / ref.vits.cfg.sampling_rate))
        t0 = time.perf_counter()
        ref.speak(w.SENTENCE, w.SENTENCE_STEPS)
        first.append(time.perf_counter() - t0)
    return {
        "prefill_ms": 1000 * min(prefill),
        "decode_ms_per_step": 1000 * float(np.median(per_step)),
        "vocoder_rtf": min(vocoder) / seconds,
        "rtf_e2e": min(e2e),
        "first_audio_ms": 1000 * min(first),
        "first_audio_chunked_ms": None,
        "stall_chunked_ms": None,
        "peak_rss_mb": peak_rss_mb(),
        "bundle_mb": None,
        "audio_seconds": seconds,
        "kv_start": int(len(ref.prompt_phones) + len(target) + ref.prompt.shape[1]),
        "per_step_ms": [1000 * t for t in per_step],
        "provider": f"torch {torch.__version__} eager",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gpt", type=Path, required=True)
    parser.add_argument("--sovits", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=w.STEPS)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.write_text(json.dumps(measure(args.gpt, args.sovits, args.threads, args.steps, args.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
