"""``gsv-edge inspect PATH``: what a bundle or an upstream file is, without guessing.

Bundles are described from their manifest (no torch needed, so it works on the appliance); checkpoint files
need the conversion tooling, because reading them means unpickling torch tensors.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from daemon.commands import exit_codes
from daemon.model.bundle import Bundle, BundleError
from daemon.model.manifest import MANIFEST


def describe_bundle(path: Path) -> str:
    bundle = Bundle.load(path)
    m = bundle.manifest
    lines = [
        f"{path}: gsv-edge model bundle '{bundle.name}' (format {m.format_version})",
        f"  model version {bundle.model_version}, {bundle.sample_rate} Hz, precision {bundle.precision}"
        + ("  [UNTRAINED demo weights: produces noise]" if bundle.untrained else ""),
        f"  digest {bundle.digest}",
        "  all graphs present and match their SHA-256",
    ]
    if m.t2s.kv_cache != "fp32":
        needs = m.requires_onnxruntime.version if m.requires_onnxruntime else "?"
        lines.append(f"  T2S K/V cache {m.t2s.kv_cache} (needs onnxruntime >= {needs})")
    for name, g in bundle.graphs.items():
        ins = ", ".join(_grouped_inputs(g.inputs))
        lines.append(f"  {name:22s} {g.size / 1e6:7.2f} MB {g.precision:5s} in: {ins}")
    for name, report in m.parity.items():
        parts = [f"{k} {v['max_abs_diff']:.1e}" if "max_abs_diff" in v else f"{k} {'ok' if v['identical'] else 'DIFF'}"
                 for k, v in report.items()]
        lines.append(f"  parity {name}: {', '.join(parts)}")
    for role, entry in m.provenance.sources.items():
        lines.append(f"  source {role}: {entry.file} sha256 {entry.sha256[:16]}…"
                     + (f" (official {entry.official})" if entry.official else ""))
    return "\n".join(lines)


class ToolingMissing(RuntimeError):
    """Reading upstream checkpoints needs torch, which the appliance does not install."""


def describe_checkpoint(path: Path) -> str:
    try:
        from quantize.checkpoint import describe
    except ImportError as exc:
        raise ToolingMissing(f"reading checkpoint files needs torch: pip install 'gsv-edge[convert]' ({exc})") from exc
    ckpt = describe(path)
    kind = {"t2s": "GPT (text-to-semantic) checkpoint", "sovits": "SoVITS checkpoint",
            "state_dict": "plain state dict (helper model)"}[ckpt.kind]
    lines = [f"{path}: {kind}" + (f", version {ckpt.version}" if ckpt.version else ""),
             f"  {len(ckpt.weights)} tensors, {ckpt.n_params / 1e6:.2f} M parameters, {ckpt.weight_dtype}",
             f"  sha256 {ckpt.sha256}"]
    if ckpt.header and ckpt.header != b"PK":
        lines.append(f"  version header {ckpt.header!r}")
    if ckpt.official:
        lines.append(f"  matches official file {ckpt.official.path}")
    if ckpt.info:
        lines.append(f"  info: {ckpt.info}")
    if ckpt.config.get("model"):
        lines.append("  config.model: " + json.dumps(ckpt.config["model"], sort_keys=True)[:400])
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help="a bundle directory or a .ckpt / .pth / .bin file")


def run(args: argparse.Namespace) -> int:
    """A bundle that fails its checks is a setup problem (as in ``say``); a file that is not a checkpoint is bad
    input (a ``CheckpointError`` is a ``ValueError``)."""
    path: Path = args.path
    try:
        if path.is_dir() and (path / MANIFEST).exists():
            print(describe_bundle(path))
        elif path.is_dir():
            raise BundleError(f"{path}: a directory without {MANIFEST}: not a gsv-edge bundle")
        else:
            print(describe_checkpoint(path))
    except (BundleError, ToolingMissing) as exc:
        return exit_codes.fail("inspect", exc, exit_codes.SETUP)
    except ValueError as exc:
        return exit_codes.fail("inspect", exc, exit_codes.INPUT)
    return exit_codes.OK


def _grouped_inputs(inputs: list[dict]) -> list[str]:
    """``name[shape]`` per input; per-layer inputs (``past_key_0`` ... ``past_key_23``, same shape) as one
    ``past_key_0..23[shape]`` so the step graph's 48 cache inputs read as two."""
    out: list[str | tuple[str, str]] = []
    runs: dict[tuple[str, str], list[int]] = {}
    for i in inputs:
        stem, _, index = i["name"].rpartition("_")
        if stem and index.isdigit():
            key = (stem, str(i["shape"]))
            if key not in runs:
                runs[key] = []
                out.append(key)
            runs[key].append(int(index))
        else:
            out.append(f"{i['name']}{i['shape']}")
    return [f"{item[0]}_{min(runs[item])}..{max(runs[item])}{item[1]}" if isinstance(item, tuple) else item
            for item in out]
