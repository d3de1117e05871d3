"""The benchmark's fixed workload, shared by the ONNX and the PyTorch measurements so both see the same
inputs: a 6 s reference clip, its transcript, the sentences and the number of decode steps."""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 32000
REFERENCE_SECONDS = 6.0
PROMPT_TEXT = "今天天气很好，我们一起去公园散步吧。"
# 20 characters: the first-audio request; one segment, so the engine answers it in one piece.
SENTENCE = "这是一个用于测试语音合成首包延迟的句子。"
LONG_TEXT = "这是一个用于测试语音合成速度的句子，它足够长，可以生成八秒的语音。"
LANG = "zh"
STEPS = 200  # 8 s of audio at 25 tokens/s; random weights never emit EOS, so the count is fixed
SENTENCE_STEPS = 100  # what a 20-character sentence takes when spoken (4 s)
QUICK_STEPS = 100
# Five sentences of one announcement: decoded side by side (engine.max_batch) against one after another.
ANNOUNCEMENT = "各位旅客请注意。开往上海的列车即将进站。请站在黄线以内。请照看好您的行李。谢谢合作。"
BATCH_SIZES = (1, 2, 4, 8)  # sequences per T2S step, and requests at once, for the throughput figures
LOAD_REQUESTS = 4  # background requests decoding when the speaker's request arrives (first audio under load)
STREAM_CHUNK = 25  # engine.stream_chunk_tokens for the chunked figures (1 s chunks after a short first one)


def reference_clip(seed: int = 7) -> np.ndarray:
    """Speech-like test signal: a voiced harmonic series with a wandering pitch, syllable-rate envelope and a
    little noise; passes the engine's reference checks (3-10 s, not silent, not clipped)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(REFERENCE_SECONDS * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    return (0.2 * voiced * envelope + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
