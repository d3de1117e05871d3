"""A bundle's ``manifest.json`` as types: the one place that knows its keys, for reading and for writing.

Converting, quantizing and making the demo write a :class:`Manifest` with :meth:`Manifest.to_dict`; loading a
bundle reads one with :meth:`Manifest.from_dict`. Both take the JSON keys from the same dataclass fields, so a
key renamed on one side cannot go unnoticed on the other. Reading checks every key against its field's type
and refuses the manifest with the file and the key named (``graphs.t2s_step.sha256``), instead of letting a
missing or mistyped value surface later as a ``KeyError`` in the middle of an announcement.

* Required: every key the writers have written since format 3.
* A field with a default may be absent (written by an earlier gsv-edge of the same format, e.g. a graph
  without a weights file entry) and reads as that default; it is written from then on.
* A field declared with :func:`_optional` is one that only some bundles have (the int8 K/V cache's runtime
  requirement, a quantized bundle's fidelity): absent reads as its default, and its default is not written.
* Unknown keys are refused: a key this version does not know was written by a newer gsv-edge, and may mean
  something this one would ignore at the cost of wrong audio. A change to the keys bumps ``FORMAT_VERSION``.
"""

from __future__ import annotations

import functools
import json
import types
import typing
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, TypedDict, Union

FORMAT = "gsv-edge-bundle"
FORMAT_VERSION = 3  # 3: the step graph attends with GroupQueryAttention over [1, H, capacity, Dh] buffers
MANIFEST = "manifest.json"

# Graphs every bundle has; the others depend on the model version and the files converted.
BATCH_GRAPH = "t2s_step_batch"  # an int8 bundle's step graph for two or more sequences (optional)
REQUIRED_GRAPHS = ("t2s_prefill", "t2s_step", "sovits_decoder", "sovits_ref_style", "sovits_extract_latent")


class BundleError(ValueError):
    """The bundle cannot be used; the message names the bundle file and the problem."""


def _optional(default: Any) -> Any:
    """A field only some bundles have: absent reads as ``default``, and ``default`` is not written."""
    return field(default=default, metadata={"optional": True})


def _key(f: Field) -> str:
    """The JSON key of a field: its name, or ``metadata["key"]`` where the key is no Python name (``for``)."""
    return f.metadata.get("key", f.name)


class TensorSpec(TypedDict):
    """One input or output of a graph as onnxruntime declares it; symbolic dimensions by name."""

    name: str
    dtype: str
    shape: list[int | str]


@dataclass(frozen=True, kw_only=True)
class PinnedFile:
    """A file of the bundle pinned by size and digest: a graph's weights file (``<graph>.onnx.data``)."""

    file: str
    sha256: str
    bytes: int


@dataclass(frozen=True, kw_only=True)
class GraphInfo:
    """One ONNX graph of the bundle: its file pinned by size and digest, and what it takes and gives."""

    file: str
    sha256: str
    bytes: int
    data: PinnedFile | None = None  # None: weights inline in the graph file (bundles made before the weights file)
    precision: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    description: str = ""

    @property
    def size(self) -> int:
        """Bytes on disk, graph and weights."""
        return self.bytes + (self.data.bytes if self.data else 0)


@dataclass(frozen=True, kw_only=True)
class Asset:
    """A non-graph file the engine reads (the RoBERTa tokenizer), pinned by digest."""

    file: str
    sha256: str


@dataclass(frozen=True, kw_only=True)
class T2SSection:
    """The text-to-semantic model's hyperparameters, and how its K/V cache is stored."""

    vocab_size: int
    phoneme_vocab_size: int
    embedding_dim: int
    hidden_dim: int
    n_head: int
    n_layer: int
    eos: int
    head_dim: int
    hz: int
    max_sec: int
    kv_cache: str = _optional("fp32")  # "int8" after quantize --kv-cache int8


@dataclass(frozen=True, kw_only=True)
class SovitsSection:
    """The SoVITS model's hyperparameters, as upstream's config gives them."""

    version: str
    spec_channels: int
    hop_length: int
    sampling_rate: int
    inter_channels: int
    hidden_channels: int
    filter_channels: int
    n_heads: int
    n_layers: int
    kernel_size: int
    resblock: str
    resblock_kernel_sizes: list[int]
    resblock_dilation_sizes: list[list[int]]
    upsample_rates: list[int]
    upsample_initial_channel: int
    upsample_kernel_sizes: list[int]
    gin_channels: int
    n_symbols: int
    ref_bins: int
    filter_length: int


@dataclass(frozen=True, kw_only=True)
class Source:
    """One upstream file a bundle was converted from."""

    file: str
    sha256: str
    kind: str | None = _optional(None)  # checkpoints only, not helper-model folders
    version: str | None = _optional(None)
    official: str | None = _optional(None)  # the official pretrained file it matches


@dataclass(frozen=True, kw_only=True)
class Quantization:
    preset: str
    graphs: dict[str, str]  # graph -> precision
    int8: str
    fp16: str
    kv_cache: str = "fp32"  # absent in bundles quantized before the int8 K/V cache existed


@dataclass(frozen=True, kw_only=True)
class Provenance:
    converter: str
    created: str
    torch: str
    sources: dict[str, Source]
    quantized_from: str | None = _optional(None)  # the source bundle's digest
    quantized_from_name: str | None = _optional(None)
    quantized: str | None = _optional(None)
    quantization: Quantization | None = _optional(None)


@dataclass(frozen=True, kw_only=True)
class RuntimeRequirement:
    """The oldest onnxruntime whose kernels run the bundle's graphs, and what needs it."""

    version: str
    purpose: str = field(metadata={"key": "for"})


@dataclass(frozen=True, kw_only=True)
class GraphSize:
    precision: str
    bytes: int
    source_bytes: int
    ratio: float


@dataclass(frozen=True, kw_only=True)
class Fidelity:
    """A quantized bundle's distance from its fp32 source, measured by ``quantize.fidelity``."""

    reference: str  # the source bundle's digest
    seed: int
    graphs: dict[str, dict[str, float]]  # graph -> measure -> value
    sizes: dict[str, GraphSize]


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """Everything a bundle says about itself; the fields in the order the file has them."""

    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    name: str
    untrained: bool
    model_version: str
    sample_rate: int
    precision: str
    t2s: T2SSection
    sovits: SovitsSection
    graphs: dict[str, GraphInfo]
    assets: dict[str, Asset]
    parity: dict[str, dict[str, dict[str, float | bool]]]  # graph -> output -> max_abs_diff or identical
    provenance: Provenance
    requires_onnxruntime: RuntimeRequirement | None = _optional(None)
    fidelity: Fidelity | None = _optional(None)

    @classmethod
    def from_dict(cls, data: Any, path: Path | str = MANIFEST) -> Manifest:
        """``data`` (parsed JSON) checked against this format; :class:`BundleError` names ``path`` and the key."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise BundleError(f"{path}: field 'format' must be {FORMAT!r}")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise BundleError(
                f"{path}: format_version {version!r} is not supported (this gsv-edge reads "
                f"{FORMAT_VERSION}); convert the model again with this version"
            )
        manifest = _read(cls, data, "", path)
        missing = [g for g in REQUIRED_GRAPHS if g not in manifest.graphs]
        if missing:
            raise BundleError(f"{path}: required graphs missing: {', '.join(missing)}")
        return manifest

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``manifest.json``."""
        return _write(self)

    @classmethod
    def read(cls, path: Path) -> Manifest:
        """The manifest file at ``path``, checked."""
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BundleError(f"{path}: not valid JSON ({exc})") from exc
        return cls.from_dict(data, path)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", type(None): "null"}


def _describe(kind: Any) -> str:
    if typing.get_origin(kind) in (Union, types.UnionType):
        return " or ".join(_describe(arm) for arm in typing.get_args(kind))
    if typing.get_origin(kind) is list:
        return "a list"
    return _NAMES.get(kind, "an object")


def _json_type(kind: Any) -> type:
    """The Python type of the JSON value that holds a ``kind``."""
    if typing.get_origin(kind) is list:
        return list
    if typing.get_origin(kind) is dict or is_dataclass(kind) or typing.is_typeddict(kind):
        return dict
    return kind


def _is(value: Any, kind: type) -> bool:
    """Whether the JSON value ``value`` is a ``kind`` (JSON has no separate integer and boolean types)."""
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _read(kind: Any, value: Any, key: str, path: Path | str) -> Any:
    """``value`` as a ``kind``; ``key`` is where it sits (``graphs.t2s_step.data``), for the error."""

    def wrong() -> BundleError:
        return BundleError(f"{path}: field {key!r} must be {_describe(kind)}, not {json.dumps(value)[:60]}")

    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        arms = [arm for arm in args if arm is not type(None) and _is(value, _json_type(arm))]
        if not arms:
            raise wrong()
        return _read(arms[0], value, key, path)
    if origin is list:
        if not isinstance(value, list):
            raise wrong()
        return [_read(args[0], item, f"{key}[{i}]", path) for i, item in enumerate(value)]
    if origin is dict or is_dataclass(kind) or typing.is_typeddict(kind):
        if not isinstance(value, dict):
            raise wrong()
        prefix = f"{key}." if key else ""
        if origin is dict:
            return {k: _read(args[1], v, prefix + k, path) for k, v in value.items()}
        return _read_object(kind, value, prefix, path)
    if not _is(value, kind):
        raise wrong()
    return value


def _read_object(kind: Any, value: dict[str, Any], prefix: str, path: Path | str) -> Any:
    """A dataclass or TypedDict from its JSON object: every required key present, no key it does not know."""
    hints = _hints(kind)
    if typing.is_typeddict(kind):
        known = {name: name for name in hints}
        required = set(known)
    else:
        known = {_key(f): f.name for f in fields(kind)}
        required = {_key(f) for f in fields(kind) if f.default is MISSING and f.default_factory is MISSING}
    for k in known:
        if k in required and k not in value:
            raise BundleError(f"{path}: field {prefix + k!r} is missing")
    for k in value:
        if k not in known:
            raise BundleError(f"{path}: field {prefix + k!r} is not part of bundle format {FORMAT_VERSION} "
                              "(written by a newer gsv-edge?)")
    items = {known[k]: _read(hints[known[k]], v, prefix + k, path) for k, v in value.items()}
    return kind(**items)


def _write(value: Any) -> Any:
    """The JSON form of a manifest value; optional fields at their default are left out."""
    if is_dataclass(value):
        return {_key(f): _write(getattr(value, f.name)) for f in fields(value)
                if not (f.metadata.get("optional") and getattr(value, f.name) == f.default)}
    if isinstance(value, dict):
        return {k: _write(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_write(v) for v in value]
    return value
