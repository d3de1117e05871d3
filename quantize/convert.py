"""``gsv-edge convert``: upstream GPT-SoVITS files in, a verified ONNX model bundle out.

Stages: read and identify every file -> build the PyTorch modules (strict state-dict loading) -> export each
graph -> measure each graph's parity against its module on a fixed input -> write the manifest. The bundle is
assembled in a temporary directory next to the target and renamed into place only when complete, so an
interrupted conversion never leaves something that looks like a bundle.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from daemon.commands import exit_codes
from daemon.model.bundle import OutputPathError, building, check_output_dir, graph_files, weights_file
from daemon.model.bundle import sha256_of as file_sha256
from daemon.model.manifest import (
    MANIFEST,
    Asset,
    GraphInfo,
    Manifest,
    Provenance,
    Source,
    SovitsSection,
    T2SSection,
)
from daemon.model.t2s import DEFAULT_MAX_SEC, HZ
from daemon.vocabulary import PRO_VERSIONS
from quantize.onnx_io import describe_io

CONVERTER_VERSION = "0.1.0"
HUBERT_FILES = ("config.json", "pytorch_model.bin")
ROBERTA_FILES = ("config.json", "pytorch_model.bin", "tokenizer.json")
TOKENIZER_FILE = "roberta_tokenizer.json"

# The largest max|onnxruntime - PyTorch| convert accepts on measure_parity's fixed inputs, per kind of output
# (README, "Converting a model", says why these values); integer outputs (prompt codes) must be identical.
PARITY_BOUNDS: dict[str, float] = {"logits": 1e-3, "K/V rows": 1e-3, "features": 1e-3, "audio": 1e-4}
# The kind of each float output, by name; per-layer outputs (present_key_3) by their stem.
OUTPUT_KINDS: dict[str, str] = {
    "logits": "logits",
    "present_k": "K/V rows", "present_v": "K/V rows", "present_key": "K/V rows", "present_value": "K/V rows",
    "ge": "features", "ssl_content": "features", "hidden": "features", "sv_emb": "features",
    "audio": "audio",
}


class ConversionError(RuntimeError):
    """A conversion that cannot go on; the message says which file or graph and why."""


class ParityError(ConversionError):
    """The graphs do not compute what the PyTorch modules do: the conversion failed, the inputs were fine."""


@dataclass
class SourceFiles:
    gpt: Path
    sovits: Path
    hubert: Path
    roberta: Path | None = None
    sv: Path | None = None


Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def measure_parity(spec, onnx_path: Path) -> dict[str, Any]:
    """Run the module and the exported graph on the spec's fixed inputs; max abs diff per output."""
    import onnxruntime as ort
    import torch

    with torch.no_grad():
        want = spec.module(*spec.example_inputs)
    want = want if isinstance(want, tuple) else (want,)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), spec.example_inputs, strict=True)}
    got = session.run(None, feeds)
    report: dict[str, Any] = {}
    for name, g, w in zip(spec.output_names, got, want, strict=True):
        w = w.numpy()
        if name in spec.written:  # the rows the graph wrote; the others are the runtime's uninitialised memory
            g, w = g[spec.written[name]], w[spec.written[name]]
        if np.issubdtype(w.dtype, np.integer):
            report[name] = {"identical": bool(g.shape == w.shape and np.array_equal(g, w))}
        else:
            diff = float(np.abs(g.astype(np.float64) - w).max()) if w.size else 0.0
            report[name] = {"max_abs_diff": diff}
    return report


def output_kind(output: str) -> str | None:
    """The :data:`PARITY_BOUNDS` kind of a float output; None when the converter knows no bound for it."""
    stem, _, index = output.rpartition("_")
    return OUTPUT_KINDS.get(output) or (OUTPUT_KINDS.get(stem) if index.isdigit() else None)


def parity_failures(parity: dict[str, dict[str, Any]], bounds: dict[str, float] = PARITY_BOUNDS) -> list[str]:
    """Each output of ``parity`` (graph -> output -> figures, as measure_parity reports them) that is outside
    its bound, as one phrase naming the graph, the output and the figure against the bound."""
    failures = []
    for graph, outputs in parity.items():
        for output, figures in outputs.items():
            if "identical" in figures:
                if not figures["identical"]:
                    failures.append(f"{graph} {output}: not identical (integer outputs must be)")
                continue
            kind = output_kind(output)
            if kind is None:
                failures.append(f"{graph} {output}: no parity bound is defined for this output")
            elif not figures["max_abs_diff"] <= bounds[kind]:  # NaN fails too
                failures.append(f"{graph} {output}: max|diff| {figures['max_abs_diff']:.2e} > "
                                f"{bounds[kind]:.0e} (the bound for {kind})")
    return failures


def check_parity(parity: dict[str, dict[str, Any]], bounds: dict[str, float] = PARITY_BOUNDS) -> None:
    """Refuse a conversion whose graphs do not compute what their modules do: a figure nobody checks is no check."""
    failures = parity_failures(parity, bounds)
    if failures:
        shown = "; ".join(failures[:4]) + (f"; and {len(failures) - 4} more" if len(failures) > 4 else "")
        raise ParityError(f"parity check failed, no bundle written (ONNX graph vs PyTorch module on fixed "
                              f"inputs): {shown}")


def _graph_entry(spec, path: Path) -> GraphInfo:
    inputs, outputs = describe_io(path)
    return GraphInfo(**graph_files(path), precision="fp32", inputs=inputs, outputs=outputs,
                     description=spec.description)


def _source_entry(ckpt) -> Source:
    return Source(file=ckpt.path.name, sha256=ckpt.sha256, kind=ckpt.kind, version=ckpt.version,
                  official=ckpt.official.path if ckpt.official is not None else None)


def convert(files: SourceFiles, out: Path, name: str | None = None, untrained: bool = False,
            log: Log = _stderr, parity_bounds: dict[str, float] = PARITY_BOUNDS) -> Manifest:
    """Convert ``files`` into a bundle at ``out``; returns the manifest. Raises :class:`ConversionError`, leaving
    nothing at ``out``, when a graph's parity is outside ``parity_bounds``."""
    import torch

    from quantize.checkpoint import read_gpt, read_helper_folder, read_sovits
    from quantize.graphs import export_graph
    from quantize.hubert import hubert_graphs, load_hubert
    from quantize.roberta import load_roberta, roberta_graphs
    from quantize.sv import load_sv, sv_graphs
    from quantize.t2s import Text2SemanticDecoder, t2s_graphs
    from quantize.vits import is_training_only, load_sovits, sovits_graphs

    torch.manual_seed(0)
    started = time.monotonic()
    stages = 5
    log(f"[1/{stages}] reading checkpoints")
    gpt = read_gpt(files.gpt)
    log(f"  GPT    {gpt.path.name}: {gpt.version}, {gpt.n_params / 1e6:.1f} M params ({gpt.weight_dtype})"
        + (f", official {gpt.official.path}" if gpt.official else ""))
    sovits = read_sovits(files.sovits)
    log(f"  SoVITS {sovits.path.name}: {sovits.version}, {sovits.n_params / 1e6:.1f} M params ({sovits.weight_dtype})"
        + (f", official {sovits.official.path}" if sovits.official else ""))
    read_helper_folder(files.hubert, "chinese-hubert-base", HUBERT_FILES)
    if files.roberta is not None:
        read_helper_folder(files.roberta, "chinese-roberta-wwm-ext-large", ROBERTA_FILES)
    else:
        log("  no --roberta: Chinese text will use zero BERT features (upstream does this for other languages)")
    if sovits.version in PRO_VERSIONS and files.sv is None:
        raise ConversionError(
            f"{files.sovits}: a {sovits.version} model needs the speaker-verification model "
            "(--sv pretrained_models/sv/pretrained_eres2netv2w24s4ep4.ckpt)"
        )

    log(f"[2/{stages}] building PyTorch modules (strict weight loading)")
    t2s, ignored = Text2SemanticDecoder.from_checkpoint(gpt.weights, gpt.config)
    if ignored:
        log(f"  GPT: ignored training-only keys: {', '.join(ignored)}")
    vits = load_sovits(sovits.weights, sovits.config, sovits.version)
    skipped = [k for k in sovits.weights if is_training_only(k)]
    if skipped:
        log(f"  SoVITS: ignored training-only keys: {', '.join(skipped)}")
    parts: list[tuple[str, list]] = [("t2s", t2s_graphs(t2s)), ("sovits", sovits_graphs(vits))]
    hubert = load_hubert(files.hubert)
    parts.append(("hubert", hubert_graphs(hubert)))
    sources = {"gpt": _source_entry(gpt), "sovits": _source_entry(sovits)}
    sources["hubert"] = Source(file=f"{files.hubert.name}/pytorch_model.bin",
                               sha256=file_sha256(files.hubert / "pytorch_model.bin"))
    if files.roberta is not None:
        parts.append(("roberta", roberta_graphs(load_roberta(files.roberta))))
        sources["roberta"] = Source(file=f"{files.roberta.name}/pytorch_model.bin",
                                    sha256=file_sha256(files.roberta / "pytorch_model.bin"))
    if sovits.version in PRO_VERSIONS:
        parts.append(("sv", sv_graphs(load_sv(files.sv))))
        sources["sv"] = Source(file=files.sv.name, sha256=file_sha256(files.sv))

    with building(Path(out)) as work:
        specs = [spec for _, group in parts for spec in group]
        log(f"[3/{stages}] exporting {len(specs)} ONNX graphs")
        graphs: dict[str, GraphInfo] = {}
        parity: dict[str, Any] = {}
        exported = []
        for i, spec in enumerate(specs, 1):
            t0 = time.monotonic()
            path = export_graph(spec, work)
            exported.append((spec, path))
            size_mb = sum(f.stat().st_size for f in (path, weights_file(path)) if f.is_file()) / 1e6
            log(f"  ({i}/{len(specs)}) {spec.name}: {size_mb:.1f} MB in {time.monotonic() - t0:.1f} s")
        log(f"[4/{stages}] measuring parity (PyTorch module vs onnxruntime, fixed inputs)")
        for spec, path in exported:
            graphs[spec.name], parity[spec.name] = _graph_entry(spec, path), measure_parity(spec, path)
            log(f"  {spec.name}: " + ", ".join(
                f"{k} {'identical' if v.get('identical') else 'DIFFERENT'}" if "identical" in v
                else f"{k} max|diff| {v['max_abs_diff']:.2e}" for k, v in parity[spec.name].items()))
        check_parity(parity, parity_bounds)
        assets: dict[str, Asset] = {}
        if files.roberta is not None:
            shutil.copyfile(files.roberta / "tokenizer.json", work / TOKENIZER_FILE)
            assets["roberta_tokenizer"] = Asset(file=TOKENIZER_FILE, sha256=file_sha256(work / TOKENIZER_FILE))

        log(f"[5/{stages}] writing manifest")
        manifest = Manifest(
            name=name or out.name,
            untrained=untrained,
            model_version=sovits.version,
            sample_rate=vits.cfg.sampling_rate,
            precision="fp32",
            t2s=T2SSection(**asdict(t2s.cfg), head_dim=t2s.cfg.head_dim, hz=HZ,
                           max_sec=int(gpt.config.get("data", {}).get("max_sec", DEFAULT_MAX_SEC))),
            sovits=SovitsSection(**asdict(vits.cfg), filter_length=2 * (vits.cfg.spec_channels - 1)),
            graphs=graphs,
            assets=assets,
            parity=parity,
            provenance=Provenance(
                converter=f"gsv-edge {CONVERTER_VERSION}",
                created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                torch=torch.__version__,
                sources=sources,
            ),
        )
        manifest.write(work / MANIFEST)
    total = sum(g.size for g in graphs.values())
    log(f"done: {out} ({len(graphs)} graphs, {total / 1e6:.1f} MB) in {time.monotonic() - started:.0f} s")
    return manifest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gpt", type=Path, required=True, help="GPT (text-to-semantic) .ckpt from the WebUI")
    parser.add_argument("--sovits", type=Path, required=True, help="SoVITS .pth from the WebUI")
    parser.add_argument("--hubert", type=Path, required=True, help="chinese-hubert-base folder")
    parser.add_argument("--roberta", type=Path, help="chinese-roberta-wwm-ext-large folder (for Chinese text)")
    parser.add_argument("--sv", type=Path, help="speaker-verification ckpt (needed by v2Pro / v2ProPlus)")
    parser.add_argument("-o", "--out", type=Path, required=True, help="bundle directory to create")
    parser.add_argument("--name", help="bundle name (default: the directory name)")


def run(args: argparse.Namespace) -> int:
    """Bad source files or output path: ``INPUT``; graphs outside their parity bounds: ``FAILED``."""
    from quantize.checkpoint import CheckpointError

    files = SourceFiles(args.gpt, args.sovits, args.hubert, args.roberta, args.sv)
    try:
        check_output_dir(args.out)
        manifest = convert(files, args.out, args.name)
    except ParityError as exc:
        return exit_codes.fail("convert", exc, exit_codes.FAILED)
    except (CheckpointError, ConversionError, OutputPathError) as exc:
        return exit_codes.fail("convert", exc, exit_codes.INPUT)
    for name, g in manifest.graphs.items():
        print(f"{name:24s} {g.size / 1e6:8.2f} MB  sha256 {g.sha256[:16]}")
    return exit_codes.OK
