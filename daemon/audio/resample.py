"""Sample-rate conversion: :func:`resample` for a whole signal, :class:`LinearResampler` for a stream of chunks.

The two differ on purpose. :func:`resample` is band-limited (a windowed-sinc filter) and needs the signal's
future, so it runs where the whole signal is at hand: a voice's reference clip (its numerics are what the
speaker features and the golden tests are made from) and the chime file. :class:`LinearResampler` interpolates
linearly, carrying its position across chunk boundaries, so engine output can be converted chunk by chunk as it
is synthesised (the fallback voice's rate to the request's, the request's to the sound card's) with no
look-ahead, no seams and little work on a 2-core box; speech has little energy near Nyquist, so the missing
anti-alias filter is inaudible in practice.
"""

from __future__ import annotations

import math

import numpy as np


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


class LinearResampler:
    """Streaming linear interpolation: ``process`` each chunk in order; the output is the same as one call
    on the whole signal."""

    def __init__(self, src_rate: int, dst_rate: int) -> None:
        self.src_rate = src_rate
        self.dst_rate = dst_rate
        self._step = src_rate / dst_rate
        self._pos = 0.0  # next output position, in input samples, relative to the buffer start
        self._prev: np.ndarray | None = None  # last input sample of the previous chunk

    def process(self, chunk: np.ndarray) -> np.ndarray:
        chunk = np.asarray(chunk, dtype=np.float32)
        if self.src_rate == self.dst_rate or chunk.size == 0:
            return chunk
        buf = chunk if self._prev is None else np.concatenate((self._prev, chunk))
        last = buf.size - 1
        count = int(np.floor((last - self._pos) / self._step)) + 1 if last >= self._pos else 0
        positions = self._pos + self._step * np.arange(count)
        out = np.interp(positions, np.arange(buf.size), buf).astype(np.float32)
        self._pos += self._step * count - last
        self._prev = buf[-1:]
        return out
