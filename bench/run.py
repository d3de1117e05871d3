"""Benchmark: full-size GPT-SoVITS v2 (random weights) as fp32, int8 and mixed bundles and as the
project's PyTorch modules, same workload, one command.

    python bench/run.py [--quick] [--threads 2] [--only NAME,...] [--json FILE] [--plot FILE.png] [--work DIR]

Builds upstream-format files with random weights, converts them (``gsv-edge convert``), quantizes them
(``gsv-edge quantize``), then measures each variant in a fresh process (peak RSS is per process) and prints
a markdown table with ratios against fp32 and against PyTorch. Built files are kept in ``--work`` and reused.
With onnxruntime-gpu and a GPU, fp32 and fp16 bundles are also measured on the CUDA provider.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `python bench/run.py` from anywhere

from bench import workload as w  # noqa: E402

METRICS = [  # key, label, lower is better for all of them
    ("prefill_ms", "prefill (ms)"),
    ("decode_ms_per_step", "decode (ms/step)"),
    ("vocoder_rtf", "SoVITS decode RTF"),
    ("rtf_e2e", "end-to-end RTF"),
    ("first_audio_ms", "first audio (ms)"),
    ("first_audio_chunked_ms", "first audio, 1 s chunks (ms)"),
    ("stall_chunked_ms", "playback stalls, 1 s chunks (ms)"),
    ("peak_rss_mb", "peak RSS (MB)"),
    ("bundle_mb", "bundle (MB)"),
]
# Quantized variants: (preset, per-graph overrides, K/V cache). int8_vocoder adds the opt-in static int8
# vocoder; int8_kv adds the opt-in int8 K/V cache to that (onnxruntime >= 1.32).
QUANTIZED: dict[str, tuple[str, dict[str, str], str]] = {
    "int8": ("int8", {}, "fp32"),
    "mixed": ("mixed", {}, "fp32"),
    "int8_vocoder": ("int8", {"sovits_decoder": "int8"}, "fp32"),
    "int8_kv": ("int8", {"sovits_decoder": "int8"}, "int8"),
}
CPU_VARIANTS = ("fp32", *QUANTIZED)
CUDA_VARIANTS = ("fp32_cuda", "fp16_cuda")  # bundle name + "_cuda": measured on the CUDA provider
VARIANTS = (*CPU_VARIANTS, *CUDA_VARIANTS, "torch")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def machine(threads: int) -> dict[str, Any]:
    import onnxruntime as ort

    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        model = names[0] if names else model
    info = {"cpu": model, "cores": os.cpu_count(), "threads": threads, "onnxruntime": ort.__version__,
            "providers": ort.get_available_providers(), "python": platform.python_version(),
            "load_average": os.getloadavg()}
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        pass
    return info


def cuda_available() -> bool:
    return "CUDAExecutionProvider" in _providers()


def usable(bundle: Path, source: Path | None = None, plan: dict[str, str] | None = None,
           kv_cache: str = "fp32") -> bool:
    """A bundle left by an earlier run is reused only if this version reads it (and, for a quantized one, it
    was made from the current fp32 bundle with the same per-graph precisions and K/V cache)."""
    from daemon.model.bundle import Bundle, BundleError

    try:
        loaded = Bundle.load(bundle, verify=False)
        if source is not None:
            made = loaded.manifest.provenance
            return (made.quantized_from == Bundle.load(source, verify=False).digest
                    and made.quantization is not None
                    and made.quantization.graphs == plan
                    and made.quantization.kv_cache == kv_cache
                    # made before int8 bundles carried their batch graph
                    and (plan.get("t2s_step") != "int8" or kv_cache == "int8" or loaded.has("t2s_step_batch")))
        return True
    except BundleError:
        return False


def selected(only: str | None, gpu: bool, with_torch: bool) -> list[str]:
    """The variants to measure: ``--only``'s, in the table's order, or every one this machine can run."""
    if not only:
        return [*CPU_VARIANTS, *(CUDA_VARIANTS if gpu else ()), *(("torch",) if with_torch else ())]
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        raise SystemExit(f"--only {only}: unknown variant {', '.join(unknown) or '(none named)'}; "
                         f"choose from {', '.join(VARIANTS)}")
    if not gpu and any(n in CUDA_VARIANTS for n in names):
        raise SystemExit(f"--only {only}: the *_cuda variants need onnxruntime-gpu and a GPU "
                         f"(this onnxruntime has {', '.join(_providers())})")
    if not with_torch and "torch" in names:
        raise SystemExit(f"--only {only}: the torch variant needs torch (pip install 'gsv-edge[convert]')")
    return [n for n in VARIANTS if n in names]


def _providers() -> list[str]:
    import onnxruntime as ort

    return ort.get_available_providers()


def build(work: Path, variants: list[str]) -> dict[str, Path]:
    """Sources, the fp32 bundle and the quantized bundles ``variants`` measure; anything already built is
    reused."""
    from quantize.convert import convert
    from quantize.quantization import quantize_bundle

    sources = work / "sources"
    bundles = {"fp32": work / "fp32"}
    if not usable(bundles["fp32"]):
        from bench.sources import build_full_sources

        log("building full-size v2 sources (random weights)")
        files = build_full_sources(sources)
        convert(files, bundles["fp32"], name="bench v2 full size (random weights)", untrained=True, log=log)
    from daemon.model.bundle import Bundle
    from quantize.quantization import graph_plan

    source = Bundle.load(bundles["fp32"], verify=False)
    needed = {v.removesuffix("_cuda") for v in variants}
    recipes = {**QUANTIZED, "fp16": ("fp16", {}, "fp32")}
    for name, (preset, overrides, kv_cache) in recipes.items():
        if name not in needed:
            continue
        bundles[name] = work / name
        plan = graph_plan(source, preset, overrides)
        if not usable(bundles[name], bundles["fp32"], plan, kv_cache):
            log(f"quantizing: {name}")
            quantize_bundle(bundles["fp32"], bundles[name], preset, overrides, log=log, kv_cache=kv_cache)
    return bundles


def child(args: list[str]) -> None:
    subprocess.run([sys.executable, "-m", *args], cwd=ROOT, check=True)


def measure_bundle(bundle: Path, state: Path, out: Path, threads: int, provider: str, steps: int,
                   repeats: int) -> dict[str, Any]:
    common = ["--threads", str(threads), "--provider", provider]
    child(["bench.measure", "voice", str(bundle), str(state), *common])  # (re)registered: bundles change
    child(["bench.measure", "run", str(bundle), str(state), *common, "--steps", str(steps),
           "--repeats", str(repeats), "--out", str(out)])
    return json.loads(out.read_text())


def measure_all(work: Path, bundles: dict[str, Path], variants: list[str], threads: int, steps: int,
                repeats: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for key in (v for v in variants if v != "torch"):
        provider = "cuda" if key in CUDA_VARIANTS else "cpu"
        log(f"measuring {key}")
        t0 = time.monotonic()
        results[key] = measure_bundle(bundles[key.removesuffix("_cuda")], work / "state" / key,
                                      work / f"result-{key}.json", threads, provider, steps, repeats)
        log(f"  {time.monotonic() - t0:.0f} s")
    if "torch" in variants:
        log("measuring torch (eager PyTorch modules)")
        out = work / "result-torch.json"
        child(["bench.torch_ref", "--gpt", str(work / "sources" / "bench-e1.ckpt"), "--sovits",
               str(work / "sources" / "bench_e1_s1.pth"), "--threads", str(threads), "--steps", str(steps),
               "--repeats", str(repeats), "--out", str(out)])
        results["torch"] = json.loads(out.read_text())
    return results


def _fmt(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if value < 1 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "–" if a is None or b is None or b == 0 else f"{a / b:.2f}×"


def table(results: dict[str, Any], info: dict[str, Any], steps: int) -> str:
    names = list(results)
    ratios = [(v, "fp32") for v in names if v not in ("fp32", "torch") and "fp32" in results]
    ratios += [(v, "torch") for v in names if v != "torch" and "torch" in results]
    head = ["metric", *names, *[f"{a}/{b}" for a, b in ratios]]
    lines = [
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['threads']} threads, onnxruntime "
        f"{info['onnxruntime']}" + (f", torch {info['torch']}" if "torch" in info else "")
        + f"; load average at start {info['load_average'][0]:.2f}",
        f"Workload: full-size v2, random weights, {w.REFERENCE_SECONDS:.0f} s reference, {steps} decode steps "
        f"({steps * 0.04:.0f} s audio); first audio: {len(w.SENTENCE)}-character sentence, "
        f"{w.SENTENCE_STEPS} tokens",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|",
    ]
    for key, label in METRICS:
        row = [label, *[_fmt(results[n].get(key)) for n in names]]
        row += [_ratio(results[a].get(key), results[b].get(key)) for a, b in ratios]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, r in results.items():
        per_step = r["per_step_ms"]
        start = r["kv_start"]
        ax.plot(range(start + 1, start + 1 + len(per_step)), per_step, label=name, linewidth=1)
    ax.set_xlabel("KV length (positions attended)")
    ax.set_ylabel("ms per decode step")
    ax.set_ylim(bottom=0)
    ax.set_title("T2S decode step time vs KV length")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"{w.QUICK_STEPS} decode steps, two repeats (under ten minutes on 2 cores)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads for onnxruntime and torch")
    parser.add_argument("--only", metavar="NAME,...",
                        help=f"measure only these variants (of {', '.join(VARIANTS)}); default: every one "
                             "this machine can run")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    parser.add_argument("--plot", type=Path, help="draw ms per step against KV length (PNG)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/gsv-edge-bench"),
                        help="where built bundles are kept and reused (default /tmp/gsv-edge-bench)")
    args = parser.parse_args(argv)
    if args.plot:  # fail now, not after the whole run
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            parser.error("--plot needs matplotlib: pip install 'gsv-edge[bench]'")
    steps, repeats = (w.QUICK_STEPS, 2) if args.quick else (w.STEPS, 3)
    info = machine(args.threads)
    try:
        import torch  # noqa: F401

        with_torch = True
    except ImportError:
        with_torch = False
    variants = selected(args.only, cuda_available(), with_torch)
    if not args.only and not with_torch:
        log("torch is not installed: the PyTorch reference is skipped")
    bundles = build(args.work, variants)
    results = measure_all(args.work, bundles, variants, args.threads, steps, repeats)
    print(table(results, info, steps))
    if args.json:
        slim = {k: {**{m: v.get(m) for m, _ in METRICS}, "throughput": v.get("throughput")}
                for k, v in results.items()}
        args.json.write_text(json.dumps({"machine": info, "steps": steps, "results": slim}, indent=2) + "\n")
    if args.plot:
        plot(results, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
