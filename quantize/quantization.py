"""``gsv-edge quantize``: an fp32 bundle in, a smaller or faster bundle out, with its fidelity measured.

Each graph gets a precision of its own (``PRESETS``, overridable per graph):

* ``int8``: onnxruntime's graph optimiser runs first (constant folding at the provider-independent basic
  level), then dynamic int8 quantization of the MatMul / Gemm weights. The order matters: before folding,
  most weights reach their MatMul through Transpose / Identity nodes and the quantizer skips them.
  For ``sovits_decoder`` (never in a preset; ``--graph sovits_decoder=int8``) it is static instead: the
  HiFi-GAN generator's convolutions get int8 weights and calibrated uint8 activations (``QLinearConv``).
* ``fp16``: weights and activations in half precision, float32 at the graph's edges, so the engine feeds
  the same arrays. Meant for GPUs; onnxruntime's CPU provider has few fp16 kernels.
* ``fp32``: the graph is copied unchanged.

``--kv-cache int8`` also stores the T2S decode's K/V cache as int8 (:mod:`quantize.kv_cache`): a quarter of
the cache memory and of the reads per step, on onnxruntime >= 1.32 only (recorded in the manifest). Its scales
are each request's own, so its decodes run in turn; ``int8-shared`` calibrates one set at conversion for every
request, so they batch.

The result is a bundle like any other: same manifest format, each graph's ``precision``, new sizes and
digests, ``provenance.quantized_from`` and a ``fidelity`` section measured against the source bundle
(:mod:`quantize.fidelity`). Only onnx and onnxruntime are needed, not torch.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from daemon.commands import exit_codes
from daemon.model.bundle import (
    Bundle,
    BundleError,
    OutputPathError,
    building,
    check_output_dir,
    graph_files,
    weights_file,
)
from daemon.model.manifest import BATCH_GRAPH, MANIFEST, Manifest, Quantization, RuntimeRequirement

PRECISIONS = ("fp32", "fp16", "int8")
KV_CACHES = ("fp32", "int8", "int8-shared")

# Per preset, the precision of each graph; graphs not named stay fp32.
# sovits_extract_latent picks codebook entries by nearest distance: any rounding can flip a code, and it
# runs once per voice, so it is never reduced. The SoVITS decoder stays fp32 in every preset: its int8 form
# (``--graph sovits_decoder=int8``: static int8 convolutions in the HiFi-GAN generator) is faster but leaves an
# audible noise floor against fp32 (docs/performance.md), so it is opt-in only.
PRESETS: dict[str, dict[str, str]] = {
    "int8": {"t2s_prefill": "int8", "t2s_step": "int8", "hubert": "int8", "roberta": "int8",
             "sv_embedding": "int8"},
    "mixed": {"t2s_prefill": "int8", "t2s_step": "int8", "roberta": "int8"},
    "fp16": {"t2s_prefill": "fp16", "t2s_step": "fp16", "hubert": "fp16", "roberta": "fp16",
             "sv_embedding": "fp16", "sovits_decoder": "fp16", "sovits_ref_style": "fp16"},
}

Log = Callable[[str], None]


class QuantizeError(RuntimeError):
    """The bundle cannot be quantized as asked; the message says which graph or option and why."""


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def graph_plan(bundle: Bundle, preset: str, overrides: dict[str, str] | None = None) -> dict[str, str]:
    """Precision of every graph of ``bundle`` under ``preset`` with ``overrides`` applied."""
    if preset not in PRESETS:
        raise QuantizeError(f"unknown precision {preset!r}; expected one of {', '.join(PRESETS)}")
    plan = {name: PRESETS[preset].get(name, "fp32") for name in bundle.graphs}
    for name, precision in (overrides or {}).items():
        if name not in bundle.graphs:
            raise QuantizeError(f"--graph {name}={precision}: the bundle has no graph {name!r} "
                                f"(it has {', '.join(sorted(bundle.graphs))})")
        if precision not in PRECISIONS:
            raise QuantizeError(f"--graph {name}={precision}: precision must be one of {', '.join(PRECISIONS)}")
        plan[name] = precision
    reduced = {name: g.precision for name, g in bundle.graphs.items() if g.precision != "fp32"}
    if bundle.manifest.t2s.kv_cache != "fp32":
        reduced["t2s_step"] = f"{bundle.manifest.t2s.kv_cache} K/V cache"
    if reduced:  # precisions are recorded relative to fp32, and fidelity is measured against it
        name, precision = next(iter(reduced.items()))
        raise QuantizeError(f"{bundle.path}: graph {name!r} is already {precision}; quantize the fp32 bundle")
    return plan


def optimize_graph(src: Path, dst: Path) -> None:
    """onnxruntime's basic-level optimiser, saved to ``dst``: constant folding and redundant-node removal,
    which are provider-independent (the extended levels write CPU-specific fused ops)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = str(dst)
    # weights into dst's own weights file: otherwise onnxruntime points dst at src's, which is not beside it
    opts.add_session_config_entry("session.optimized_model_external_initializers_file_name", weights_file(dst).name)
    opts.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    opts.log_severity_level = 3
    ort.InferenceSession(str(src), sess_options=opts, providers=["CPUExecutionProvider"])


def remove_graph(path: Path) -> None:
    path.unlink(missing_ok=True)
    weights_file(path).unlink(missing_ok=True)


def quantize_int8(src: Path, dst: Path, work: Path) -> None:
    """Folded first, then int8 weights (per tensor, signed) for every MatMul / Gemm with a constant weight.

    Activations are quantized per call (dynamic), so no calibration data is needed."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    folded = work / f"{src.stem}.folded.onnx"
    optimize_graph(src, folded)
    quantize_dynamic(folded, dst, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"],
                     extra_options={"MatMulConstBOnly": True})
    remove_graph(folded)


GENERATOR_PREFIX = "/dec/"  # the exporter's node names for the HiFi-GAN generator (upstream's ``dec``)
# Generator convolutions kept fp32: the first, the style conditioning and the last (1-channel waveform) one
# touch the latent and the output directly; keeping them fp32 gains SNR at no cost in speed.
GENERATOR_EDGES = ("/dec/conv_pre/", "/dec/cond/", "/dec/conv_post/")
CACHE_IO_PREFIXES = ("past_", "present_")  # the T2S graphs' K/V cache inputs and outputs
CALIBRATION_SEED = 20241130
CALIBRATION_INPUTS = 4
CALIBRATION_CODES = 60


def quantize_generator_static(src: Path, dst: Path, work: Path, calibration: list[dict[str, Any]]) -> None:
    """Static int8 for the SoVITS decoder's generator convolutions only (the text encoder and the flow stay
    fp32): per-channel int8 weights, uint8 activations whose ranges come from running ``calibration``
    through the folded graph; onnxruntime then runs each as one ``QLinearConv``. Dynamic int8 (what ``int8``
    means for the other graphs) has no fused convolution kernel and measured far slower."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    folded = work / f"{src.stem}.folded.onnx"
    optimize_graph(src, folded)
    convs = [n.name for n in onnx.load(str(folded), load_external_data=False).graph.node
             if n.op_type in ("Conv", "ConvTranspose") and n.name.startswith(GENERATOR_PREFIX)
             and not n.name.startswith(GENERATOR_EDGES)]
    if not convs:
        raise QuantizeError(f"{src.name}: no generator convolutions (nodes named {GENERATOR_PREFIX}*) to quantize")

    class Inputs(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter(calibration)

        def get_next(self) -> dict[str, Any] | None:
            return next(self.feeds, None)

    quantize_static(folded, dst, Inputs(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv", "ConvTranspose"],
                    nodes_to_quantize=convs, per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)
    remove_graph(folded)


def decoder_calibration(bundle: Bundle) -> list[dict[str, Any]]:
    """Seeded decoder inputs for static calibration: random codes and phones with the style the bundle's own
    ``sovits_ref_style`` gives a random reference spectrogram (what the fidelity report also uses)."""
    from quantize.fidelity import decoder_feeds, graph_session, style_feeds

    rng = np.random.default_rng(CALIBRATION_SEED)
    style = graph_session(bundle, "sovits_ref_style")
    return [decoder_feeds(bundle, rng, style.run(None, style_feeds(bundle, rng))[0], CALIBRATION_CODES)
            for _ in range(CALIBRATION_INPUTS)]


def convert_fp16(src: Path, dst: Path) -> None:
    """Half-precision weights and arithmetic with float32 inputs and outputs (the engine's arrays), except
    the T2S K/V cache (``past_*`` / ``present_*``), which stays float16 end to end: converted back and forth
    at the graph's edges, every decode step would cast the whole cache twice (docs/performance.md), and on a
    GPU also copy it to and from the host."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    names = [v.name for v in (*model.graph.input, *model.graph.output)]
    keep_fp32 = [n for n in names if not n.startswith(CACHE_IO_PREFIXES)]
    onnx.save(convert_float_to_float16(model, keep_io_types=keep_fp32), str(dst))


def reduce_graph(bundle: Bundle, name: str, dst: Path, precision: str, work: Path) -> None:
    """``dst``: graph ``name`` at ``precision``, its weights in the weights file beside it."""
    from quantize.onnx_io import weights_beside

    src = bundle.graph_path(name)
    if precision == "int8" and name == "sovits_decoder":
        quantize_generator_static(src, dst, work, decoder_calibration(bundle))
    elif precision == "int8":
        quantize_int8(src, dst, work)
    elif precision == "fp16":
        convert_fp16(src, dst)
    else:
        shutil.copyfile(src, dst)
        if weights_file(src).is_file():
            shutil.copyfile(weights_file(src), weights_file(dst))
            return
    weights_beside(dst)


def int8_kv_cache(work: Path, manifest: Manifest, plan: dict[str, str], log: Log, kv_cache: str = "int8"
                  ) -> Manifest:
    """Rewrite the T2S graphs in ``work`` for an int8 K/V cache (``int8``: each request's own scales;
    ``int8-shared``: scales calibrated now, the same for every request); returns ``manifest`` recording it."""
    from quantize.kv_cache import MIN_ONNXRUNTIME, calibrated_scales, quantize_prefill_outputs, quantize_step_cache
    from quantize.onnx_io import describe_io

    for name in ("t2s_prefill", "t2s_step"):
        if plan[name] not in ("fp32", "int8"):
            raise QuantizeError(f"--kv-cache {kv_cache}: graph {name} is {plan[name]}; the int8 cache needs it "
                                "fp32 or int8")
    graphs = dict(manifest.graphs)
    prefill = work / graphs["t2s_prefill"].file
    t2s = manifest.t2s
    scales = calibrated_scales(prefill, t2s.phoneme_vocab_size, t2s.vocab_size) if kv_cache == "int8-shared" else None
    for name, rewrite in (("t2s_prefill", lambda path: quantize_prefill_outputs(path, scales=scales)),
                          ("t2s_step", quantize_step_cache)):
        entry = graphs[name]
        path = work / entry.file
        rewrite(path)
        inputs, outputs = describe_io(path)
        kind = "calibrated per-channel scales" if scales is not None else "per-channel scales"
        graphs[name] = replace(entry, inputs=inputs, outputs=outputs, **graph_files(path),
                               description=f"{entry.description}; int8 K/V with {kind}")
    log(f"  t2s K/V cache: {kv_cache} (needs onnxruntime >= {MIN_ONNXRUNTIME})")
    return replace(manifest, graphs=graphs, t2s=replace(manifest.t2s, kv_cache=kv_cache),
                   requires_onnxruntime=RuntimeRequirement(
                       version=MIN_ONNXRUNTIME,
                       purpose="the int8 K/V cache (GroupQueryAttention kv_cache_bit_width)"))


def batch_step_graph(work: Path, manifest: Manifest, log: Log) -> Manifest:
    """Write ``t2s_step_batch`` beside the int8 ``t2s_step`` in ``work`` (:mod:`quantize.row_quantization`),
    checked to step each row of a batch as the step graph steps it alone; returns ``manifest`` listing it."""
    from quantize.onnx_io import describe_io
    from quantize.row_quantization import ROW_TOLERANCE, RowQuantizationError, quantize_rows, row_difference

    step = manifest.graphs["t2s_step"]
    path = work / f"{BATCH_GRAPH}.onnx"
    try:
        quantize_rows(work / step.file, path)
    except RowQuantizationError as exc:
        raise QuantizeError(f"{BATCH_GRAPH}: {exc}") from exc
    difference = row_difference(work / step.file, path)
    if difference > ROW_TOLERANCE:
        raise QuantizeError(f"{BATCH_GRAPH}: a row of a batch differs from its sequence alone by {difference:.2g} "
                            f"in the logits (at most {ROW_TOLERANCE:g} allowed)")
    inputs, outputs = describe_io(path)
    info = replace(step, inputs=inputs, outputs=outputs, **graph_files(path),
                   description="t2s_step for two or more sequences: int8 weights, activations quantized per row")
    log(f"  {BATCH_GRAPH}: int8, activations per row, {info.size / 1e6:.1f} MB (a batch row differs from "
        f"alone by {difference:.2g})")
    return replace(manifest, graphs={**manifest.graphs, BATCH_GRAPH: info})


def quantize_bundle(source: Path | str, out: Path | str, preset: str, overrides: dict[str, str] | None = None,
                    fidelity: bool = True, log: Log = _stderr, kv_cache: str = "fp32") -> Manifest:
    """Write the ``preset`` version of the bundle at ``source`` to ``out``; returns its manifest.

    Built in ``out.partial`` and renamed into place only once it loads as a bundle, like ``convert``."""
    from quantize.fidelity import measure_fidelity
    from quantize.onnx_io import describe_io

    started = time.monotonic()
    src = Bundle.load(source)
    plan = graph_plan(src, preset, overrides)
    if kv_cache not in KV_CACHES:
        raise QuantizeError(f"--kv-cache {kv_cache}: expected one of {', '.join(KV_CACHES)}")
    out = Path(out)
    with building(out) as work:
        graphs = dict(src.graphs)
        with tempfile.TemporaryDirectory(prefix="gsv-edge-quantize-") as tmp:
            for name, precision in plan.items():
                info = src.graphs[name]
                t0 = time.monotonic()
                reduce_graph(src, name, work / info.file, precision, Path(tmp))
                inputs, outputs = describe_io(work / info.file)
                graphs[name] = replace(info, precision=precision, inputs=inputs, outputs=outputs,
                                       **graph_files(work / info.file))
                log(f"  {name}: {precision}, {info.size / 1e6:.1f} -> {graphs[name].size / 1e6:.1f} MB "
                    f"in {time.monotonic() - t0:.1f} s")
        manifest = replace(src.manifest, graphs=graphs)
        if kv_cache != "fp32":
            manifest = int8_kv_cache(work, manifest, plan, log, kv_cache)
        if plan["t2s_step"] == "int8" and kv_cache != "int8":  # per-request cache scales cannot share a step
            manifest = batch_step_graph(work, manifest, log)
        for asset in src.manifest.assets.values():
            shutil.copyfile(src.path / asset.file, work / asset.file)
        manifest = replace(
            manifest,
            # PyTorch-vs-graph parity describes the source graphs; it stays only for graphs copied unchanged.
            parity={k: v for k, v in src.manifest.parity.items() if plan.get(k) == "fp32"},
            precision=preset,
            provenance=replace(
                src.manifest.provenance,
                quantized_from=src.digest,
                quantized_from_name=src.name,
                quantized=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                quantization=Quantization(
                    preset=preset,
                    graphs=plan,
                    int8="dynamic; per-tensor QInt8 MatMul/Gemm weights after basic-level graph optimisation "
                         "(sovits_decoder: static, per-channel QInt8 generator convolutions, QUInt8 activations "
                         f"calibrated on {CALIBRATION_INPUTS} seeded random-code inputs)",
                    fp16="half precision inside, float32 graph inputs and outputs",
                    kv_cache=kv_cache,
                ),
            ),
        )
        manifest.write(work / MANIFEST)
        if fidelity:
            log("  measuring fidelity against the source bundle (fixed inputs)")
            manifest = replace(manifest, fidelity=measure_fidelity(src, Bundle.load(work)))
            manifest.write(work / MANIFEST)
    total = sum(g.size for g in manifest.graphs.values())
    log(f"done: {out} ({preset}, {total / 1e6:.1f} MB) in {time.monotonic() - started:.0f} s")
    return manifest


def _override(text: str) -> tuple[str, str]:
    name, sep, precision = text.partition("=")
    if not sep or not name or not precision:
        raise argparse.ArgumentTypeError(f"expected GRAPH=PRECISION, got {text!r}")
    return name, precision


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, help="fp32 bundle directory (from gsv-edge convert)")
    parser.add_argument("--precision", choices=sorted(PRESETS), required=True,
                        help="int8: int8 transformer weights (T2S decoder, HuBERT, RoBERTa, speaker model; CPU); "
                             "mixed: int8 T2S decoder and RoBERTa, fp32 HuBERT and SoVITS; fp16: half precision "
                             "(GPU)")
    parser.add_argument("--graph", type=_override, action="append", default=[], metavar="GRAPH=PRECISION",
                        help=f"override one graph's precision ({', '.join(PRECISIONS)}); repeatable. "
                             "sovits_decoder=int8: static int8 vocoder convolutions, faster on CPU at a measured loss")
    parser.add_argument("--kv-cache", choices=KV_CACHES, default="fp32",
                        help="int8: keep the T2S decode's K/V cache as int8 with per-channel scales (a quarter of "
                             "its memory and reads; needs onnxruntime >= 1.32, so not for JetPack 6's 1.23); "
                             "int8-shared: the same, with one set of scales calibrated now for every request, so "
                             "decodes can share a step (batching)")
    parser.add_argument("-o", "--out", type=Path, required=True, help="bundle directory to create")


def run(args: argparse.Namespace) -> int:
    """A bundle that fails its checks: ``SETUP`` (as everywhere); a bad option or output path: ``INPUT``."""
    try:
        check_output_dir(args.out)
        manifest = quantize_bundle(args.bundle, args.out, args.precision, dict(args.graph), kv_cache=args.kv_cache)
    except BundleError as exc:
        return exit_codes.fail("quantize", exc, exit_codes.SETUP)
    except (QuantizeError, OutputPathError) as exc:
        return exit_codes.fail("quantize", exc, exit_codes.INPUT)
    from quantize.fidelity import format_report

    print(format_report(manifest.fidelity))
    return exit_codes.OK
