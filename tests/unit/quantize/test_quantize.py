"""``gsv-edge quantize`` on the demo bundle: the int8 / fp16 / mixed bundles load, record what was done,
stay within measured fidelity bounds and synthesize through the normal engine.

Fidelity bounds, from measurements of the demo bundle (random weights, seed 1234) and of full-size v2
(random weights), with margin:

* int8 T2S decoder, logit cosine (teacher forced, 32 steps): demo min 0.9998, full-size 0.994 -> >= 0.99.
  Top-1 agreement: demo 94 %, full size 100 %. Random weights give near-flat logits where a 1e-4 change can
  swap the top two tokens, so the bound is loose: >= 80 %.
* HuBERT int8, feature cosine: demo 0.9998, full size 0.996 -> >= 0.99.
* fp16 (every graph but the prompt quantizer; the K/V cache float16 too): T2S cosine 1.00000 -> >= 0.9999
  and top-1 >= 95 %; SoVITS waveform SNR 60 dB -> >= 40 dB, log-mel distance 5e-4 -> <= 0.01 (natural-log
  units). An fp32 prefill feeding an fp16 step (per-graph override) is held to the same T2S bounds.
* graphs left fp32 must be bit-identical: SNR infinite, style cosine 1, prompt codes 100 % identical.
* int8 K/V cache (opt-in ``--kv-cache int8``), fp32 weights so only the cache differs: demo logit cosine
  0.999998, max abs diff 0.005, top-1 100 %; full size with int8 weights 0.99497 against 0.99502 without ->
  cosine >= 0.999 and top-1 >= 95 % alone, and with int8 weights the same bounds as int8.
* int8 K/V cache with calibrated scales (``--kv-cache int8-shared``), fp32 weights: demo logit cosine 0.999995, max
  abs diff 0.009, top-1 100 %; full size with int8 weights 0.99323 against 0.99413 with each request's own
  scales -> the same bounds as ``int8``.
* static int8 vocoder (opt-in ``--graph sovits_decoder=int8``): SNR demo 20.7 dB, full size 24 dB ->
  >= 15 dB (a broken calibration or a quantized flow lands near 0 dB); log-mel distance demo 0.040 -> <= 0.15.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest

from daemon.commands import exit_codes

pytest.importorskip("torch")

from daemon.audio.wav import encode_wav  # noqa: E402
from daemon.model.bundle import Bundle, BundleError, version_tuple  # noqa: E402
from daemon.model.engine import Engine, SynthesisOptions  # noqa: E402
from daemon.model.hardware import HardwareProfile  # noqa: E402
from quantize.fidelity import graph_session, log_mel, snr_db  # noqa: E402
from quantize.kv_cache import KV_HEADROOM  # noqa: E402
from quantize.onnx_io import describe_io  # noqa: E402
from quantize.quantization import QuantizeError, quantize_bundle  # noqa: E402

QUIET = {"log": lambda msg: None}


@pytest.fixture(scope="module")
def demo(demo_bundle: Path) -> Path:
    """The session's demo bundle, only read here: every bundle quantized from it goes to ``quantized``."""
    return demo_bundle


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("quantized")


@pytest.fixture(scope="module")
def int8(demo: Path, quantized: Path) -> Path:
    out = quantized / "int8"
    quantize_bundle(demo, out, "int8", **QUIET)
    return out


@pytest.fixture(scope="module")
def fp16(demo: Path, quantized: Path) -> Path:
    out = quantized / "fp16"
    quantize_bundle(demo, out, "fp16", **QUIET)
    return out


def test_int8_manifest_records_precision_provenance_and_sizes(demo: Path, int8: Path):
    source, bundle = Bundle.load(demo), Bundle.load(int8)
    assert bundle.precision == "int8"
    assert bundle.manifest.provenance.quantized_from == source.digest
    assert bundle.digest != source.digest
    expected = {"t2s_prefill": "int8", "t2s_step": "int8", "hubert": "int8", "sovits_decoder": "fp32",
                "sovits_ref_style": "fp32", "sovits_extract_latent": "fp32", "t2s_step_batch": "int8"}
    assert {n: g.precision for n, g in bundle.graphs.items()} == expected
    for name, graph in bundle.graphs.items():
        if graph.precision == "int8":  # the batch graph is made from t2s_step
            assert graph.size < 0.6 * source.graphs[name.removesuffix("_batch")].size, name
        else:
            assert graph.sha256 == source.graphs[name].sha256, f"{name} should be copied unchanged"
    assert bundle.manifest.fidelity.sizes["t2s_step"].bytes == bundle.graphs["t2s_step"].size
    assert set(bundle.manifest.parity) == {n for n, p in expected.items() if p == "fp32"}
    assert bundle.manifest.fidelity.sizes["t2s_step_batch"].source_bytes == source.graphs["t2s_step"].size


LAYOUT_OPS = {"Transpose", "Reshape", "Slice", "Unsqueeze", "Squeeze", "Identity", "Cast", "Split", "Flatten"}


def _float_weight_behind(tensor: str, model: onnx.ModelProto) -> str | None:
    """The float weight matrix ``tensor`` is, or is made from by layout ops alone (a transpose, a slice the
    exporter left unfolded, ...); None when ``tensor`` is computed (an activation)."""
    weights = {i.name: i for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    while tensor not in weights:
        node = producers.get(tensor)
        if node is None or node.op_type not in LAYOUT_OPS:
            return None
        tensor = node.input[0]  # the data; the other inputs are shapes, axes and bounds
    w = weights[tensor]
    return tensor if w.data_type == onnx.TensorProto.FLOAT and len(w.dims) >= 2 else None


def test_int8_quantizes_every_constant_weight_matmul(int8: Path):
    """Graph optimisation runs first: no float MatMul / Gemm is left whose weight is an initializer or is
    made from one by layout ops (a weight slice the exporter failed to fold counts too)."""
    for graph in ("t2s_prefill", "t2s_step", "hubert"):
        model = onnx.load(str(int8 / f"{graph}.onnx"))
        left = [(n.name, w) for n in model.graph.node if n.op_type in ("MatMul", "Gemm")
                for w in [_float_weight_behind(n.input[1], model)] if w]
        assert not left, f"{graph}: unquantized weight MatMuls {left[:5]}"
        assert any(n.op_type == "MatMulInteger" for n in model.graph.node)


def test_int8_fidelity_within_bounds(int8: Path):
    g = Bundle.load(int8).manifest.fidelity.graphs
    assert g["t2s"]["steps"] == 32
    assert g["t2s"]["logit_cosine_min"] >= 0.99
    assert g["t2s"]["top1_agreement"] >= 0.8
    assert g["hubert"]["cosine"] >= 0.99
    assert math.isinf(g["sovits_decoder"]["snr_db"]) and g["sovits_decoder"]["log_mel_distance"] == 0.0
    assert g["sovits_ref_style"]["cosine"] == pytest.approx(1.0, abs=1e-9)
    assert g["sovits_extract_latent"]["codes_identical"] == 1.0


def test_fp16_fidelity_within_bounds(demo: Path, fp16: Path):
    bundle = Bundle.load(fp16)
    assert bundle.precision == "fp16" and bundle.graphs["sovits_decoder"].precision == "fp16"
    assert bundle.graphs["sovits_extract_latent"].precision == "fp32"
    g = bundle.manifest.fidelity.graphs
    assert g["t2s"]["logit_cosine_min"] >= 0.9999
    assert g["t2s"]["top1_agreement"] >= 0.95
    assert g["sovits_decoder"]["snr_db"] >= 40
    assert g["sovits_decoder"]["log_mel_distance"] <= 0.01
    assert g["hubert"]["cosine"] >= 0.999
    # inputs and outputs stay float32 (the engine feeds the same arrays to every precision) except the K/V
    # cache, which stays float16 so a step never converts it; the manifest says so, as the graph does
    source = Bundle.load(demo)
    for graph in ("t2s_prefill", "t2s_step"):
        for kind in ("inputs", "outputs"):
            want = [{**io, "dtype": "float16"} if io["name"].startswith(("past_", "present_")) else io
                    for io in getattr(source.graphs[graph], kind)]
            assert getattr(bundle.graphs[graph], kind) == want
            assert describe_io(fp16 / bundle.graphs[graph].file)[kind == "outputs"] == want
    assert any(io["name"] == "past_key_0" for io in bundle.graphs["t2s_step"].inputs)
    assert any(io["name"] == "present_k" for io in bundle.graphs["t2s_prefill"].outputs)
    assert bundle.graphs["sovits_decoder"].inputs == source.graphs["sovits_decoder"].inputs


def test_quantized_bundle_synthesizes_through_the_engine(int8: Path, tmp_path: Path):
    engine = Engine(Bundle.load(int8), HardwareProfile.load("x86-cpu"), tmp_path / "state")
    t = np.arange(4 * 32000) / 32000
    clip = 0.3 * np.sin(2 * np.pi * 150 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    engine.register_voice("q", encode_wav(clip, 32000), "今天天气很好。", "zh")
    chunks = list(engine.stream("你好，世界。", "q", "zh", SynthesisOptions(seed=0)))
    audio = np.concatenate(chunks)
    assert audio.dtype == np.float32 and audio.size > 0.3 * engine.sample_rate
    assert np.isfinite(audio).all() and np.abs(audio).max() <= 1.0
    assert engine.graph_runs["sovits_decoder"] == 1  # one sentence, one SoVITS decode


def test_fp16_bundle_speaks_through_the_engine_on_a_float16_cache(fp16: Path, tmp_path: Path):
    engine = Engine(Bundle.load(fp16), HardwareProfile.load("x86-cpu"), tmp_path / "state")
    assert engine.t2s.cache_dtype == np.float16
    t = np.arange(4 * 32000) / 32000
    engine.register_voice("h", encode_wav(0.3 * np.sin(2 * np.pi * 150 * t), 32000), "今天天气很好。", "zh")
    audio = np.concatenate(list(engine.stream("你好，世界。", "h", "zh", SynthesisOptions(seed=0))))
    assert audio.dtype == np.float32 and np.isfinite(audio).all() and audio.size > 0.3 * engine.sample_rate


def test_fp32_prefill_feeds_an_fp16_step_cache(demo: Path, tmp_path: Path):
    """Per-graph overrides can leave the prefill fp32 under an fp16 step: its rows are converted once into
    the step's float16 cache, and the decode stays within the fp16 bounds."""
    out = tmp_path / "fp16-step"
    manifest = quantize_bundle(demo, out, "fp16", {"t2s_prefill": "fp32"}, **QUIET)
    outputs = {o["name"]: o["dtype"] for o in manifest.graphs["t2s_prefill"].outputs}
    assert outputs["present_k"] == "float"
    t2s = manifest.fidelity.graphs["t2s"]
    assert t2s["logit_cosine_min"] >= 0.9999 and t2s["top1_agreement"] >= 0.95 and t2s["logit_max_abs_diff"] > 0


def test_cli_mixed_override_and_refusals(demo: Path, int8: Path, tmp_path: Path, capsys):
    from daemon.commands.cli import main

    out = tmp_path / "mixed"
    assert main(["quantize", str(demo), "--precision", "mixed", "--graph", "hubert=fp16", "-o", str(out)]) == 0
    assert "top-1 agreement" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["precision"] == "mixed"
    assert {n: g["precision"] for n, g in manifest["graphs"].items() if g["precision"] != "fp32"} == {
        "t2s_prefill": "int8", "t2s_step": "int8", "t2s_step_batch": "int8", "hubert": "fp16"}
    assert not (tmp_path / "mixed.partial").exists()

    unknown_graph = ["quantize", str(demo), "--precision", "int8", "--graph", "nope=int8", "-o", str(tmp_path / "x")]
    assert main(unknown_graph) == exit_codes.INPUT
    assert "no graph 'nope'" in capsys.readouterr().err
    with pytest.raises(QuantizeError, match="already int8"):
        quantize_bundle(int8, tmp_path / "again", "int8", **QUIET)
    assert not (tmp_path / "x").exists() and not (tmp_path / "again").exists()


def test_signal_measures():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(32000).astype(np.float32)
    assert math.isinf(snr_db(x, x))
    assert snr_db(x, x + 0.01 * rng.standard_normal(x.size)) == pytest.approx(40, abs=0.5)
    mel = log_mel(x, 32000, 2048, 640)
    assert mel.shape == (51, 100) and np.isfinite(mel).all()


def test_static_int8_vocoder_is_opt_in_measured_and_speaks(demo: Path, tmp_path: Path):
    """``--graph sovits_decoder=int8``: the generator's convolutions become static QDQ int8 (calibrated on the
    bundle's own seeded inputs), the text encoder and flow stay fp32, the fidelity report measures the
    waveform against fp32 and the engine speaks with it."""
    out = tmp_path / "int8-vocoder"
    manifest = quantize_bundle(demo, out, "int8", {"sovits_decoder": "int8"}, **QUIET)
    assert manifest.graphs["sovits_decoder"].precision == "int8"
    graph = onnx.load(str(out / "sovits_decoder.onnx")).graph
    convs = [n for n in graph.node if n.op_type in ("Conv", "ConvTranspose")]
    dequantized = {o for d in graph.node if d.op_type == "DequantizeLinear" for o in d.output}
    edges = ("/dec/conv_pre/", "/dec/cond/", "/dec/conv_post/")
    inner = [n for n in convs if n.name.startswith("/dec/") and not n.name.startswith(edges)]
    assert inner and all(n.input[1] in dequantized for n in inner), "generator weights are int8"
    assert all(n.input[1] not in dequantized for n in convs if n not in inner), "encoder, flow, edges stay fp32"
    voc = manifest.fidelity.graphs["sovits_decoder"]
    assert 15 <= voc["snr_db"] < math.inf and voc["log_mel_distance"] <= 0.15
    engine = Engine(Bundle.load(out), HardwareProfile.load("x86-cpu"), tmp_path / "state")
    t = np.arange(4 * 32000) / 32000
    engine.register_voice("q", encode_wav(0.3 * np.sin(2 * np.pi * 150 * t), 32000), "今天天气很好。", "zh")
    audio = np.concatenate(list(engine.stream("你好。", "q", "zh", SynthesisOptions(seed=0))))
    assert np.isfinite(audio).all() and audio.size > 0.3 * engine.sample_rate and np.abs(audio).max() > 0


def _cache_only(demo: Path, quantized: Path, kv_cache: str) -> Path:
    """Every graph fp32 and the int8 K/V cache ``kv_cache``: the fidelity report then measures the cache alone."""
    out = quantized / f"kv-{kv_cache}"
    keep = {name: "fp32" for name in Bundle.load(demo).graphs}
    quantize_bundle(demo, out, "int8", keep, kv_cache=kv_cache, **QUIET)
    return out


@pytest.fixture(scope="module")
def kv8(demo: Path, quantized: Path) -> Path:
    """Each request's own cache scales."""
    return _cache_only(demo, quantized, "int8")


def test_int8_kv_cache_is_recorded_and_within_bounds(kv8: Path):
    bundle = Bundle.load(kv8)
    assert bundle.manifest.t2s.kv_cache == "int8"
    assert bundle.manifest.requires_onnxruntime.version == "1.32"
    assert bundle.manifest.provenance.quantization.kv_cache == "int8"
    step = {i["name"]: i for i in bundle.graphs["t2s_step"].inputs}
    n_layer = bundle.manifest.t2s.n_layer
    for i in range(n_layer):
        assert step[f"past_key_{i}"]["dtype"] == step[f"past_value_{i}"]["dtype"] == "int8"
        assert step[f"k_scale_{i}"]["dtype"] == "float"
    outputs = {o["name"]: o["dtype"] for o in bundle.graphs["t2s_prefill"].outputs}
    assert outputs == {"logits": "float", "present_k": "int8", "present_v": "int8",
                       "present_k_scale": "float", "present_v_scale": "float"}
    from daemon.commands.inspect import describe_bundle

    text = describe_bundle(kv8)
    assert "T2S K/V cache int8 (needs onnxruntime >= 1.32)" in text and f"k_scale_0..{n_layer - 1}[" in text
    t2s = bundle.manifest.fidelity.graphs["t2s"]
    assert 0.999 <= t2s["logit_cosine_min"] < 1.0 and t2s["logit_max_abs_diff"] > 0  # measured, not skipped
    assert t2s["top1_agreement"] >= 0.95


def test_int8_prefill_cache_dequantizes_to_the_fp32_rows(demo: Path, kv8: Path):
    """Each int8 row times its channel's scale is the fp32 prefill's row to within half a step, and the
    scale is the channel's largest magnitude times the headroom over 127."""
    rng = np.random.default_rng(3)
    cfg = Bundle.load(demo).manifest.t2s
    feeds = {"phone_ids": rng.integers(0, cfg.phoneme_vocab_size, (1, 9)).astype(np.int64),
             "bert": rng.standard_normal((1, 1024, 9)).astype(np.float32),
             "prompt": rng.integers(0, cfg.eos, (1, 12)).astype(np.int64)}
    _, want_k, want_v = graph_session(Bundle.load(demo), "t2s_prefill").run(None, feeds)
    _, k, v, k_scale, v_scale = graph_session(Bundle.load(kv8), "t2s_prefill").run(None, feeds)
    for want, got, scale in ((want_k, k, k_scale), (want_v, v, v_scale)):
        assert got.dtype == np.int8 and scale.shape == want.shape[:3] + (1,) + want.shape[4:]
        np.testing.assert_allclose(scale, np.abs(want).max(axis=3, keepdims=True) * KV_HEADROOM / 127, rtol=1e-5)
        assert np.all(np.abs(got.astype(np.float32) * scale - want) <= scale / 2 + 1e-6)
        assert np.abs(got).max() <= round(127 / KV_HEADROOM) + 1  # the headroom is left unused by the prefill


@pytest.fixture(scope="module")
def kv8_shared(demo: Path, quantized: Path) -> Path:
    """Cache scales calibrated at conversion, the same for every request."""
    return _cache_only(demo, quantized, "int8-shared")


def test_a_shared_int8_cache_has_the_calibrated_scales_for_every_request_and_stays_within_bounds(
        demo: Path, kv8_shared: Path):
    """``int8-shared``: the prefill returns the scales calibrated at conversion whatever it is given, rows within
    their channel's range dequantize to the fp32 prefill's within half a step (beyond it they are clipped), and
    the fidelity report holds it to the int8 cache's bounds."""
    from quantize.kv_cache import calibrated_scales

    bundle = Bundle.load(kv8_shared)
    assert bundle.manifest.t2s.kv_cache == bundle.manifest.provenance.quantization.kv_cache == "int8-shared"
    cfg = bundle.manifest.t2s
    calibrated = calibrated_scales(Bundle.load(demo).graph_path("t2s_prefill"), cfg.phoneme_vocab_size,
                                   cfg.vocab_size)
    for seed in (1, 2):
        rng = np.random.default_rng(seed)
        n = 7 + 5 * seed
        feeds = {"phone_ids": rng.integers(0, cfg.phoneme_vocab_size, (1, n)).astype(np.int64),
                 "bert": rng.standard_normal((1, 1024, n)).astype(np.float32),
                 "prompt": rng.integers(0, cfg.eos, (1, 3 * n)).astype(np.int64)}
        _, want_k, want_v = graph_session(Bundle.load(demo), "t2s_prefill").run(None, feeds)
        _, k, v, k_scale, v_scale = graph_session(bundle, "t2s_prefill").run(None, feeds)
        for want, got, scale, name in ((want_k, k, k_scale, "present_k"), (want_v, v, v_scale, "present_v")):
            np.testing.assert_array_equal(scale, calibrated[name])
            held = np.clip(want, -128 * scale, 127 * scale)  # the int8 range
            assert np.all(np.abs(got.astype(np.float32) * scale - held) <= scale / 2 + 1e-6)
    t2s = bundle.manifest.fidelity.graphs["t2s"]
    assert 0.999 <= t2s["logit_cosine_min"] < 1.0 and t2s["logit_max_abs_diff"] > 0
    assert t2s["top1_agreement"] >= 0.95


def test_int8_kv_cache_speaks_through_the_engine(demo: Path, tmp_path: Path):
    """int8 weights and cache together: the bounds of int8, and the engine decodes on int8 buffers."""
    out = tmp_path / "int8-kv"
    manifest = quantize_bundle(demo, out, "int8", kv_cache="int8", **QUIET)
    t2s = manifest.fidelity.graphs["t2s"]
    assert t2s["logit_cosine_min"] >= 0.99 and t2s["top1_agreement"] >= 0.8
    engine = Engine(Bundle.load(out), HardwareProfile.load("x86-cpu"), tmp_path / "state")
    t = np.arange(4 * 32000) / 32000
    engine.register_voice("q", encode_wav(0.3 * np.sin(2 * np.pi * 150 * t), 32000), "今天天气很好。", "zh")
    # the step session takes int8 buffers (binding float32 ones would fail), and a decode runs on them
    assert {i.type for i in engine.t2s.step_session.get_inputs() if i.name.startswith("past_")} == {"tensor(int8)"}
    audio = np.concatenate(list(engine.stream("你好，世界。", "q", "zh", SynthesisOptions(seed=0))))
    assert np.isfinite(audio).all() and audio.size > 0.3 * engine.sample_rate and np.abs(audio).max() > 0


def test_int8_kv_cache_refusals(demo: Path, kv8: Path, tmp_path: Path):
    with pytest.raises(QuantizeError, match="fp32 or int8"):
        quantize_bundle(demo, tmp_path / "x", "fp16", kv_cache="int8", **QUIET)
    with pytest.raises(QuantizeError, match="int8 K/V cache"):
        quantize_bundle(kv8, tmp_path / "y", "int8", **QUIET)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_a_bundle_needing_a_newer_onnxruntime_is_refused_by_name(kv8: Path, tmp_path: Path):
    assert version_tuple("1.32.0") == (1, 32, 0) and version_tuple("1.23.2+cu126") == (1, 23, 2)
    assert version_tuple("1.33.0.dev20261101") == (1, 33, 0) and version_tuple("1.32") < version_tuple("1.32.1")
    import shutil

    copy = tmp_path / "future"
    shutil.copytree(kv8, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["requires_onnxruntime"]["version"] = "99.0"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"needs onnxruntime >= 99.0 for the int8 K/V cache.*--kv-cache fp32"):
        Bundle.load(copy)


def test_demo_conversion_parity_is_within_the_bounds(demo: Path):
    """The step graph's K/V parity compares the rows it wrote (past rows and the new one), not the rest of
    the buffer, which holds whatever the runtime allocated; every figure is within the converter's bounds."""
    from quantize.convert import PARITY_BOUNDS, parity_failures

    parity = Bundle.load(demo).manifest.parity
    kv = {k: v["max_abs_diff"] for k, v in parity["t2s_step"].items() if k.startswith("present_")}
    assert len(kv) == 2 * Bundle.load(demo).manifest.t2s.n_layer
    assert max(kv.values()) <= PARITY_BOUNDS["K/V rows"]
    assert parity_failures(parity) == []


def test_parity_over_its_bound_is_refused():
    from quantize.convert import PARITY_BOUNDS, ConversionError, check_parity

    ok = {"t2s_step": {"logits": {"max_abs_diff": 1e-6}, "present_key_0": {"max_abs_diff": 1e-6}},
          "sovits_extract_latent": {"codes": {"identical": True}}}
    check_parity(ok)
    bad = {**ok, "t2s_step": {**ok["t2s_step"], "present_value_3": {"max_abs_diff": 2.9}}}
    with pytest.raises(ConversionError, match=r"t2s_step present_value_3: max\|diff\| 2\.90e\+00 > 1e-03 "
                                              r"\(the bound for K/V rows\)"):
        check_parity(bad)
    with pytest.raises(ConversionError, match="sovits_extract_latent codes: not identical"):
        check_parity({"sovits_extract_latent": {"codes": {"identical": False}}})
    with pytest.raises(ConversionError, match="t2s_step logits: max"):
        check_parity(ok, {**PARITY_BOUNDS, "logits": 1e-7})
    with pytest.raises(ConversionError, match="new_output: no parity bound"):
        check_parity({"g": {"new_output": {"max_abs_diff": 0.0}}})


def test_convert_refuses_a_bundle_outside_its_parity_bounds(tmp_path: Path):
    """Checked before the bundle is renamed into place: nothing is left, neither the bundle nor its .partial."""
    from quantize.convert import PARITY_BOUNDS, ConversionError, convert
    from quantize.demo import build_sources

    files = build_sources(tmp_path / "src")
    out = tmp_path / "bundle"
    with pytest.raises(ConversionError, match=r"parity check failed, no bundle written .* t2s_prefill logits: max"):
        convert(files, out, parity_bounds={**PARITY_BOUNDS, "logits": 1e-9}, **QUIET)
    assert not out.exists() and not out.with_name("bundle.partial").exists()


def test_engine_reports_the_precision_of_the_graphs_loaded(demo: Path, int8: Path, tmp_path: Path):
    """Whatever the profile prefers (x86-cpu: int8), the engine reports the bundle's graphs: one name when they
    agree, per graph when a quantized bundle keeps some fp32."""
    profile = HardwareProfile.load("x86-cpu")
    assert profile.precision == "int8"
    assert Engine(Bundle.load(demo), profile, tmp_path / "a").precision == "fp32"
    assert Engine(Bundle.load(int8), profile, tmp_path / "b").precision == {
        "t2s_prefill": "int8", "t2s_step": "int8", "hubert": "int8", "sovits_decoder": "fp32",
        "sovits_ref_style": "fp32", "sovits_extract_latent": "fp32", "t2s_step_batch": "int8"}
