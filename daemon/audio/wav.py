"""WAV as bytes both ways: encoding published audio (16-bit mono, what Hermes audio servers play) and reading
any WAV a user hands in (a voice's reference clip, the chime file) as mono float32.

The reader parses the RIFF chunks directly (PCM 8/16/24/32-bit and float, plain or WAVE_FORMAT_EXTENSIBLE) and
mixes to mono; every malformed case is an :class:`AudioError` naming the file.
"""

from __future__ import annotations

import io
import struct
import wave
from dataclasses import dataclass

import numpy as np

MAX_WAV_BYTES = 32 * 1024 * 1024  # far above any 3-10 s clip or chime (10 s of 96 kHz 32-bit stereo is 7.7 MB)

PCM, IEEE_FLOAT, EXTENSIBLE = 1, 3, 0xFFFE


class AudioError(ValueError):
    """The clip cannot be used; the message says why in words a user can act on."""


@dataclass
class Clip:
    samples: np.ndarray  # mono float32 in [-1, 1]
    sample_rate: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.sample_rate


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


def read_wav(data: bytes, name: str = "clip") -> Clip:
    """Parse WAV bytes into a mono clip; every malformed case is an AudioError naming ``name``."""
    if len(data) > MAX_WAV_BYTES:
        raise AudioError(f"{name}: {len(data)} bytes is too large for a reference clip (limit {MAX_WAV_BYTES})")
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise AudioError(f"{name}: not a WAV file (no RIFF/WAVE header)")
    pos, fmt, payload = 12, None, None
    while pos + 8 <= len(data):
        chunk_id, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body = data[pos + 8 : pos + 8 + size]
        if chunk_id == b"fmt ":
            if len(body) < 16:
                raise AudioError(f"{name}: WAV 'fmt ' chunk is truncated")
            fmt = struct.unpack("<HHIIHH", body[:16])
            if fmt[0] == EXTENSIBLE and len(body) >= 26:
                fmt = (struct.unpack("<H", body[24:26])[0],) + fmt[1:]
        elif chunk_id == b"data":
            payload = body
            if len(body) < size:
                raise AudioError(f"{name}: WAV data is truncated ({len(body)} of {size} bytes present)")
            break
        pos += 8 + size + (size & 1)
    if fmt is None:
        raise AudioError(f"{name}: WAV has no 'fmt ' chunk")
    if payload is None:
        raise AudioError(f"{name}: WAV has no 'data' chunk")
    audio_format, channels, rate, _, block_align, bits = fmt
    if channels < 1 or rate < 1 or block_align < 1:
        raise AudioError(f"{name}: WAV header is invalid (channels={channels}, rate={rate})")
    if block_align != channels * (bits // 8):
        raise AudioError(f"{name}: WAV header is inconsistent ({channels} x {bits} bits, block {block_align})")
    frames = len(payload) // block_align
    raw = payload[: frames * block_align]
    if audio_format == PCM and bits == 16:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif audio_format == PCM and bits == 32:
        x = np.frombuffer(raw, "<i4").astype(np.float32) / 2147483648.0
    elif audio_format == PCM and bits == 24:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / 8388608.0
    elif audio_format == PCM and bits == 8:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif audio_format == IEEE_FLOAT and bits == 32:
        x = np.frombuffer(raw, "<f4").astype(np.float32)
    elif audio_format == IEEE_FLOAT and bits == 64:
        x = np.frombuffer(raw, "<f8").astype(np.float32)
    else:
        raise AudioError(f"{name}: unsupported WAV sample format (format {audio_format}, {bits} bits)")
    if not np.all(np.isfinite(x)):
        raise AudioError(f"{name}: WAV holds NaN or infinite samples")
    x = x.reshape(-1, channels).mean(axis=1) if channels > 1 else x
    return Clip(np.ascontiguousarray(x, np.float32), rate)
