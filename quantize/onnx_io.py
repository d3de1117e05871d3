"""Reading and writing a bundle's ONNX files without torch: a graph's inputs and outputs as the manifest
records them, and a graph saved with its weights in the file beside it (see :mod:`daemon.model.bundle`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from daemon.model.bundle import weights_file

WEIGHTS_MIN_BYTES = 1024  # smaller constants stay in the graph file


def save_with_weights_beside(model: Any, path: Path) -> Path:
    """Save ``model`` (an ``onnx.ModelProto``) at ``path`` with its weights in the weights file; returns that
    file. onnxruntime maps that file and drops each weight it repacks, so a session holds one copy, not two
    (docs/performance.md, levers kept)."""
    import onnx

    data = weights_file(path)
    data.unlink(missing_ok=True)  # onnx appends to an existing weights file
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data.name,
              size_threshold=WEIGHTS_MIN_BYTES)
    return data


def weights_beside(path: Path) -> Path:
    """Move the weights of the graph at ``path`` into its weights file; returns it."""
    import onnx

    return save_with_weights_beside(onnx.load(str(path)), path)


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
