"""Choosing the next semantic token exactly as upstream does, in numpy.

Upstream ``AR/models/utils.py``: repetition penalty over every earlier token (prompt included), top-p,
temperature, top-k, softmax, then ``argmax(probs / Exponential(1))`` (a Gumbel-style draw). The seedable
``numpy.random.Generator`` replaces torch's global RNG, so a seed makes a decode reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SamplingParams:
    top_k: int = 15  # upstream's inference default
    top_p: float = 1.0
    temperature: float = 1.0
    repetition_penalty: float = 1.35

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")


def apply_repetition_penalty(logits: np.ndarray, previous: np.ndarray, penalty: float) -> None:
    """In place, like upstream's ``scatter_``: earlier tokens become less likely."""
    if penalty == 1.0 or previous.size == 0:
        return
    score = logits[0, previous]
    logits[0, previous] = np.where(score < 0, score * penalty, score / penalty)


def logits_to_probs(
    logits: np.ndarray,
    previous: np.ndarray,
    params: SamplingParams,
) -> np.ndarray:
    """``logits`` [1, V] float32 is penalised in place (upstream's EOS test reads it afterwards)."""
    apply_repetition_penalty(logits, previous, params.repetition_penalty)
    work = logits.astype(np.float32, copy=True)
    if params.top_p < 1.0:
        order = np.argsort(-work[0], kind="stable")
        sorted_logits = work[0, order]
        e = np.exp(sorted_logits - sorted_logits.max())
        cum = np.cumsum(e / e.sum())
        remove = cum > params.top_p
        remove[0] = False
        work[0, order[remove]] = -np.inf
    work = work / max(params.temperature, 1e-5)
    k = min(params.top_k, work.shape[-1])
    pivot = np.partition(work[0], -k)[-k]
    work[0, work[0] < pivot] = -np.inf
    e = np.exp(work - work.max())
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def sample(logits: np.ndarray, previous: np.ndarray, params: SamplingParams, rng: np.random.Generator) -> int:
    probs = logits_to_probs(logits, previous, params)
    noise = rng.exponential(1.0, size=probs.shape).astype(np.float32)
    with np.errstate(divide="ignore"):
        return int(np.argmax(probs / noise, axis=-1)[0])
