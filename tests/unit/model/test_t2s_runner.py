"""The runtime's K/V buffers: filled in place by the step graph, grown without losing history."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from daemon.model.t2s import KVCache, StepBinding, cache_device, prefilled_cache


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int8])
def test_cache_grows_and_keeps_history(dtype: type) -> None:
    """float32, float16 (fp16 bundles) or int8 (``--kv-cache int8``: the prefill's quantized rows), the
    buffers keep their type."""
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


def test_cache_lives_on_the_gpu_only_where_cuda_runs_the_attention() -> None:
    """onnxruntime's CUDA GroupQueryAttention takes float16 only: a float32 or int8 cache stays in host memory
    even in a CUDA session (its attention nodes fall back to the CPU provider)."""
    cuda = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert cache_device(cuda, np.float16) == "cuda"
    assert cache_device(cuda, np.float32) == cache_device(cuda, np.int8) == "cpu"
    assert cache_device(["CPUExecutionProvider"], np.float16) == "cpu"


def test_an_int8_prefill_cannot_feed_a_float_step(tmp_path) -> None:
    """Mixing an ``--kv-cache int8`` prefill with a float step graph is refused by name, not mis-bound."""
    from onnx import TensorProto, helper, save

    outputs = [("logits", TensorProto.FLOAT, [1, 3]), ("present_k", TensorProto.INT8, [1, 1, 1, 2, 2]),
               ("present_v", TensorProto.INT8, [1, 1, 1, 2, 2])]
    nodes = [helper.make_node("Identity", [f"in_{name}"], [name]) for name, _, _ in outputs]
    graph = helper.make_graph(nodes, "prefill", [helper.make_tensor_value_info(f"in_{n}", t, s) for n, t, s in outputs],
                              [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "p.onnx"))
    session = ort.InferenceSession(str(tmp_path / "p.onnx"), providers=["CPUExecutionProvider"])
    feeds = {"in_logits": np.zeros((1, 3), np.float32), "in_present_k": np.ones((1, 1, 1, 2, 2), np.int8),
             "in_present_v": np.ones((1, 1, 1, 2, 2), np.int8)}
    with pytest.raises(ValueError, match="t2s_prefill returns its K/V cache as int8, t2s_step takes float32"):
        prefilled_cache(session, feeds, 4, np.float32)
    _, cache = prefilled_cache(session, feeds, 4, np.int8)
    assert cache.dtype == np.int8 and cache.length == 2


def _decodes(runner, n: int, seed: int):
    """``n`` different decodes (phones, prompt, sampling, early stop), each with its own seeded generator."""
    from daemon.model.sampling import SamplingParams
    from daemon.model.t2s import Decode

    rng = np.random.default_rng(seed)
    runs = []
    for i in range(n):
        n_phones, n_prompt = 6 + 3 * i, 4 + 2 * i
        phones = rng.integers(1, 300, (1, n_phones)).astype(np.int64)
        bert = rng.standard_normal((1, 1024, n_phones)).astype(np.float32)
        prompt = rng.integers(0, 1000, (1, n_prompt)).astype(np.int64)
        params = SamplingParams(top_k=5 + 4 * i, temperature=0.8 + 0.1 * i)
        runs.append(Decode(runner, phones, bert, prompt, params, np.random.default_rng(100 + i), 20 + 15 * i,
                           record_logits=True))
    return runs


FLOAT_T2S = {"t2s_prefill": "fp32", "t2s_step": "fp32"}
# name -> (preset, per-graph precisions, K/V cache) of the demo bundle's quantized forms
QUANTIZED = {"int8": ("int8", {}, "fp32"), "fp32_kv": ("int8", FLOAT_T2S, "int8-shared"),
             "int8_kv": ("int8", {}, "int8-shared"), "int8_kv_own": ("int8", {}, "int8")}


def _runner(path: Path, shared_scales: bool | None = None):
    from daemon.model.bundle import Bundle
    from daemon.model.t2s import T2SRunner

    bundle = Bundle.load(path)
    prefill, step, *batch = [ort.InferenceSession(str(bundle.graph_path(g)), providers=["CPUExecutionProvider"])
                             for g in ("t2s_prefill", "t2s_step", "t2s_step_batch") if bundle.has(g)]
    shared = bundle.manifest.t2s.kv_cache == "int8-shared" if shared_scales is None else shared_scales
    return T2SRunner(prefill, step, bundle.manifest.t2s.eos, *batch,
                     row_exact=bundle.graphs["t2s_step"].precision != "int8", shared_scales=shared)


@pytest.fixture(scope="module")
def bundles(demo_bundle, tmp_path_factory) -> dict[str, Path]:
    """The demo bundle as fp32, int8 (with its ``t2s_step_batch``), fp32 or int8 T2S with the int8 K/V cache of
    calibrated scales (``int8-shared``), and int8 with each request's own cache scales, by name."""
    from quantize.quantization import quantize_bundle

    out = {"fp32": demo_bundle}
    for name, (preset, graphs, kv_cache) in QUANTIZED.items():
        out[name] = tmp_path_factory.mktemp(name) / "bundle"
        quantize_bundle(demo_bundle, out[name], preset, graphs, fidelity=False, log=lambda _msg: None,
                        kv_cache=kv_cache)
    return out


@pytest.fixture(scope="module")
def runners(bundles):
    """Each of :func:`bundles`' T2S runner, by name."""
    return {name: _runner(path) for name, path in bundles.items()}


def _assert_same(alone, batched) -> None:
    for one, many in zip(alone, batched, strict=True):
        np.testing.assert_array_equal(many.y, one.y)
        assert (many.idx, many.stopped_by) == (one.idx, one.stopped_by)
        assert len(many.step_logits) == len(one.step_logits)
        for a, b in zip(one.step_logits, many.step_logits, strict=True):
            np.testing.assert_allclose(b, a, atol=1e-4)


@pytest.mark.parametrize("precision", ["fp32", "int8", "fp32_kv", "int8_kv"])
def test_a_batch_decodes_each_sequence_as_alone(runners, precision: str) -> None:
    """Sequences of different lengths, sampling parameters and stops decoded in one batch get exactly the
    tokens they get alone with the same seed, their logits within 1e-4; the batch goes on after a sequence
    has stopped. int8 runs its per-row ``t2s_step_batch`` for two or more and ``t2s_step`` for the last one;
    ``_kv``: with the int8 K/V cache of calibrated scales, which every sequence shares."""
    runner = runners[precision]
    assert runner.batchable
    alone = [r.to_end() for r in _decodes(runner, 4, seed=7)]
    batched = runner.decode_batch(_decodes(runner, 4, seed=7))
    assert len({len(r.y[0]) for r in alone}) > 1  # they stop at different steps
    _assert_same(alone, batched)


def test_the_per_tensor_int8_graph_would_not_batch_exactly(runners) -> None:
    """Why int8 bundles carry ``t2s_step_batch``: ``t2s_step`` quantizes a batch's activations with one scale,
    so a row's logits change with its batch mates (the check conversion runs sees it)."""
    from quantize.row_quantization import ROW_TOLERANCE, row_difference

    step = Path(runners["int8"].step_session._model_path)
    assert row_difference(step, step) > ROW_TOLERANCE
    assert row_difference(step, step.with_name("t2s_step_batch.onnx")) <= ROW_TOLERANCE


def test_a_decode_joins_a_running_batch_and_each_leaves_when_it_stops(runners) -> None:
    """Continuous batching: a decode joins after others have run some steps, the batch shrinks as decodes stop,
    and every decode still gets its tokens alone."""
    from daemon.model.t2s import DecodeBatch

    runner = runners["int8"]
    alone = [r.to_end() for r in _decodes(runner, 3, seed=11)]
    runs = _decodes(runner, 3, seed=11)
    batch = DecodeBatch(runner)
    batch.join(runs[0])
    batch.join(runs[1])
    sizes = []
    for _ in range(5):
        batch.step()
        sizes.append(len(batch))
    batch.join(runs[2])
    while len(batch):
        sizes.append(len(batch))
        batch.step()
    assert sizes[:5] == [2] * 5 and 3 in sizes and sizes[-1] == 1 and sorted(sizes[5:], reverse=True) == sizes[5:]
    _assert_same(alone, [r.result for r in runs])


def test_a_capped_batch_takes_waiting_decodes_as_others_leave(runners) -> None:
    """``max_batch`` 2 with four decodes: the waiting ones join as the first ones stop, with the same tokens."""
    runner = runners["fp32"]
    alone = [r.to_end() for r in _decodes(runner, 4, seed=5)]
    _assert_same(alone, runner.decode_batch(_decodes(runner, 4, seed=5), max_batch=2))


def test_a_batch_grows_its_cache_past_the_room_it_started_with(runners) -> None:
    """Decodes with an early stop beyond the room a prefill gives (random weights never emit EOS): the batch cache
    grows and the tokens stay those of each decode alone."""
    from daemon.model.sampling import SamplingParams
    from daemon.model.t2s import MAX_SLACK, Decode

    runner = runners["int8"]

    def decodes():
        rng = np.random.default_rng(3)
        return [Decode(runner, rng.integers(1, 300, (1, 5 + i)), np.zeros((1, 1024, 5 + i), np.float32),
                       rng.integers(0, 1000, (1, 4)), SamplingParams(top_k=3), np.random.default_rng(i),
                       MAX_SLACK + 40) for i in range(2)]

    alone = [r.to_end() for r in decodes()]
    assert all(len(r.y[0]) > MAX_SLACK + 20 for r in alone)  # more than the room the prefill gave
    _assert_same(alone, runner.decode_batch(decodes()))


def test_a_batch_step_computes_each_row_as_alone(tiny_step) -> None:
    """The step graph on a batch cache of rows with different lengths: each row's logits and written K/V row
    equal that sequence's step alone."""
    _, session, _ = tiny_step
    rng = np.random.default_rng(2)
    batch = KVCache(n_layer=2, n_head=2, head_dim=8, capacity=8, batch=2)
    for layer in range(2):
        batch.k[layer][:] = rng.standard_normal(batch.k[layer].shape)
        batch.v[layer][:] = rng.standard_normal(batch.v[layer].shape)
    tokens, positions, lengths = np.array([4, 7]), np.array([2, 6]), np.array([3, 5], np.int32)
    alone = []
    for b in range(2):
        cache = KVCache(n_layer=2, n_head=2, head_dim=8, capacity=8)
        for layer in range(2):
            cache.k[layer][:], cache.v[layer][:] = batch.k[layer][b : b + 1], batch.v[layer][b : b + 1]
        alone.append(cache)
    logits = StepBinding(session, batch, vocab=33).step(tokens, positions, lengths).copy()
    for b, cache in enumerate(alone):
        want = StepBinding(session, cache, vocab=33).step(tokens[b : b + 1], positions[b : b + 1], lengths[b : b + 1])
        np.testing.assert_allclose(logits[b : b + 1], want, atol=1e-5)
        for layer in range(2):
            np.testing.assert_allclose(batch.k[layer][b, :, : lengths[b] + 1],
                                       cache.k[layer][0, :, : lengths[b] + 1], atol=1e-6)


def test_a_graph_without_dynamic_quantization_is_refused_by_name(demo_bundle, tmp_path) -> None:
    """``t2s_step_batch`` is made from an int8 step graph only; a float one is refused naming the file."""
    from daemon.model.bundle import Bundle
    from quantize.row_quantization import RowQuantizationError, quantize_rows

    with pytest.raises(RowQuantizationError, match=r"t2s_step.onnx: no DynamicQuantizeLinear node"):
        quantize_rows(Bundle.load(demo_bundle).graph_path("t2s_step"), tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def _in_threads(work) -> list:
    """``work``'s callables run in threads of their own, started together; their results in order."""
    import threading

    results: list = [None] * len(work)

    def run(i: int) -> None:
        try:
            results[i] = work[i]()
        except Exception as exc:  # handed to the test to assert on
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(work))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_decodes_from_several_threads_meet_in_one_loop_with_the_tokens_of_each_alone(runners, precision) -> None:
    """Four threads each hand a decode to the loop (two foreground, two background): they step in batches of more
    than one, each gets exactly the tokens it gets alone, and the loop's thread ends when the work does."""
    from daemon.model.decode_loop import DecodeLoop

    runner = runners[precision]
    alone = [r.to_end() for r in _decodes(runner, 4, seed=21)]
    loop = DecodeLoop(runner, max_batch=4)
    before = runner.batch_steps.copy()
    runs = _decodes(runner, 4, seed=21)
    results = _in_threads([lambda run=run, i=i: loop.submit(run, foreground=i < 2).result()
                           for i, run in enumerate(runs)])
    _assert_same(alone, results)
    assert max(n for n, count in (runner.batch_steps - before).items() if count) >= 2
    assert loop._thread is None


def test_a_foreground_decode_waits_at_most_the_background_step_in_flight(runners) -> None:
    """Background decodes are stepping when a foreground one arrives: it joins after at most one more background
    step, and no background step runs until it has ended; the background decodes then go on with the tokens
    they get alone."""
    from daemon.model.decode_loop import DecodeLoop

    runner = runners["int8"]

    def decodes():  # the background ones long enough to be running still when the foreground one arrives
        runs = _decodes(runner, 3, seed=4)
        for run in runs[1:]:
            run.early_stop_num = 400
        return runs

    alone = [r.to_end() for r in decodes()]
    loop = DecodeLoop(runner, max_batch=4)
    foreground_run, *background_runs = decodes()
    background = [loop.submit(run, foreground=False) for run in background_runs]
    tokens = background[0].tokens()
    for _ in range(3):  # the background batch is running
        next(tokens)
    foreground = loop.submit(foreground_run, foreground=True)
    results = [foreground.result(), *_in_threads([t.result for t in background])]
    _assert_same(alone, results)
    assert foreground.joined[1] - foreground.submitted[1] <= 1
    assert foreground.ended[1] == foreground.joined[1]  # no background step while it decoded
    assert foreground.ended[0] - foreground.joined[0] == foreground_run.idx
    assert all(t.ended[1] > foreground.ended[1] for t in background)


def test_a_withdrawn_decode_leaves_and_the_others_go_on_unchanged(runners) -> None:
    """A request cut while its decode runs closes its token stream: the decode leaves the batch at the next step
    and the others keep the tokens they get alone."""
    from daemon.model.decode_loop import DecodeLoop

    runner = runners["fp32"]
    alone = [r.to_end() for r in _decodes(runner, 3, seed=9)]
    loop = DecodeLoop(runner, max_batch=4)
    runs = _decodes(runner, 3, seed=9)
    tickets = [loop.submit(run) for run in runs]
    cut = tickets[2].tokens()
    next(cut)
    cut.close()
    assert tickets[2].withdrawn
    results = _in_threads([t.result for t in tickets[:2]])
    _assert_same(alone[:2], results)
    assert not runs[2].finished and loop._thread is None


def test_a_decode_that_fails_to_start_fails_alone(runners) -> None:
    """A decode whose prefill the graph refuses (a phone id outside the model's table) raises in the thread that
    asked for it; the decode beside it is not disturbed."""
    from daemon.model.decode_loop import DecodeLoop

    runner = runners["fp32"]
    alone = _decodes(runner, 1, seed=2)[0].to_end()
    loop = DecodeLoop(runner, max_batch=4)
    good, bad = _decodes(runner, 2, seed=2)
    bad.phone_ids = np.full_like(bad.phone_ids, 10**6)
    results = _in_threads([loop.submit(good).result, loop.submit(bad).result])
    _assert_same([alone], results[:1])
    assert isinstance(results[1], Exception)


def test_an_int8_cache_with_each_requests_own_scales_decodes_in_turn(bundles, runners) -> None:
    """``--kv-cache int8`` scales each sequence's cache by its own prefill: the runner does not batch it, and a
    batch made to take such a sequence anyway is refused by name rather than decoding it with the wrong scales."""
    from daemon.model.t2s import DecodeBatch

    own = runners["int8_kv_own"]
    assert not own.batchable and runners["int8_kv"].batchable
    alone = [r.to_end() for r in _decodes(own, 2, seed=6)]
    _assert_same(alone, own.decode_batch(_decodes(own, 2, seed=6)))  # in turn
    forced = _runner(bundles["int8_kv_own"], shared_scales=True)
    batch = DecodeBatch(forced)
    first, second = _decodes(forced, 2, seed=6)
    batch.join(first)
    with pytest.raises(ValueError, match="int8-shared"):
        batch.join(second)


def test_calibrated_cache_scales_are_the_same_for_every_request(bundles) -> None:
    """An ``int8-shared`` prefill returns its calibrated scales whatever it is given; ``int8``'s follow the input."""
    for name, same in (("int8_kv", True), ("int8_kv_own", False)):
        runner = _runner(bundles[name])
        one, two = (run.prefill()[1] for run in _decodes(runner, 2, seed=8))
        equal = all(np.array_equal(a, b) for a, b in zip(one.k_scale + one.v_scale, two.k_scale + two.v_scale,
                                                         strict=True))
        assert equal is same


def test_a_fault_in_the_loop_fails_what_runs_and_the_loop_goes_on(runners) -> None:
    """Should re-stacking the batch cache fail (injected here), every decode in the loop ends with that error in
    the thread that waits for it instead of waiting for ever, and the next decode handed over runs as usual."""
    from daemon.model.decode_loop import DecodeLoop

    runner = runners["fp32"]
    loop = DecodeLoop(runner, max_batch=4)
    first, second, later = _decodes(runner, 3, seed=12)
    second.early_stop_num = first.early_stop_num = 400  # still running when the fault comes

    def broken(run) -> None:
        raise RuntimeError("re-stacking failed")

    loop._batches[False].leave = broken  # type: ignore[method-assign]
    tickets = [loop.submit(first, foreground=False), loop.submit(second, foreground=False)]
    cut = tickets[1].tokens()
    next(cut)
    cut.close()  # its leave is where the fault comes
    with pytest.raises(RuntimeError, match="re-stacking failed"):
        tickets[0].result()
    alone = _decodes(runner, 3, seed=12)[2].to_end()
    _assert_same([alone], [loop.submit(later, foreground=False).result()])
