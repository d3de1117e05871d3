"""Reading and checking a voice's reference clip: WAV bytes in, validated mono float32 at any rate out.

Upstream loads the clip with librosa at 16 kHz (HuBERT, speaker verification) and 32 kHz (the reference
spectrogram) and refuses clips outside 3-10 s. Here the WAV is parsed directly (PCM 8/16/24/32-bit and
float, plain or WAVE_FORMAT_EXTENSIBLE), mixed to mono and resampled with a windowed-sinc filter in numpy.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

MIN_SECONDS = 3.0
MAX_SECONDS = 10.0
SILENCE_PEAK = 1e-3  # a clip whose loudest sample is below -60 dBFS is treated as silent
CLIPPED_FRACTION = 0.05  # more than 5% of samples at full scale: clipped beyond use
MAX_WAV_BYTES = 32 * 1024 * 1024  # far above any 3-10 s clip (10 s of 96 kHz 32-bit stereo is 7.7 MB)

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


def resample(x: np.ndarray, src: int, dst: int, half_width: int = 24, block: int = 16384) -> np.ndarray:
    """Band-limited polyphase resampling (Kaiser-windowed sinc, cutoff at the lower Nyquist).

    Output sample n sits at input position n*src/dst; its fractional part takes one of dst/gcd values, so
    one filter per phase is computed once and reused."""
    if src == dst or len(x) == 0:
        return x.astype(np.float32)
    g = math.gcd(src, dst)
    up, down = dst // g, src // g
    n_out = int(round(len(x) * dst / src))
    cutoff = min(1.0, dst / src)
    taps = np.arange(-half_width + 1, half_width + 1)
    dist = (np.arange(up) / up)[:, None] - taps[None, :]  # [phase, tap]
    window = np.i0(8.6 * np.sqrt(np.clip(1.0 - (dist / half_width) ** 2, 0.0, 1.0))) / np.i0(8.6)
    bank = cutoff * np.sinc(cutoff * dist) * window
    padded = np.concatenate([np.zeros(half_width), x.astype(np.float64), np.zeros(half_width + 1)])
    out = np.empty(n_out, np.float32)
    for start in range(0, n_out, block):
        n = np.arange(start, min(start + block, n_out))
        base, phase = (n * down) // up, (n * down) % up
        out[n] = (padded[base[:, None] + taps[None, :] + half_width] * bank[phase]).sum(axis=1)
    return out


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
