"""Hardware profiles (``hardware/*.toml``, installed as package data) and the onnxruntime sessions they describe.

A profile names the execution providers to try in order, thread counts and memory caps. Providers this
onnxruntime build lacks, or that fail to start, are skipped with a logged reason, ending on the CPU, which
always works. TensorRT gets explicit shape ranges for every dynamic axis and an engine cache keyed by bundle
digest + onnxruntime version + GPU, so engines are built once per box and model, not at every start.
"""

from __future__ import annotations

import ctypes
import logging
import sys
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnxruntime as ort

from daemon.vocabulary import MAX_BATCH

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (JetPack 6)
    import tomli as tomllib

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

log = logging.getLogger(__name__)

PROFILE_PACKAGE = "hardware"  # the profiles shipped with the code (package data)
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"

# TensorRT needs a (min, opt, max) range for each dynamic axis; names are those the exporter gives.
DIM_RANGES: dict[str, tuple[int, int, int]] = {
    "n_phones": (1, 64, 512),
    "n_prompt": (1, 150, 500),
    "n_total": (1, 256, 1024),
    "capacity": (1, 512, 2048),
    "batch": (1, 1, MAX_BATCH),  # sequences in one T2S step (engine.max_batch)
    "samples": (16000, 96000, 160000),
}
DEFAULT_RANGE = (1, 64, 1024)


class ProfileError(ValueError):
    """A hardware profile that cannot be read; names the file and the field."""


@dataclass
class HardwareProfile:
    name: str
    providers: list[str]
    description: str = ""
    precision: str = "fp32"
    intra_op_threads: int = 0
    inter_op_threads: int = 1
    cpu_mem_arena: bool = True
    max_batch: int = 4  # sequences decoded in one T2S step, unless engine.max_batch says otherwise
    cuda: dict[str, Any] = field(default_factory=dict)
    tensorrt: dict[str, Any] = field(default_factory=dict)
    source: Path | Traversable | None = None

    @classmethod
    def load(cls, name_or_path: str | Path, user_dir: Path | None = None) -> HardwareProfile:
        """A profile by file path, or by name: ``user_dir/NAME.toml`` when it exists (the user's own or
        changed profiles), else the one shipped with the code (``x86-cpu``, ...)."""
        path: Path | Traversable = Path(name_or_path)
        if not path.suffix and len(path.parts) == 1:
            path = _find_profile(str(name_or_path), user_dir)
        elif not path.is_file():
            raise ProfileError(f"{path}: hardware profile not found")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ProfileError(f"{path}: not valid TOML ({exc})") from exc
        allowed = set(cls.__dataclass_fields__) - {"source"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ProfileError(f"{path}: unknown field(s) {', '.join(unknown)}")
        for key in ("name", "providers"):
            if key not in data:
                raise ProfileError(f"{path}: field {key!r} is required")
        if not isinstance(data["providers"], list) or not data["providers"]:
            raise ProfileError(f"{path}: field 'providers' must be a non-empty list")
        if "max_batch" in data:
            batch = data["max_batch"]
            if not isinstance(batch, int) or isinstance(batch, bool) or not 1 <= batch <= MAX_BATCH:
                raise ProfileError(f"{path}: field 'max_batch' must be a whole number from 1 to {MAX_BATCH}, "
                                   f"got {batch!r}")
        return cls(**data, source=path)


def known_profiles(user_dir: Path | None = None) -> list[str]:
    """Names of the shipped profiles and of those in ``user_dir``."""
    names = {p.name.removesuffix(".toml") for p in files(PROFILE_PACKAGE).iterdir() if p.name.endswith(".toml")}
    if user_dir is not None and user_dir.is_dir():
        names.update(p.stem for p in user_dir.glob("*.toml"))
    return sorted(names)


def _find_profile(name: str, user_dir: Path | None) -> Path | Traversable:
    if user_dir is not None and (user_dir / f"{name}.toml").is_file():
        return user_dir / f"{name}.toml"
    shipped = files(PROFILE_PACKAGE) / f"{name}.toml"
    if shipped.is_file():
        return shipped
    where = f" in {user_dir} nor among the shipped ones" if user_dir is not None else ""
    known = ", ".join(known_profiles(user_dir))
    raise ProfileError(f"{name}: hardware profile not found{where} (known profiles: {known})")


def gpu_name() -> str:
    """A short, file-name-safe GPU identity for cache keys; read from the driver, no extra libraries."""
    for info in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        for line in info.read_text(errors="replace").splitlines():
            if line.startswith("Model:"):
                return _safe(line.split(":", 1)[1])
    model = Path("/proc/device-tree/model")
    if model.is_file():
        return _safe(model.read_bytes().rstrip(b"\0").decode(errors="replace"))
    return "unknown-gpu"


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.strip()).strip("-")[:48] or "gpu"


def trt_shape_ranges(session_inputs: list[dict[str, Any]]) -> dict[str, str]:
    """``trt_profile_{min,opt,max}_shapes`` strings from a graph's declared inputs."""
    shapes: dict[str, list[str]] = {"min": [], "opt": [], "max": []}
    for inp in session_inputs:
        dims = inp["shape"]
        if all(isinstance(d, int) for d in dims):
            continue
        for i, kind in enumerate(("min", "opt", "max")):
            size = [str(d) if isinstance(d, int) else str(DIM_RANGES.get(d, DEFAULT_RANGE)[i]) for d in dims]
            shapes[kind].append(f"{inp['name']}:{'x'.join(size)}")
    return {f"trt_profile_{k}_shapes": ",".join(v) for k, v in shapes.items() if v}


_shared_arena = False
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's starting value, kept fixed


def pin_mmap_threshold() -> bool:
    """Keep glibc's mmap threshold at 128 KiB, so every buffer above it (K/V caches, prefill outputs, audio,
    front-end tables) is mapped on its own and goes back to the system when freed. By default glibc raises the
    threshold to the size of each such buffer freed (up to 32 MiB); later buffers then come from the heap,
    whose holes are never returned (docs/performance.md, levers kept). False where the C library
    has no ``mallopt`` or refuses (not glibc)."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    return bool(mallopt and mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1)


def use_shared_arena() -> None:
    """Register one CPU memory arena for the whole process (once). Sessions that opt in allocate from it, so
    what the T2S prefill frees the vocoder can reuse, instead of each session keeping its own high-water mark."""
    global _shared_arena
    if not _shared_arena:
        info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, -1, -1, -1))
        _shared_arena = True


_thread_pool: tuple[int, int] | None = None  # (intra, inter) of the process-wide pool, once created
_pool_mismatch_logged: set[str] = set()


def use_global_thread_pool(profile: HardwareProfile) -> None:
    """One set of onnxruntime worker threads for every session of this process, sized by ``profile``; from then on
    :func:`session_options` puts every session on it. With a pool per session, the pool that just finished (the
    prefill, a decode step) keeps spinning while the next session's threads start, and on two cores they take turns
    (measured gain: docs/performance.md, levers kept). Only for processes whose every session comes from here
    (``gsv-edge serve``, the benchmark's measuring process): once such a pool exists onnxruntime refuses sessions
    that ask for their own (the quantization tooling's, for one), and it cannot be resized."""
    global _thread_pool
    if _thread_pool is not None:
        return
    try:
        ort.set_global_thread_pool_sizes(profile.intra_op_threads, profile.inter_op_threads)
    except Exception as exc:  # created earlier in this process, at a size we cannot know
        log.warning("onnxruntime's process-wide thread pool already exists (%s); sessions use it as it is", exc)
    _thread_pool = (profile.intra_op_threads, profile.inter_op_threads)


def session_options(profile: HardwareProfile, repeated_shapes: bool = False) -> ort.SessionOptions:
    """Options for one graph. ``repeated_shapes``: the graph sees the same input shapes on every run (the
    T2S step); only then does onnxruntime's per-shape memory pattern pay. For the other graphs it keeps one
    extra block per shape ever seen."""
    opts = ort.SessionOptions()
    if _thread_pool is None:
        opts.intra_op_num_threads = profile.intra_op_threads
        opts.inter_op_num_threads = profile.inter_op_threads
    else:
        opts.use_per_session_threads = False
        asked = (profile.intra_op_threads, profile.inter_op_threads)
        if asked != _thread_pool and profile.name not in _pool_mismatch_logged:
            _pool_mismatch_logged.add(profile.name)
            log.warning("profile %s asks for %d intra-op / %d inter-op threads; this process's onnxruntime pool "
                        "has %d / %d and cannot change: restart to apply", profile.name, *asked, *_thread_pool)
    opts.enable_cpu_mem_arena = profile.cpu_mem_arena
    opts.enable_mem_pattern = repeated_shapes
    if profile.cpu_mem_arena:
        use_shared_arena()
        opts.add_session_config_entry("session.use_env_allocators", "1")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return opts


def provider_chain(
    profile: HardwareProfile, graph_inputs: list[dict[str, Any]], cache_dir: Path, bundle_digest: str
) -> list[tuple[str, dict[str, Any]]]:
    """The profile's providers this onnxruntime has, each with its options; always ends with CPU."""
    available = set(ort.get_available_providers())
    chain: list[tuple[str, dict[str, Any]]] = []
    for name in profile.providers:
        if name not in available:
            log.warning("provider %s from profile %r is not in this onnxruntime build (has: %s); skipping",
                        name, profile.name, ", ".join(sorted(available)))
            continue
        if name == CUDA:
            options = {"cudnn_conv_algo_search": profile.cuda.get("cudnn_conv_algo_search", "HEURISTIC")}
            if profile.cuda.get("gpu_mem_limit_mb"):
                options["gpu_mem_limit"] = str(int(profile.cuda["gpu_mem_limit_mb"]) << 20)
            chain.append((name, options))
        elif name == TENSORRT:
            key = f"{bundle_digest[:16]}-ort{ort.__version__}-{gpu_name()}"
            engine_dir = cache_dir / "tensorrt" / key
            options = {
                "trt_fp16_enable": str(bool(profile.tensorrt.get("fp16", True))),
                "trt_max_workspace_size": str(int(profile.tensorrt.get("max_workspace_mb", 1024)) << 20),
                **trt_shape_ranges(graph_inputs),
            }
            if profile.tensorrt.get("engine_cache", True):
                engine_dir.mkdir(parents=True, exist_ok=True)
                options.update({"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(engine_dir)})
            chain.append((name, options))
        else:
            chain.append((name, {}))
    if not chain or chain[-1][0] != CPU:
        chain.append((CPU, {}))
    return chain


def create_session(
    model_path: Path,
    profile: HardwareProfile,
    graph_inputs: list[dict[str, Any]] | None = None,
    cache_dir: Path | None = None,
    bundle_digest: str = "",
    repeated_shapes: bool = False,
) -> ort.InferenceSession:
    """A session on the best provider that starts; falls back to CPU with the reason logged."""
    chain = provider_chain(profile, graph_inputs or [], cache_dir or Path("/tmp/gsv-edge-cache"), bundle_digest)
    opts = session_options(profile, repeated_shapes)
    while True:
        try:
            session = ort.InferenceSession(str(model_path), sess_options=opts, providers=chain)
        except Exception as exc:  # noqa: BLE001 - any provider failure: retry with the next one
            if len(chain) == 1:
                raise
            log.warning("%s: %s failed to start (%s); trying %s", model_path.name, chain[0][0], exc, chain[1][0])
            chain = chain[1:]
            continue
        used = session.get_providers()[0]
        if used != chain[0][0]:
            log.warning("%s: wanted %s, running on %s", model_path.name, chain[0][0], used)
        return session
