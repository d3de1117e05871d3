"""Joining two pieces of audio that overlap: the seam between separately vocoded chunks or windows of speech."""

from __future__ import annotations

import numpy as np


def crossfade(tail: np.ndarray, head: np.ndarray) -> np.ndarray:
    """The overlap of ``tail`` (the end of the earlier audio) fading out under ``head`` (the start of the later)
    fading in, linearly; as long as the shorter of the two."""
    n = min(tail.size, head.size)
    ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
    return tail[:n] * (1 - ramp) + head[:n] * ramp
