"""The runtime's K/V buffers: filled in place, grown without losing history, masked where unused."""

from __future__ import annotations

import numpy as np

from daemon.t2s_runner import KVCache


def test_cache_grows_and_keeps_history() -> None:
    rng = np.random.default_rng(0)
    cache = KVCache(n_layer=2, n_head=3, head_dim=4, capacity=5)
    k = rng.standard_normal((2, 1, 3, 4, 4)).astype(np.float32)  # [layers, 1, heads, T, head_dim]
    v = rng.standard_normal((2, 1, 3, 4, 4)).astype(np.float32)
    cache.append(k, v)
    k2 = rng.standard_normal((2, 1, 3, 3, 4)).astype(np.float32)
    v2 = rng.standard_normal((2, 1, 3, 3, 4)).astype(np.float32)
    cache.append(k2, v2)  # 7 > 5: the buffers grow
    assert cache.length == 7 and cache.capacity >= 7
    all_k = np.concatenate([k, k2], axis=3)
    all_v = np.concatenate([v, v2], axis=3)
    for layer in range(2):
        np.testing.assert_array_equal(cache.k[layer][..., :7], all_k[layer].transpose(0, 1, 3, 2))
        np.testing.assert_array_equal(cache.v[layer][:, :, :7], all_v[layer])
    assert (cache.bias[..., :7] == 0).all() and np.isneginf(cache.bias[..., 7:]).all()
    feeds = cache.step_feeds(token=5, position=9)
    assert feeds["past_k_1"] is cache.k[1], "buffers are passed as they are, not copied"
    assert feeds["token"].tolist() == [[5]] and feeds["position"].tolist() == [9]
