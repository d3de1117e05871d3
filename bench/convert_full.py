"""Time ``gsv-edge convert`` on a random-weight model of the full v2 architecture (run by hand).

Builds upstream-format files at full size (GPT, SoVITS v2, chinese-hubert-base, chinese-roberta-wwm-ext-large)
with the project's own modules, converts them with the real command in a child process, and prints wall time,
peak memory of the conversion and the size of every graph.

    python bench/convert_full.py [--work DIR] [--no-roberta]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.sources import build_full_sources  # noqa: E402
from daemon.model.bundle import Bundle  # noqa: E402
from quantize.demo import _randomize  # noqa: E402
from quantize.roberta import _RENAMES, BertConfig, BertModel  # noqa: E402

ROBERTA_CONFIG = ROOT.parent / "shared" / "pretrained-configs" / "chinese-roberta-wwm-ext-large"


def write_roberta(folder: Path) -> Path:
    """A BertForMaskedLM-format state dict (``bert.`` keys, fp16) at the real size, random weights."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(ROBERTA_CONFIG / name, folder / name)
    model = BertModel(BertConfig.from_json(folder / "config.json"))
    _randomize(model, std=0.02)
    state = {}
    for key, value in model.state_dict().items():
        for upstream, ours in reversed(_RENAMES):
            key = key.replace(ours, upstream, 1)
        state["bert." + key] = value.half()
    torch.save(state, folder / "pytorch_model.bin")
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="keep sources and bundle here (default: a temporary dir)")
    parser.add_argument("--no-roberta", action="store_true", help="skip the Chinese BERT model")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="gsv-edge-convert-"))
    t0 = time.monotonic()
    files = build_full_sources(work / "src")
    cmd = [str(ROOT / ".venv" / "bin" / "gsv-edge"), "convert", "--gpt", str(files.gpt), "--sovits",
           str(files.sovits), "--hubert", str(files.hubert), "-o", str(work / "bundle")]
    if not args.no_roberta and (ROBERTA_CONFIG / "config.json").is_file():
        cmd += ["--roberta", str(write_roberta(work / "src" / "chinese-roberta-wwm-ext-large"))]
    print(f"sources built in {time.monotonic() - t0:.0f} s", flush=True)
    t0 = time.monotonic()
    subprocess.run(cmd, check=True)
    wall = time.monotonic() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    graphs = Bundle.load(work / "bundle", verify=False).graphs
    total = sum(g.size for g in graphs.values())
    print(f"\nconvert: {wall:.0f} s wall, peak RSS {peak_mb:.0f} MB, bundle {total / 1e6:.0f} MB")
    for name, g in graphs.items():
        print(f"  {name:24s} {g.size / 1e6:8.1f} MB")
    if args.work is None:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
