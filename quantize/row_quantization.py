"""``t2s_step_batch``: the int8 step graph with each batch row's activations quantized on their own.

``quantize_dynamic`` quantizes an activation with one scale and zero point for the whole tensor
(``DynamicQuantizeLinear``). In a batch that scale depends on the other rows, so a sequence's logits would
change with its batch mates. This rewrite gives every row its own: the same range rule as
``DynamicQuantizeLinear`` (the row's min and max, widened to hold 0, over 255), so a row of a batch is quantized
exactly as it is alone, and as the per-tensor graph quantizes a batch of one.

onnxruntime's ``MatMulInteger`` takes one activation zero point per tensor, so the rows' zero points are
folded out afterwards in int32: ``sum_k (a - zp) w = sum_k a w - zp * sum_k w``, with ``sum_k w`` (the weight's
column sums, its own zero point removed) a constant. The result feeds the graph's unchanged dequantizing
``Mul``, now with a per-row scale. The engine runs this graph only for two or more sequences: the fused
per-tensor kernel of ``t2s_step`` is faster for one (docs/performance.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from quantize.onnx_io import save_with_weights_beside


class RowQuantizationError(ValueError):
    """The graph is not one ``quantize_dynamic`` wrote; the message names the node."""


def quantize_rows(src: Path, dst: Path) -> None:
    """Write ``dst``: the int8 graph at ``src`` with per-row activation quantization (weights unchanged)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper, shape_inference

    model = onnx.load(str(src))
    graph = model.graph
    inferred = shape_inference.infer_shapes(model)
    ranks = {v.name: len(v.type.tensor_type.shape.dim)
             for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)
             if v.type.tensor_type.HasField("shape")}
    weights = {t.name: t for t in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    graph.initializer.extend([
        numpy_helper.from_array(np.array(0.0, np.float32), "row_q_zero"),
        numpy_helper.from_array(np.array(255.0, np.float32), "row_q_levels"),
    ])
    quantizers = [n for n in graph.node if n.op_type == "DynamicQuantizeLinear"]
    if not quantizers:
        raise RowQuantizationError(f"{src.name}: no DynamicQuantizeLinear node; not a dynamically quantized graph")
    nodes = list(graph.node)
    for dql in quantizers:
        x, (q, scale, zp) = dql.input[0], dql.output
        if x not in ranks:
            raise RowQuantizationError(f"{src.name}: node {dql.name!r}: the rank of {x!r} is unknown")
        axes = list(range(1, ranks[x]))
        p = f"{dql.name or x}_row"
        row = [
            helper.make_node("ReduceMin", [x], [f"{p}_min"], axes=axes, keepdims=1),
            helper.make_node("ReduceMax", [x], [f"{p}_max"], axes=axes, keepdims=1),
            helper.make_node("Min", [f"{p}_min", "row_q_zero"], [f"{p}_lo"]),
            helper.make_node("Max", [f"{p}_max", "row_q_zero"], [f"{p}_hi"]),
            helper.make_node("Sub", [f"{p}_hi", f"{p}_lo"], [f"{p}_range"]),
            helper.make_node("Div", [f"{p}_range", "row_q_levels"], [scale]),
            helper.make_node("Div", [f"{p}_lo", scale], [f"{p}_lo_q"]),
            helper.make_node("Sub", ["row_q_zero", f"{p}_lo_q"], [f"{p}_zp_f"]),
            helper.make_node("Round", [f"{p}_zp_f"], [f"{p}_zp_r"]),
            helper.make_node("Clip", [f"{p}_zp_r", "row_q_zero", "row_q_levels"], [f"{p}_zp"]),
            helper.make_node("Div", [x, scale], [f"{p}_div"]),
            helper.make_node("Round", [f"{p}_div"], [f"{p}_round"]),
            helper.make_node("Add", [f"{p}_round", f"{p}_zp"], [f"{p}_shift"]),
            helper.make_node("Clip", [f"{p}_shift", "row_q_zero", "row_q_levels"], [f"{p}_clip"]),
            helper.make_node("Cast", [f"{p}_clip"], [q], to=TensorProto.UINT8),
            helper.make_node("Cast", [f"{p}_zp"], [f"{p}_zp_i"], to=TensorProto.INT32),
        ]
        for node in consumers.get(zp, []):
            if node.op_type != "MatMulInteger" or node.input[2] != zp:
                raise RowQuantizationError(f"{src.name}: node {node.name!r} ({node.op_type}) reads the zero "
                                           f"point of {dql.name!r}; only MatMulInteger is rewritten")
            w, w_zp = node.input[1], node.input[3] if len(node.input) > 3 else ""
            if w not in weights:
                raise RowQuantizationError(f"{src.name}: node {node.name!r}: weight {w!r} is not a constant")
            w_int = numpy_helper.to_array(weights[w]).astype(np.int64)
            if w_zp:
                w_int = w_int - numpy_helper.to_array(weights[w_zp]).astype(np.int64)
            sums = f"{w}_column_sums"
            if sums not in weights:
                weights[sums] = numpy_helper.from_array(w_int.sum(axis=0).astype(np.int32), sums)
                graph.initializer.append(weights[sums])
            out = node.output[0]
            raw = f"{out}_raw"
            node.input[:] = [node.input[0], w, "", w_zp]
            node.output[0] = raw
            at = nodes.index(node) + 1  # the fold-out runs right after its MatMulInteger
            nodes[at:at] = [helper.make_node("Mul", [f"{p}_zp_i", sums], [f"{out}_offset"]),
                            helper.make_node("Sub", [raw, f"{out}_offset"], [out])]
        at = nodes.index(dql)
        nodes[at : at + 1] = row  # reads only what the quantizer read, so its place in the order holds
    del graph.node[:]
    graph.node.extend(nodes)
    save_with_weights_beside(model, dst)


ROW_TOLERANCE = 1e-4  # largest logit difference allowed between a row of a batch and the sequence alone
CHECK_SEED = 20261205


def row_difference(step: Path, batch: Path, seed: int = CHECK_SEED) -> float:
    """The largest logit difference between three sequences of different lengths stepped together through
    ``batch`` and each stepped alone through ``step``, on seeded random caches and tokens."""
    import onnxruntime as ort

    from daemon.model.t2s import KVCache, StepBinding, cache_dtype

    sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (step, batch)]
    inputs = {i.name: i for i in sessions[0].get_inputs()}
    n_layer = sum(name.startswith("past_key_") for name in inputs)
    n_head, head_dim = inputs["past_key_0"].shape[1], inputs["past_key_0"].shape[3]
    vocab = int(sessions[0].get_outputs()[0].shape[1])
    rng = np.random.default_rng(seed)
    lengths = np.array([5, 17, 11], np.int32)
    tokens, positions = rng.integers(0, vocab - 1, 3), lengths - 2
    together = KVCache(n_layer, n_head, head_dim, 32, cache_dtype(sessions[0]), batch=3)
    for layer in range(n_layer):
        together.k[layer][:] = rng.standard_normal(together.k[layer].shape) * (40 if together.dtype == np.int8 else 1)
        together.v[layer][:] = rng.standard_normal(together.v[layer].shape) * (40 if together.dtype == np.int8 else 1)
    if together.dtype == np.int8:  # an int8 cache (int8-shared): one set of scales for the batch
        together.k_scale, together.v_scale = ([rng.uniform(0.01, 0.05, (1, n_head, 1, head_dim)).astype(np.float32)
                                               for _ in range(n_layer)] for _ in range(2))
    logits = StepBinding(sessions[1], together, vocab).step(tokens, positions, lengths).copy()
    worst = 0.0
    for b in range(3):
        alone = KVCache(n_layer, n_head, head_dim, 32, together.dtype)
        alone.k_scale, alone.v_scale = together.k_scale, together.v_scale
        for layer in range(n_layer):
            alone.k[layer][:], alone.v[layer][:] = together.k[layer][b : b + 1], together.v[layer][b : b + 1]
        one = StepBinding(sessions[0], alone, vocab).step(tokens[b : b + 1], positions[b : b + 1], lengths[b : b + 1])
        worst = max(worst, float(np.abs(one[0] - logits[b]).max()))
    return worst
