"""Reference-audio spectrogram for the SoVITS style encoder, in numpy (the runtime has no torch).

Same numbers as upstream ``module/mel_processing.py spectrogram_torch(y, 2048, 32000, 640, 2048,
center=False)``: reflect-pad (n_fft - hop) / 2 samples each side, frames every ``hop`` samples, periodic Hann
window, one-sided FFT, magnitude ``sqrt(re^2 + im^2 + 1e-8)``. Computed in float64 and returned as float32,
which keeps it within float32 rounding of torch's float32 STFT.
"""

from __future__ import annotations

import numpy as np

N_FFT = 2048
HOP = 640
WIN = 2048


def decoded_frames(code_frames: int, speed: float) -> int:
    """Latent frames SoVITS decodes for ``code_frames`` semantic codes: 2 per code (25 Hz codes, 50 Hz latent),
    then upstream's ``int(L / speed) + 1`` stretch when speed != 1. The runtime draws its noise this long; the
    decoder graph reads the stretch from the noise length. Audio samples = frames * hop (640)."""
    frames = 2 * code_frames
    return frames if speed == 1 else int(frames / speed) + 1


def hann_periodic(size: int) -> np.ndarray:
    """``torch.hann_window(size)`` (periodic): 0.5 - 0.5 cos(2 pi n / size)."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(size) / size)


def spectrogram(wav: np.ndarray, n_fft: int = N_FFT, hop: int = HOP, win: int = WIN) -> np.ndarray:
    """[samples] or [B, samples] float audio at 32 kHz -> [B, n_fft // 2 + 1, samples // hop] float32
    magnitude. Needs more than (n_fft - hop) / 2 samples (reflect padding)."""
    wav = np.atleast_2d(np.asarray(wav, dtype=np.float64))
    pad = (n_fft - hop) // 2
    if wav.shape[-1] <= pad:
        raise ValueError(f"reference audio too short: {wav.shape[-1]} samples, need more than {pad}")
    padded = np.pad(wav, ((0, 0), (pad, pad)), mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=-1)[:, ::hop]  # [B, F, n_fft]
    window = np.zeros(n_fft)
    offset = (n_fft - win) // 2  # torch.stft centres a shorter window inside n_fft
    window[offset: offset + win] = hann_periodic(win)
    spec = np.fft.rfft(frames * window, n=n_fft, axis=-1)  # [B, F, n_fft // 2 + 1]
    mag = np.sqrt(spec.real**2 + spec.imag**2 + 1e-8)
    return mag.transpose(0, 2, 1).astype(np.float32)
