"""The runtime's K/V buffers: filled in place by the step graph, grown without losing history."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from daemon.t2s_runner import KVCache, StepBinding


@pytest.mark.parametrize("dtype", [np.float32, np.int8])
def test_cache_grows_and_keeps_history(dtype: type) -> None:
    """float32, or int8 (``--kv-cache int8``: the prefill's quantized rows), the buffers keep their type."""
    rng = np.random.default_rng(0)
    cache = KVCache(n_layer=2, n_head=3, head_dim=4, capacity=5, dtype=dtype)

    def rows(t: int) -> np.ndarray:  # [layers, 1, heads, T, head_dim]
        return (100 * rng.standard_normal((2, 1, 3, t, 4))).astype(dtype)

    k, v = rows(4), rows(4)
    cache.append(k, v)
    k2, v2 = rows(3), rows(3)
    cache.append(k2, v2)  # 7 > 5: the buffers grow
    assert cache.length == 7 and cache.capacity >= 7
    assert all(b.dtype == dtype for b in cache.k + cache.v)
    all_k = np.concatenate([k, k2], axis=3)
    all_v = np.concatenate([v, v2], axis=3)
    for layer in range(2):
        np.testing.assert_array_equal(cache.k[layer][:, :, :7], all_k[layer])
        np.testing.assert_array_equal(cache.v[layer][:, :, :7], all_v[layer])


@pytest.fixture(scope="module")
def tiny_step(tmp_path_factory):
    """A 2-layer T2S step graph exported by the converter's own code."""
    torch = pytest.importorskip("torch")
    from quantize.graphs import export_graph
    from quantize.t2s import T2SConfig, Text2SemanticDecoder, t2s_graphs

    torch.manual_seed(3)
    model = Text2SemanticDecoder(T2SConfig(vocab_size=33, phoneme_vocab_size=20, embedding_dim=16, hidden_dim=16,
                                           n_head=2, n_layer=2, eos=32))
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    path = export_graph(t2s_graphs(model.eval())[1], tmp_path_factory.mktemp("step"))
    return model, ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]), path


def test_step_writes_the_new_row_in_place_and_matches_torch(tiny_step) -> None:
    """Each run writes one K/V row into the bound numpy buffers (no copy out), and the logits and rows equal
    the PyTorch module's; growing past the capacity rebinds and keeps the history."""
    import torch

    model, session, _ = tiny_step
    rng = np.random.default_rng(1)
    cache = KVCache(n_layer=2, n_head=2, head_dim=8, capacity=4)
    k = rng.standard_normal((2, 1, 2, 3, 8)).astype(np.float32)
    v = rng.standard_normal((2, 1, 2, 3, 8)).astype(np.float32)
    cache.append(k, v)
    step = StepBinding(session, cache, vocab=33)
    ks = [torch.from_numpy(k[i].copy()) for i in range(2)]
    vs = [torch.from_numpy(v[i].copy()) for i in range(2)]
    first_buffer = cache.k[0]
    for n, token in enumerate([5, 9, 1, 30]):  # the third token overflows capacity 4 -> buffers grow
        logits = step.run(token, position=n).copy()
        with torch.no_grad():
            from quantize.t2s import cache_length, grown

            want, ks, vs = model.step(torch.tensor([[token]]), torch.tensor([n]), grown(ks), grown(vs),
                                      cache_length(ks))
        np.testing.assert_allclose(logits, want.numpy(), atol=1e-5)
        assert cache.length == 4 + n
        for layer in range(2):
            np.testing.assert_allclose(cache.k[layer][:, :, : cache.length], ks[layer].numpy(), atol=1e-5)
            np.testing.assert_allclose(cache.v[layer][:, :, : cache.length], vs[layer].numpy(), atol=1e-5)
    assert cache.capacity == 8 and cache.k[0] is not first_buffer


def test_step_graph_is_one_fused_attention_node_per_layer(tiny_step) -> None:
    """The exported step graph attends through one GroupQueryAttention node per layer (no Softmax or
    Concat of caches spelled out in plain ops) and declares the cache inputs and outputs in pairs."""
    import onnx

    model, session, path = tiny_step
    graph = onnx.load(str(path)).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("GroupQueryAttention") == model.cfg.n_layer
    assert "Softmax" not in ops
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    for i in range(model.cfg.n_layer):
        for kind in ("key", "value"):
            assert f"past_{kind}_{i}" in inputs and f"present_{kind}_{i}" in outputs
