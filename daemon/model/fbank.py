"""Kaldi log-mel filterbank in numpy: the front end of the ``sv_embedding`` graph.

Twin of ``quantize.sv.kaldi_fbank`` (itself upstream ``eres2net/kaldi.py fbank`` with
num_mel_bins=80, sample_frequency=16000, dither=0); the daemon must not import torch.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

NUM_MEL_BINS = 80  # what upstream SV.compute_embedding3 asks Kaldi fbank for
SAMPLE_RATE = 16000  # the clip as upstream loads it for HuBERT and speaker verification
PREEMPHASIS = 0.97
LOW_FREQ = 20.0


@lru_cache(maxsize=4)
def mel_banks(num_bins: int, n_fft: int, sample_rate: float) -> np.ndarray:
    """Kaldi triangular mel filters [num_bins, n_fft // 2 + 1] from 20 Hz to Nyquist, Nyquist column zero.

    Computed in float64; upstream's float32 arithmetic differs by ~1e-5 in a filter weight.
    """

    def mel(f):
        return 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)

    delta = (mel(0.5 * sample_rate) - mel(LOW_FREQ)) / (num_bins + 1)
    edges = mel(LOW_FREQ) + delta * np.arange(num_bins + 2)
    left, center, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    fft_mel = mel(sample_rate / n_fft * np.arange(n_fft // 2))
    up, down = (fft_mel - left) / (center - left), (right - fft_mel) / (right - center)
    banks = np.maximum(np.minimum(up, down), 0.0)
    banks = np.pad(banks, ((0, 0), (0, 1))).astype(np.float32)
    banks.flags.writeable = False
    return banks


def kaldi_fbank(
    wav: np.ndarray, num_mel_bins: int = NUM_MEL_BINS, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """wav: [S] or [1, S] float 16 kHz -> log-mel [frames, num_mel_bins] float32.

    25 ms frames every 10 ms, only frames that fit (snip_edges), per-frame DC removal, preemphasis 0.97,
    povey window (Hann^0.85), zero-pad to a power of two, power spectrum, log floored at float32 eps.
    """
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    shift = int(sample_rate * 0.010)
    size = int(sample_rate * 0.025)
    n_fft = 1 << (size - 1).bit_length()
    if wav.shape[0] < size:
        raise ValueError(f"need at least {size} samples, got {wav.shape[0]}")
    n_frames = 1 + (wav.shape[0] - size) // shift
    frames = np.lib.stride_tricks.sliding_window_view(wav, size)[::shift][:n_frames]
    frames = frames - frames.mean(axis=1, keepdims=True)
    frames = frames - np.float32(PREEMPHASIS) * np.concatenate((frames[:, :1], frames[:, :-1]), axis=1)
    n = np.arange(size, dtype=np.float64)
    window = (0.5 - 0.5 * np.cos(2 * math.pi * n / (size - 1))) ** 0.85
    spectrum = np.fft.rfft(frames * window.astype(np.float32), n=n_fft)
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
    energies = power @ mel_banks(num_mel_bins, n_fft, float(sample_rate)).T
    return np.log(np.maximum(energies, np.finfo(np.float32).eps)).astype(np.float32)
