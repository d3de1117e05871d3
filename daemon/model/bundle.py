"""A model bundle: a directory with ``manifest.json`` and the ONNX graphs it lists.

Each graph's weights are kept beside it in ``<graph>.onnx.data`` (ONNX external data; older bundles have them
inline, which still loads). onnxruntime memory-maps that file instead of copying the weights onto the heap,
and lets go of each weight that a kernel has repacked, so a session holds one copy of its weights, not two.

``gsv-edge convert`` writes bundles; the engine reads them. Loading verifies that every listed graph exists
with the recorded size and SHA-256, so a half-copied or edited bundle is refused with the file at fault
named, instead of failing later in the middle of an announcement.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.model.manifest import MANIFEST, BundleError, GraphInfo, Manifest, PinnedFile, RuntimeRequirement


def version_tuple(version: str) -> tuple[int, ...]:
    """``"1.32.0"`` -> (1, 32, 0); a suffix such as ``.dev20260101`` or ``+cu126`` is ignored."""
    parts = []
    for part in version.split("+")[0].split("."):
        digits = "".join(c for c in part if c.isdigit()) if part[:1].isdigit() else ""
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _check_runtime(manifest_path: Path, needs: RuntimeRequirement | None) -> None:
    """A bundle whose graphs need a newer onnxruntime than this box has is refused by name, before any session
    fails on an unknown attribute (the int8 K/V cache: onnxruntime >= 1.32)."""
    if not needs:
        return
    import onnxruntime

    have = onnxruntime.__version__
    if version_tuple(have) < version_tuple(needs.version):
        raise BundleError(
            f"{manifest_path}: needs onnxruntime >= {needs.version} for {needs.purpose}; "
            f"this box has {have}. Quantize the fp32 bundle again without that option (e.g. --kv-cache fp32)"
        )


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weights_file(graph: Path) -> Path:
    """Where a graph's weights live when they are kept beside it (``t2s_step.onnx.data``)."""
    return graph.with_name(graph.name + ".data")


def graph_files(graph: Path) -> dict[str, Any]:
    """The :class:`GraphInfo` fields that pin a graph file and, when there is one, its weights file."""
    data = weights_file(graph)
    weights = PinnedFile(file=data.name, sha256=sha256_of(data), bytes=data.stat().st_size) if data.is_file() else None
    return {"file": graph.name, "sha256": sha256_of(graph), "bytes": graph.stat().st_size, "data": weights}


@dataclass
class Bundle:
    path: Path
    manifest: Manifest

    @property
    def graphs(self) -> dict[str, GraphInfo]:
        return self.manifest.graphs

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def model_version(self) -> str:
        return self.manifest.model_version

    @property
    def sample_rate(self) -> int:
        return self.manifest.sample_rate

    @property
    def untrained(self) -> bool:
        return self.manifest.untrained

    @property
    def precision(self) -> str:
        return self.manifest.precision

    @property
    def digest(self) -> str:
        """Identity of the weights: stable across copies and renames, changes with any graph."""
        joined = "\n".join(f"{n}:{g.sha256}" + (f":{g.data.sha256}" if g.data else "")
                           for n, g in sorted(self.graphs.items()))
        return hashlib.sha256(joined.encode()).hexdigest()

    def has(self, graph: str) -> bool:
        return graph in self.graphs

    def graph_path(self, graph: str) -> Path:
        if graph not in self.graphs:
            raise BundleError(f"{self.path / MANIFEST}: bundle has no graph {graph!r}")
        return self.path / self.graphs[graph].file

    @classmethod
    def load(cls, path: Path | str, verify: bool = True) -> Bundle:
        path = Path(path)
        manifest_path = path / MANIFEST
        if not path.is_dir():
            raise BundleError(f"{path}: bundle directory not found")
        if not manifest_path.is_file():
            raise BundleError(f"{manifest_path}: missing; is {path} a gsv-edge model bundle?")
        manifest = Manifest.read(manifest_path)
        _check_runtime(manifest_path, manifest.requires_onnxruntime)
        bundle = cls(path, manifest)
        if verify:
            bundle.verify()
        return bundle

    def verify(self) -> None:
        """Every graph file (and weights file) present, with its recorded size and digest."""
        for name, info in self.graphs.items():
            self._check(self.path / info.file, f"graph {name!r}", info.bytes, info.sha256)
            if info.data:
                self._check(self.path / info.data.file, f"weights of graph {name!r}", info.data.bytes, info.data.sha256)
        for name, asset in self.manifest.assets.items():
            file = self.path / asset.file
            if not file.is_file():
                raise BundleError(f"{file}: asset {name!r} listed in the manifest is missing")
            if sha256_of(file) != asset.sha256:
                raise BundleError(f"{file}: asset {name!r} does not match its SHA-256 in the manifest")

    @staticmethod
    def _check(file: Path, what: str, size: int, sha256: str) -> None:
        if not file.is_file():
            raise BundleError(f"{file}: {what} listed in the manifest is missing")
        actual = file.stat().st_size
        if actual != size:
            raise BundleError(f"{file}: size {actual} bytes, manifest says {size} (truncated or replaced?)")
        digest = sha256_of(file)
        if digest != sha256:
            raise BundleError(f"{file}: SHA-256 {digest[:16]}… does not match the manifest ({sha256[:16]}…)")

    def asset_path(self, name: str) -> Path | None:
        asset = self.manifest.assets.get(name)
        return self.path / asset.file if asset else None


class OutputPathError(ValueError):
    """A bundle cannot be written where the user asked; the message names the path."""


def check_output_dir(out: Path) -> Path:
    """Refuse an output path before minutes of work: one that would replace something that is not a bundle (a
    home directory given by mistake is never deleted), or whose parent cannot be written."""
    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise OutputPathError(f"{out}: exists and is a file, not a bundle directory")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise OutputPathError(f"{out}: exists and is not a gsv-edge bundle; refusing to replace it "
                              "(name a new directory)")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"{out}: cannot create it, {parent} is not a writable directory")
    return out


@contextlib.contextmanager
def building(out: Path) -> Iterator[Path]:
    """A directory to build a bundle in (``<out>.partial``). When the block ends it must load as a bundle, and
    only then replaces ``out``; on any failure it is removed, so nothing half-made ever looks like a bundle."""
    out = check_output_dir(out)
    work = out.with_name(out.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    try:
        work.mkdir(parents=True)
    except OSError as exc:
        raise OutputPathError(f"{work}: cannot create the bundle's build directory: {exc.strerror or exc}") from exc
    try:
        yield work
        Bundle.load(work)
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
