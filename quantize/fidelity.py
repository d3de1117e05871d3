"""How far a quantized bundle's outputs are from its fp32 source, on fixed seeded inputs.

The numbers go into the quantized bundle's manifest (``fidelity``) so the loss is recorded where the
bundle is, not in a log:

* text-to-semantic decoder, under teacher forcing: both bundles are fed the same token sequence (the fp32
  bundle's greedy choices), so one early difference cannot snowball; per step, the cosine similarity of the
  logits and whether the top-1 token agrees.
* SoVITS decoder: one waveform from identical inputs (codes, phones, style, noise); signal-to-noise ratio
  of the difference and the mean absolute log-mel distance.
* helper graphs (HuBERT, style, speaker embedding, RoBERTa): cosine similarity of their features; prompt
  codes: fraction identical.
* size per graph.

Runs on onnxruntime's CPU provider with numpy only, like the engine.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort

from daemon.model.bundle import Bundle
from daemon.model.manifest import BATCH_GRAPH, Fidelity, GraphSize
from daemon.model.t2s import StepBinding, cache_dtype, prefilled_cache
from daemon.vocabulary import PRO_VERSIONS

SEED = 20240611
T2S_STEPS = 32
T2S_PHONES = 24
T2S_PROMPT = 40
SOVITS_CODES = 50  # 2 s of audio
SOVITS_PHONES = 20
BERT_DIM = 1024
SSL_DIM = 768
MEL_BINS = 100
MEL_FLOOR = 1e-5


def graph_session(bundle: Bundle, graph: str) -> ort.InferenceSession:
    """One of the bundle's graphs on the CPU provider with default options (fidelity and calibration runs)."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(bundle.graph_path(graph)), sess_options=opts, providers=["CPUExecutionProvider"])


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / denom) if denom else float(np.array_equal(a, b))


def teacher_forced_logits(bundle: Bundle, phones: np.ndarray, bert: np.ndarray, prompt: np.ndarray,
                          tokens: list[int] | None, steps: int) -> tuple[np.ndarray, list[int]]:
    """Logits [steps, V] of the prefill and ``steps - 1`` KV-cache steps. Each step is fed ``tokens[i]``, or
    when ``tokens`` is None the greedy choice (EOS excluded), which is returned as the sequence fed."""
    prefill, step = graph_session(bundle, "t2s_prefill"), graph_session(bundle, "t2s_step")
    eos = bundle.manifest.t2s.eos
    feeds = {"phone_ids": phones, "bert": bert, "prompt": prompt}
    logits, cache = prefilled_cache(prefill, feeds, steps, cache_dtype(step))
    bound = StepBinding(step, cache, logits.shape[1])
    fed = list(tokens) if tokens is not None else []
    out = [logits[0]]
    for i in range(steps - 1):
        if tokens is None:
            fed.append(int(np.argmax(logits[0, :eos])))
        logits = bound.run(fed[i], prompt.shape[1] + i)
        out.append(logits[0].copy())
    return np.stack(out), fed


def t2s_fidelity(ref: Bundle, test: Bundle, rng: np.random.Generator, steps: int = T2S_STEPS) -> dict[str, Any]:
    cfg = ref.manifest.t2s
    phones = rng.integers(0, cfg.phoneme_vocab_size, (1, T2S_PHONES)).astype(np.int64)
    bert = (0.5 * rng.standard_normal((1, BERT_DIM, T2S_PHONES))).astype(np.float32)
    prompt = rng.integers(0, cfg.eos, (1, T2S_PROMPT)).astype(np.int64)
    want, fed = teacher_forced_logits(ref, phones, bert, prompt, None, steps)
    got, _ = teacher_forced_logits(test, phones, bert, prompt, fed, steps)
    cosines = [_cosine(w, g) for w, g in zip(want, got, strict=True)]
    agree = [int(np.argmax(w) == np.argmax(g)) for w, g in zip(want, got, strict=True)]
    return {
        "steps": steps,
        "logit_cosine_mean": float(np.mean(cosines)),
        "logit_cosine_min": float(np.min(cosines)),
        "top1_agreement": float(np.mean(agree)),
        "logit_max_abs_diff": float(np.abs(want - got).max()),
    }


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int = MEL_BINS) -> np.ndarray:
    """Triangular filters on the HTK mel scale, 0 Hz to Nyquist: [n_mels, n_fft // 2 + 1]."""
    def to_mel(hz):
        return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)

    def to_hz(mel):
        return 700.0 * (10.0 ** (np.asarray(mel) / 2595.0) - 1.0)

    edges = to_hz(np.linspace(0.0, to_mel(sample_rate / 2), n_mels + 2))
    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - lower) / (centre - lower)
    falling = (upper - freqs) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling))


def log_mel(audio: np.ndarray, sample_rate: int, n_fft: int, hop: int) -> np.ndarray:
    """Natural-log mel magnitude spectrogram [frames, MEL_BINS], floored at 1e-5."""
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(audio.astype(np.float64), n_fft // 2), n_fft)[::hop]
    mag = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=-1))
    return np.log(np.maximum(mag @ mel_filterbank(sample_rate, n_fft).T, MEL_FLOOR))


def snr_db(want: np.ndarray, got: np.ndarray) -> float:
    noise = float(np.sum((want.astype(np.float64) - got) ** 2))
    signal = float(np.sum(want.astype(np.float64) ** 2))
    return float("inf") if noise == 0 else 10.0 * np.log10(signal / noise)


def _ref_spectrogram(rng: np.random.Generator, bins: int, frames: int = 100) -> np.ndarray:
    return np.abs(rng.standard_normal((1, bins, frames))).astype(np.float32)


def style_feeds(bundle: Bundle, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``sovits_ref_style`` inputs: a random reference spectrogram (+ speaker embedding for v2Pro*)."""
    feeds = {"refer_spec": _ref_spectrogram(rng, bundle.manifest.sovits.spec_channels)}
    if bundle.model_version in PRO_VERSIONS:
        feeds["sv_emb"] = rng.standard_normal((1, 20480)).astype(np.float32)
    return feeds


def decoder_feeds(bundle: Bundle, rng: np.random.Generator, ge: np.ndarray, codes: int = SOVITS_CODES,
                  phones: int = SOVITS_PHONES) -> dict[str, np.ndarray]:
    """``sovits_decoder`` inputs: random codes and phones, the style ``ge``, noise at upstream's scale."""
    cfg = bundle.manifest.sovits
    return {
        "codes": rng.integers(0, 1024, (1, 1, codes)).astype(np.int64),
        "text": rng.integers(0, cfg.n_symbols, (1, phones)).astype(np.int64),
        "ge": ge,
        "noise": rng.standard_normal((1, cfg.inter_channels, 2 * codes)).astype(np.float32),
        "noise_scale": np.array([0.5], np.float32),
    }


def sovits_fidelity(ref: Bundle, test: Bundle, rng: np.random.Generator) -> dict[str, Any]:
    cfg = ref.manifest.sovits
    style = style_feeds(ref, rng)
    ge_ref = graph_session(ref, "sovits_ref_style").run(None, style)[0]
    ge_test = graph_session(test, "sovits_ref_style").run(None, style)[0]
    feeds = decoder_feeds(ref, rng, ge_ref)
    want = graph_session(ref, "sovits_decoder").run(None, feeds)[0].ravel()
    got = graph_session(test, "sovits_decoder").run(None, feeds)[0].ravel()
    sr, n_fft, hop = cfg.sampling_rate, cfg.filter_length, cfg.hop_length
    return {
        "sovits_decoder": {
            "seconds": round(want.size / sr, 3),
            "snr_db": snr_db(want, got),
            "log_mel_distance": float(np.mean(np.abs(log_mel(want, sr, n_fft, hop) - log_mel(got, sr, n_fft, hop)))),
        },
        "sovits_ref_style": {"cosine": _cosine(ge_ref, ge_test)},
    }


def helper_fidelity(ref: Bundle, test: Bundle, rng: np.random.Generator) -> dict[str, Any]:
    """Feature cosine of the graphs that run when a voice is registered or Chinese text is read."""
    report: dict[str, Any] = {}
    wav = (0.1 * rng.standard_normal((1, 3 * 16000))).astype(np.float32)
    ssl_ref = graph_session(ref, "hubert").run(None, {"wav16k": wav})[0] if ref.has("hubert") else None
    if ssl_ref is not None:
        ssl_test = graph_session(test, "hubert").run(None, {"wav16k": wav})[0]
        report["hubert"] = {"cosine": _cosine(ssl_ref, ssl_test)}
    ssl = ssl_ref if ssl_ref is not None else rng.standard_normal((1, SSL_DIM, 60)).astype(np.float32)
    codes_ref = graph_session(ref, "sovits_extract_latent").run(None, {"ssl_content": ssl})[0]
    codes_test = graph_session(test, "sovits_extract_latent").run(None, {"ssl_content": ssl})[0]
    report["sovits_extract_latent"] = {"codes_identical": float(np.mean(codes_ref == codes_test))}
    if ref.has("roberta"):
        ids = rng.integers(1, 21128, (1, 16)).astype(np.int64)
        report["roberta"] = {"cosine": _cosine(graph_session(ref, "roberta").run(None, {"input_ids": ids})[0],
                                               graph_session(test, "roberta").run(None, {"input_ids": ids})[0])}
    if ref.has("sv_embedding"):
        fbank = rng.standard_normal((1, 200, 80)).astype(np.float32)
        report["sv_embedding"] = {"cosine": _cosine(graph_session(ref, "sv_embedding").run(None, {"fbank": fbank})[0],
                                                    graph_session(test, "sv_embedding").run(None, {"fbank": fbank})[0])}
    return report


DERIVED_FROM = {BATCH_GRAPH: "t2s_step"}  # graphs a quantized bundle adds, and the graph each is made from


def measure_fidelity(ref: Bundle, test: Bundle, seed: int = SEED) -> Fidelity:
    """The ``fidelity`` section of ``test``'s manifest, measured against ``ref`` (its fp32 source)."""
    rng = np.random.default_rng(seed)
    graphs: dict[str, Any] = {"t2s": t2s_fidelity(ref, test, rng)}
    graphs.update(sovits_fidelity(ref, test, rng))
    graphs.update(helper_fidelity(ref, test, rng))
    sources = {name: ref.graphs[DERIVED_FROM.get(name, name)].size for name in test.graphs}
    sizes = {name: GraphSize(precision=info.precision, bytes=info.size, source_bytes=sources[name],
                             ratio=round(info.size / sources[name], 4))
             for name, info in test.graphs.items()}
    return Fidelity(reference=ref.digest, seed=seed, graphs=graphs, sizes=sizes)


def format_report(fidelity: Fidelity) -> str:
    """A few lines for the terminal."""
    g = fidelity.graphs
    t2s, voc = g["t2s"], g["sovits_decoder"]
    lines = [
        f"t2s decoder ({t2s['steps']} teacher-forced steps): logit cosine mean {t2s['logit_cosine_mean']:.5f} "
        f"min {t2s['logit_cosine_min']:.5f}, top-1 agreement {t2s['top1_agreement']:.1%}",
        f"sovits decoder ({voc['seconds']} s): SNR {voc['snr_db']:.1f} dB, log-mel distance "
        f"{voc['log_mel_distance']:.4f}",
    ]
    for name in ("sovits_ref_style", "hubert", "roberta", "sv_embedding"):
        if name in g:
            lines.append(f"{name}: cosine {g[name]['cosine']:.5f}")
    lines.append(f"sovits_extract_latent: {g['sovits_extract_latent']['codes_identical']:.1%} codes identical")
    for name, s in fidelity.sizes.items():
        lines.append(f"{name:24s} {s.precision:5s} {s.bytes / 1e6:8.2f} MB ({s.ratio:.0%} of fp32)")
    return "\n".join(lines)
