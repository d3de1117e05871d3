"""One ONNX graph of a bundle, described as data so one exporter serves every model."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from quantize.onnx_io import weights_beside

OPSET = 17


@dataclass
class GraphSpec:
    """A torch module whose ``forward(*example_inputs)`` becomes one ONNX graph."""

    name: str  # file stem in the bundle, e.g. "t2s_prefill"
    module: torch.nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)
    description: str = ""
    custom_opsets: dict[str, int] = field(default_factory=dict)  # e.g. com.microsoft for fused attention
    # Outputs the graph writes only in part (a K/V buffer it adds one row to): the index of the part it writes.
    # The rest holds whatever the runtime allocated, so parity compares this part only.
    written: dict[str, tuple[slice, ...]] = field(default_factory=dict)


def export_graph(spec: GraphSpec, out_dir: Path) -> Path:
    """Export ``spec`` to ``out_dir/<name>.onnx`` with the TorchScript exporter (stable dynamic axes)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{spec.name}.onnx"
    spec.module.eval()
    with torch.no_grad():
        torch.onnx.export(
            spec.module,
            spec.example_inputs,
            str(path),
            input_names=spec.input_names,
            output_names=spec.output_names,
            dynamic_axes=spec.dynamic_axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
            custom_opsets=spec.custom_opsets or None,
        )
    weights_beside(path)
    return path

