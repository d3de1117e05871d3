"""A graph's inputs and outputs as a bundle manifest records them (name, dtype, shape)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def describe_io(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(inputs, outputs) of the graph at ``path``; symbolic dimensions by name."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def describe(values) -> list[dict[str, Any]]:
        out = []
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_param or d.dim_value for d in t.shape.dim]
            out.append({"name": v.name, "dtype": onnx.TensorProto.DataType.Name(t.elem_type).lower(), "shape": dims})
        return out

    return describe(model.graph.input), describe(model.graph.output)
