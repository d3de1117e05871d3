"""WAV and raw PCM encoding for published audio (16-bit mono, what Hermes audio servers play)."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np

from daemon.audio.reference import read_wav as parse_wav


def to_pcm16(samples: np.ndarray) -> bytes:
    """Float samples in [-1, 1] as little-endian signed 16-bit PCM."""
    clipped = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    return (clipped * 32767.0).round().astype("<i2").tobytes()


def encode_wav(samples: np.ndarray, sample_rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(to_pcm16(samples))
    return buf.getvalue()


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """A WAV file (the chime) as float32 mono and its rate; any PCM or float format the reference-clip parser
    reads, with the same clear errors."""
    clip = parse_wav(Path(path).read_bytes(), str(path))
    return clip.samples, clip.sample_rate
