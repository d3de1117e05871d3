"""``manifest.json`` through :class:`~daemon.model.manifest.Manifest`: what the converter and the quantizer write
reads back unchanged, and a missing, mistyped, unknown or renamed key is refused naming the file and the key."""

from __future__ import annotations

import copy
import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import pytest

from daemon.model.bundle import Bundle, BundleError
from daemon.model.manifest import FORMAT_VERSION, MANIFEST, Manifest
from quantize.quantization import quantize_bundle

QUIET = {"log": lambda msg: None}

# Every key of format 3, as bundles already on boxes have them (names of graphs, sources and sizes as ``*``).
# A key renamed or dropped here is a new FORMAT_VERSION: bundles written before would no longer load.
FORMAT_3_KEYS = {
    "format", "format_version", "name", "untrained", "model_version", "sample_rate", "precision",
    "t2s", *(f"t2s.{k}" for k in ("vocab_size", "phoneme_vocab_size", "embedding_dim", "hidden_dim", "n_head",
                                  "n_layer", "eos", "head_dim", "hz", "max_sec", "kv_cache")),
    "sovits", *(f"sovits.{k}" for k in ("version", "spec_channels", "hop_length", "sampling_rate", "inter_channels",
                                        "hidden_channels", "filter_channels", "n_heads", "n_layers", "kernel_size",
                                        "resblock", "resblock_kernel_sizes", "resblock_dilation_sizes",
                                        "upsample_rates", "upsample_initial_channel", "upsample_kernel_sizes",
                                        "gin_channels", "n_symbols", "ref_bins", "filter_length")),
    "graphs", *(f"graphs.*.{k}" for k in ("file", "sha256", "bytes", "data", "data.file", "data.sha256", "data.bytes",
                                          "precision", "inputs", "outputs", "description",
                                          "inputs[].name", "inputs[].dtype", "inputs[].shape")),
    "assets", "parity",
    "provenance", *(f"provenance.{k}" for k in ("converter", "created", "torch", "sources", "sources.*.file",
                                                "sources.*.sha256", "sources.*.kind", "sources.*.version",
                                                "sources.*.official", "quantized_from", "quantized_from_name",
                                                "quantized", "quantization", "quantization.preset",
                                                "quantization.graphs", "quantization.int8", "quantization.fp16",
                                                "quantization.kv_cache")),
    "requires_onnxruntime", "requires_onnxruntime.version", "requires_onnxruntime.for",
    "fidelity", *(f"fidelity.{k}" for k in ("reference", "seed", "graphs", "sizes", "sizes.*.precision",
                                            "sizes.*.bytes", "sizes.*.source_bytes", "sizes.*.ratio")),
}


@pytest.fixture(scope="module")
def quantized(demo_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:  # noqa: F811
    """What the quantizer writes, with every optional section between them: int8 K/V cache (runtime
    requirement, ``t2s.kv_cache``), per-graph override, fidelity measured or not."""
    out = tmp_path_factory.mktemp("quantized")
    bundles = {"kv8": out / "kv8", "fp16-unmeasured": out / "fp16"}
    quantize_bundle(demo_bundle, bundles["kv8"], "mixed", {"hubert": "fp16"}, kv_cache="int8", **QUIET)
    quantize_bundle(demo_bundle, bundles["fp16-unmeasured"], "fp16", fidelity=False, **QUIET)
    return bundles


def raw(bundle: Path) -> dict[str, Any]:
    return json.loads((bundle / MANIFEST).read_text())


def field_keys(typed: Any, data: Any, prefix: str = "") -> Iterator[str]:
    """The dotted path of every key in ``data`` that is a field of the manifest's types; names that are data
    (graph names, parity outputs, fidelity measures) are walked through but not listed, and so are the keys of
    a graph's input and output descriptions, which are plain dicts at run time."""
    if is_dataclass(typed):
        attrs = {f.metadata.get("key", f.name): f.name for f in fields(typed)}
        for key, value in data.items():
            yield prefix + key
            yield from field_keys(getattr(typed, attrs[key]), value, f"{prefix}{key}.")
    elif isinstance(typed, dict):
        for key, value in data.items():
            yield from field_keys(typed[key], value, f"{prefix}{key}.")
    elif isinstance(typed, list):
        for i, (t, d) in enumerate(zip(typed, data, strict=True)):
            yield from field_keys(t, d, f"{prefix[:-1]}[{i}].")


def at(data: dict[str, Any], path: str) -> tuple[dict[str, Any], str]:
    """The object holding the key at dotted ``path`` (``graphs.hubert.inputs[0].shape``), and that key."""
    *parents, last = path.split(".")
    for part in parents:
        name, *indexes = re.findall(r"[^\[\]]+", part)  # "inputs[0]" -> "inputs", "0"
        data = data[name]
        for index in indexes:
            data = data[int(index)]
    return data, last


def test_demo_manifest_round_trips_byte_for_byte(demo_bundle: Path, tmp_path: Path) -> None:  # noqa: F811
    data = raw(demo_bundle)
    manifest = Manifest.from_dict(data, demo_bundle / MANIFEST)
    assert manifest.to_dict() == data
    manifest.write(tmp_path / MANIFEST)
    assert (tmp_path / MANIFEST).read_text() == (demo_bundle / MANIFEST).read_text()  # same keys, same order
    assert Bundle.load(demo_bundle).manifest == manifest


def test_every_bundle_the_quantizer_writes_reads_back_unchanged(quantized: dict[str, Path]) -> None:
    kv8, unmeasured = raw(quantized["kv8"]), raw(quantized["fp16-unmeasured"])
    assert "kv_cache" in kv8["t2s"] and "requires_onnxruntime" in kv8 and "fidelity" in kv8
    assert "kv_cache" not in unmeasured["t2s"] and "requires_onnxruntime" not in unmeasured
    assert "fidelity" not in unmeasured
    for name, bundle in quantized.items():
        data = raw(bundle)
        manifest = Manifest.from_dict(data, bundle / MANIFEST)
        assert manifest.to_dict() == data, name
        assert Bundle.load(bundle).manifest == manifest, name
    manifest = Bundle.load(quantized["kv8"]).manifest
    assert manifest.requires_onnxruntime.purpose == kv8["requires_onnxruntime"]["for"]
    assert manifest.t2s.kv_cache == "int8" and manifest.provenance.quantization.graphs["hubert"] == "fp16"


def test_a_bundle_written_before_the_weights_file_still_loads(demo_bundle: Path, tmp_path: Path) -> None:  # noqa: F811
    """Format-3 bundles made before graphs kept their weights beside them have no ``data`` (and no
    ``description`` in hand-assembled entries); bundles quantized before the int8 cache lack its setting."""
    data = raw(demo_bundle)
    for entry in data["graphs"].values():
        del entry["data"], entry["description"]
    data["provenance"]["quantization"] = {"preset": "int8", "graphs": {"t2s_step": "int8"}, "int8": "", "fp16": ""}
    manifest = Manifest.from_dict(data)
    assert all(g.data is None and g.description == "" for g in manifest.graphs.values())
    assert manifest.graphs["hubert"].size == data["graphs"]["hubert"]["bytes"]
    assert manifest.provenance.quantization.kv_cache == "fp32"


@pytest.mark.parametrize(("path", "value", "error"), [
    ("sample_rate", None, "field 'sample_rate' is missing"),
    ("graphs.t2s_step.data.sha256", None, "field 'graphs.t2s_step.data.sha256' is missing"),
    ("provenance.sources.gpt.file", None, "field 'provenance.sources.gpt.file' is missing"),
    ("graphs.hubert.inputs[0].dtype", None, r"field 'graphs.hubert.inputs\[0\].dtype' is missing"),
    ("t2s.eos", "1024", "field 't2s.eos' must be an integer, not \"1024\""),
    ("sample_rate", 32000.0, "field 'sample_rate' must be an integer, not 32000.0"),
    ("untrained", 1, "field 'untrained' must be true or false, not 1"),
    ("graphs.hubert.data", "hubert.onnx.data", "field 'graphs.hubert.data' must be an object or null"),
    ("graphs.hubert.inputs[0].shape", [1, 2.5], r"field 'graphs.hubert.inputs\[0\].shape\[1\]' must be an integer "
                                                 "or a string, not 2.5"),
    ("sovits.upsample_rates", 10, "field 'sovits.upsample_rates' must be a list, not 10"),
    ("parity.t2s_step.logits.max_abs_diff", "small", "field 'parity.t2s_step.logits.max_abs_diff' must be a number "
                                                     "or true or false"),
    ("colour", "red", f"field 'colour' is not part of bundle format {FORMAT_VERSION}"),
    ("graphs.hubert.colour", "red", f"field 'graphs.hubert.colour' is not part of bundle format {FORMAT_VERSION}"),
])
def test_a_bad_key_is_one_error_naming_the_file_and_the_key(demo_bundle: Path, tmp_path: Path,  # noqa: F811
                                                             path: str, value: Any, error: str) -> None:
    """``None`` deletes the key; any other value replaces or adds it."""
    broken = tmp_path / "broken"
    shutil.copytree(demo_bundle, broken)
    data = raw(broken)
    holder, key = at(data, path)
    if value is None:
        del holder[key]
    else:
        holder[key] = value
    (broken / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(BundleError, match=f"^{re.escape(str(broken / MANIFEST))}: {error}") as caught:
        Bundle.load(broken)
    assert "\n" not in str(caught.value)


def test_a_bundle_missing_a_required_graph_is_refused(demo_bundle: Path) -> None:  # noqa: F811
    data = raw(demo_bundle)
    del data["graphs"]["sovits_decoder"]
    with pytest.raises(BundleError, match="^manifest.json: required graphs missing: sovits_decoder$"):
        Manifest.from_dict(data)


def test_the_reader_requires_every_key_the_converter_writes(demo_bundle: Path) -> None:  # noqa: F811
    """Leaving out any key of a converted bundle is refused by name, but for the two that format-3 bundles
    made by earlier versions lack (see the test above): the writer and the reader agree on one set of keys."""
    data = raw(demo_bundle)
    keys = list(field_keys(Manifest.from_dict(data), data))
    assert {"t2s.eos", "sovits.filter_length", "graphs.hubert.data.bytes", "provenance.sources.gpt.version",
            "assets", "graphs.hubert.inputs"} <= set(keys)
    tolerated = set()
    for path in keys:
        changed = copy.deepcopy(data)
        holder, key = at(changed, path)
        del holder[key]
        try:
            Manifest.from_dict(changed)
        except BundleError as exc:
            assert f"field '{path}' is missing" in str(exc) or path in ("format", "format_version"), str(exc)
        else:
            tolerated.add(re.sub(r"^graphs\.\w+\.", "graphs.*.", path))
    assert tolerated == {"graphs.*.data", "graphs.*.description", "provenance.sources.gpt.kind",
                         "provenance.sources.gpt.version", "provenance.sources.sovits.kind",
                         "provenance.sources.sovits.version"}


def test_the_writers_keys_are_those_of_format_3(quantized: dict[str, Path]) -> None:
    """A field renamed in the types renames it for the writer and the reader alike, so only a fixed list can
    tell: the quantizer writes every key the converter does, and the optional ones."""
    data = raw(quantized["kv8"])
    written = {re.sub(r"^(graphs|fidelity\.sizes|provenance\.sources)\.\w+", r"\1.*", k)
               for k in field_keys(Manifest.from_dict(data), data)}
    written |= {f"graphs.*.inputs[].{k}" for k in data["graphs"]["hubert"]["inputs"][0]}
    assert written == FORMAT_3_KEYS - {"provenance.sources.*.official"}  # only for official upstream files
    data["provenance"]["sources"]["gpt"]["official"] = "s1v3.ckpt"
    assert Manifest.from_dict(data).provenance.sources["gpt"].official == "s1v3.ckpt"


def test_a_key_renamed_in_what_the_writer_wrote_is_refused(quantized: dict[str, Path]) -> None:
    """Every field key the quantizer writes (the superset of the converter's), renamed, fails the read with
    that key named: as missing, or for an optional key, as unknown."""
    data = raw(quantized["kv8"])
    keys = list(field_keys(Manifest.from_dict(data), data))
    assert {"requires_onnxruntime.for", "t2s.kv_cache", "fidelity.sizes.hubert.ratio",
            "provenance.quantization.kv_cache"} <= set(keys)
    for path in keys:
        changed = copy.deepcopy(data)
        holder, key = at(changed, path)
        holder[key + "_renamed"] = holder.pop(key)
        with pytest.raises(BundleError) as caught:
            Manifest.from_dict(changed)
        if path not in ("format", "format_version"):  # checked first, with messages of their own
            assert (f"field '{path}' is missing" in str(caught.value)
                    or f"field '{path}_renamed' is not part of" in str(caught.value)), str(caught.value)
