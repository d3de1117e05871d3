"""Streaming sample-rate conversion for chunked audio (device rates and mixed-engine output).

Linear interpolation carried across chunk boundaries: cheap on a 2-core box and free of the seams
that resampling each chunk on its own would leave. Speech has little energy near Nyquist, so the
missing anti-alias filter is inaudible in practice.
"""

from __future__ import annotations

import numpy as np


class Resampler:
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


def resample(samples: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    return Resampler(src_rate, dst_rate).process(samples)
