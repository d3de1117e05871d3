"""Phone-level BERT features from the ``roberta`` graph output, as upstream get_bert_feature builds them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def phone_level_features(hidden: np.ndarray, word2ph: Sequence[int]) -> np.ndarray:
    """hidden [L, H] (rows for [CLS] t_1 .. t_n [SEP]) -> [H, sum(word2ph)] float32.

    [CLS]/[SEP] rows are dropped and token row i is repeated word2ph[i] times: one row per phone. Like
    upstream, only the first len(word2ph) tokens are used (one token per normalised character).
    """
    rows = hidden[1:-1]
    if len(word2ph) > rows.shape[0]:
        raise ValueError(f"word2ph has {len(word2ph)} entries but the text has {rows.shape[0]} tokens")
    repeats = np.asarray(word2ph, dtype=np.int64)
    return np.ascontiguousarray(np.repeat(rows[: len(word2ph)], repeats, axis=0).T, dtype=np.float32)
