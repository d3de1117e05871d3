"""Checking a voice's reference clip: upstream's 3-10 s rule and the faults that would silently ruin a voice.

Upstream loads the clip with librosa at 16 kHz (HuBERT, speaker verification) and 32 kHz (the reference
spectrogram) and refuses clips outside 3-10 s. Here the clip is read by :func:`daemon.audio.wav.read_wav` and
resampled by :func:`daemon.audio.resample.resample`.
"""

from __future__ import annotations

import numpy as np

from daemon.audio.wav import AudioError, Clip

MIN_SECONDS = 3.0
MAX_SECONDS = 10.0
SILENCE_PEAK = 1e-3  # a clip whose loudest sample is below -60 dBFS is treated as silent
CLIPPED_FRACTION = 0.05  # more than 5% of samples at full scale: clipped beyond use


def validate_reference(clip: Clip, name: str = "clip") -> None:
    """Upstream's 3-10 s rule plus the faults that would silently ruin a voice."""
    if clip.seconds < MIN_SECONDS or clip.seconds > MAX_SECONDS:
        raise AudioError(
            f"{name}: reference clip is {clip.seconds:.2f} s; it must be {MIN_SECONDS:g}-{MAX_SECONDS:g} s "
            "(upstream's limit): cut a clean sentence of that length"
        )
    peak = float(np.abs(clip.samples).max())
    if peak < SILENCE_PEAK:
        raise AudioError(f"{name}: reference clip is silent (peak {20 * np.log10(max(peak, 1e-12)):.0f} dBFS)")
    clipped = float(np.mean(np.abs(clip.samples) >= 0.999))
    if clipped > CLIPPED_FRACTION:
        raise AudioError(f"{name}: {clipped:.0%} of the samples are at full scale: the recording is clipped")
