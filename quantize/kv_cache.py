"""An int8 K/V cache for the T2S graphs (``gsv-edge quantize --kv-cache int8``).

Each decode step reads the whole cache, so storing it as int8 cuts both the memory and the step's reads by 4x. The
graphs are rewritten, not re-exported:

* ``t2s_prefill`` quantizes its own K/V output: per layer, one scale per channel (head x head_dim), the
  largest magnitude the prefill saw in that channel times ``KV_HEADROOM``, over 127. The scales are outputs
  too. They come from this request's own positions (the voice's real prompt tokens included), so no
  calibration set has to match the user's weights; tokens generated later that go beyond a channel's range
  are clipped to it.
* ``t2s_step``'s ``GroupQueryAttention`` nodes keep their cache as int8 with those scales as inputs
  (``kv_cache_bit_width=8``, ``PER_CHANNEL``): past and present buffers are int8, the new row is quantized by
  the node itself.

``--kv-cache int8-shared`` gives every request the same scales instead, calibrated at conversion: the prefill
is run on seeded inputs (random phones, BERT features and prompt tokens of a typical length) and each channel's
largest magnitude, times ``KV_HEADROOM``, over 127, becomes a constant of the graph. Decodes that share their
scales can share a step (``GroupQueryAttention`` takes one set per batch), so such a bundle batches; a request
whose values go beyond a channel's calibrated range is clipped to it.

The fidelity report's teacher-forced logits go through these graphs, so it measures the cache's error too.
The step graph needs a newer onnxruntime than the plain one (see ``MIN_ONNXRUNTIME``), which the manifest
records so an older one refuses the bundle by name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from quantize.onnx_io import save_with_weights_beside

KV_HEADROOM = 1.25  # range above the prefill's largest value, for later tokens
MIN_SCALE = 1e-8  # a channel that is zero everywhere still divides safely
# GroupQueryAttention's quantized cache on the CPU: tested with 1.32 (1.23, JetPack 6's, lacks the attribute).
MIN_ONNXRUNTIME = "1.32"
KV_OUTPUTS = ("present_k", "present_v")
CALIBRATION_SEED = 20261206
CALIBRATION_RUNS = 8
CALIBRATION_PHONES = 40  # phones of a sentence and its reference transcript
CALIBRATION_PROMPT = 150  # prompt tokens of a 6 s reference clip at 25 Hz


def calibrated_scales(prefill: Path, phone_vocab: int, token_vocab: int, headroom: float = KV_HEADROOM
                      ) -> dict[str, np.ndarray]:
    """Per layer and channel, the scale that holds the largest K and V magnitude the float ``prefill`` gives
    over CALIBRATION_RUNS seeded inputs (phone ids below ``phone_vocab``, prompt tokens below ``token_vocab``:
    the manifest's ``phoneme_vocab_size`` and ``vocab_size``), times ``headroom``: ``present_k`` /
    ``present_v`` [L, 1, H, 1, Dh]."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(prefill), providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in session.get_inputs()}
    bert_dim = int(inputs["bert"].shape[1])
    rng = np.random.default_rng(CALIBRATION_SEED)
    largest: dict[str, np.ndarray] = {}
    for run in range(CALIBRATION_RUNS):
        feeds = {
            "phone_ids": rng.integers(1, phone_vocab, (1, CALIBRATION_PHONES)).astype(np.int64),
            # half the runs with BERT features (Chinese), half with upstream's zeros (every other language)
            "bert": (rng.standard_normal((1, bert_dim, CALIBRATION_PHONES)) * (run % 2)).astype(np.float32),
            "prompt": rng.integers(0, token_vocab, (1, CALIBRATION_PROMPT)).astype(np.int64),
        }
        out = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True))
        for name in KV_OUTPUTS:
            peak = np.abs(out[name]).max(axis=3, keepdims=True)
            largest[name] = peak if name not in largest else np.maximum(largest[name], peak)
    return {name: np.maximum(peak * headroom / 127, MIN_SCALE).astype(np.float32) for name, peak in largest.items()}


def quantize_prefill_outputs(path: Path, headroom: float = KV_HEADROOM,
                             scales: dict[str, np.ndarray] | None = None) -> None:
    """``present_k`` / ``present_v`` [L, 1, H, T, Dh] become int8, with ``present_k_scale`` /
    ``present_v_scale`` [L, 1, H, 1, Dh] (float) beside them: each request's own, or the ``scales`` given
    (:func:`calibrated_scales`) for every request."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    outputs = {o.name: o for o in graph.output}
    missing = [name for name in KV_OUTPUTS if name not in outputs]
    if missing:
        raise ValueError(f"{path.name}: no output {missing[0]!r}; not a T2S prefill graph")
    if scales is None:
        graph.initializer.extend([
            numpy_helper.from_array(np.array(headroom / 127, np.float32), "kv_scale_per_max"),
            numpy_helper.from_array(np.array(MIN_SCALE, np.float32), "kv_min_scale"),
        ])
    graph.initializer.extend([
        numpy_helper.from_array(np.array(-128, np.float32), "kv_int8_min"),
        numpy_helper.from_array(np.array(127, np.float32), "kv_int8_max"),
    ])
    for name in KV_OUTPUTS:
        raw = f"{name}_float"
        for node in graph.node:
            node.output[:] = [raw if o == name else o for o in node.output]
        scale = f"{name}_scale"
        if scales is None:
            graph.node.extend([
                helper.make_node("Abs", [raw], [f"{name}_abs"]),
                helper.make_node("ReduceMax", [f"{name}_abs"], [f"{name}_max"], axes=[3], keepdims=1),
                helper.make_node("Mul", [f"{name}_max", "kv_scale_per_max"], [f"{name}_scaled"]),
                helper.make_node("Max", [f"{name}_scaled", "kv_min_scale"], [scale]),
            ])
        else:
            graph.initializer.append(numpy_helper.from_array(scales[name], f"{scale}_calibrated"))
            graph.node.append(helper.make_node("Identity", [f"{scale}_calibrated"], [scale]))
        graph.node.extend([
            helper.make_node("Div", [raw, scale], [f"{name}_div"]),
            helper.make_node("Round", [f"{name}_div"], [f"{name}_round"]),
            helper.make_node("Clip", [f"{name}_round", "kv_int8_min", "kv_int8_max"], [f"{name}_clip"]),
            helper.make_node("Cast", [f"{name}_clip"], [name], to=TensorProto.INT8),
        ])
        old = outputs[name]
        dims = old.type.tensor_type.shape.dim
        shape = [d.dim_param or d.dim_value for d in dims]
        old.type.tensor_type.elem_type = TensorProto.INT8
        scale_shape = shape[:3] + [1] + shape[4:]
        graph.output.append(helper.make_tensor_value_info(scale, TensorProto.FLOAT, scale_shape))
    save_with_weights_beside(model, path)


def quantize_step_cache(path: Path) -> None:
    """Every ``GroupQueryAttention`` node of the step graph keeps an int8 cache: ``past_*`` / ``present_*``
    become int8 and each layer gains inputs ``k_scale_<i>`` / ``v_scale_<i>`` [1, H, 1, Dh]."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    graph = model.graph
    inputs = {i.name: i for i in graph.input}
    outputs = {o.name: o for o in graph.output}
    attention = [n for n in graph.node if n.op_type == "GroupQueryAttention"]
    if not attention:
        raise ValueError(f"{path.name}: no GroupQueryAttention node; not a T2S step graph")
    for node in attention:
        past_key, past_value = node.input[3], node.input[4]
        if not past_key.startswith("past_key_") or past_key not in inputs:
            raise ValueError(f"{path.name}: node {node.name!r} does not read a past_key_<i> input")
        layer = past_key.removeprefix("past_key_")
        heads = next(a.i for a in node.attribute if a.name == "num_heads")
        head_dim = inputs[past_key].type.tensor_type.shape.dim[3].dim_value
        scales = [f"k_scale_{layer}", f"v_scale_{layer}"]
        # inputs 7-11 (rotary caches, position ids, attention bias, head sink) stay absent
        node.input.extend([""] * (12 - len(node.input)) + scales)
        quantized = {"kv_cache_bit_width": 8, "k_quant_type": "PER_CHANNEL", "v_quant_type": "PER_CHANNEL"}
        kept = [a for a in node.attribute if a.name not in quantized]  # the optimiser writes the defaults out
        del node.attribute[:]
        node.attribute.extend([*kept, *(helper.make_attribute(k, v) for k, v in quantized.items())])
        graph.input.extend(helper.make_tensor_value_info(s, TensorProto.FLOAT, [1, heads, 1, head_dim])
                           for s in scales)
        for name in (past_key, past_value):
            inputs[name].type.tensor_type.elem_type = TensorProto.INT8
        for name in node.output[1:3]:
            outputs[name].type.tensor_type.elem_type = TensorProto.INT8
    save_with_weights_beside(model, path)
