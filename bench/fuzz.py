"""Coverage-guided fuzzing of every input parser with atheris (``pip install "gsv-edge[fuzz]"``).

``python -m bench.fuzz --runs 1000000`` feeds native ``say`` payloads, Hermes ``say`` payloads, voice
registration WAVs and config files to the same checks as ``tests/fuzz/test_fuzz_parsers.py``: the first byte
of each input picks the parser. A parser raising anything but its own rejection is a crash; an input
taking longer than ``--timeout`` seconds is a hang; libFuzzer stops at the first of either and writes
the input to ``crash-*`` / ``timeout-*``. ``Done N runs`` at the end means N cases, no crash, no hang.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from daemon import config  # noqa: F401 - instrumented for coverage
    from daemon.audio import wav  # noqa: F401
    from daemon.protocols import payloads  # noqa: F401
    from tests.fuzz.test_fuzz_parsers import (
        load_config_safely,
        parse_hermes_safely,
        parse_native_safely,
        parse_wav_safely,
    )

_CONFIG = Path(tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)) / "config.toml"


def one_input(data: bytes) -> None:
    if not data:
        return
    target, rest = data[0] % 4, data[1:]
    if target == 0:
        parse_native_safely(rest)
    elif target == 1:
        parse_hermes_safely(rest)
    elif target == 2:
        parse_wav_safely(rest)
    else:
        load_config_safely(rest.decode("utf-8", "replace"), _CONFIG)


def seeds(directory: Path) -> None:
    """Valid examples of each format, so mutation starts from inputs that get past the first checks."""
    from tests.fuzz.test_fuzz_parsers import _valid_wav

    examples = [
        b"\x00" + json.dumps({"id": "a-1", "text": "Hi.", "voice": "alice", "ttl_s": 30, "priority": "high"}).encode(),
        b"\x00Plain text announcement.",
        b"\x01" + json.dumps({"text": "Hi", "siteId": "kitchen", "id": "x", "sessionId": "s", "volume": 0.5}).encode(),
        b"\x02" + _valid_wav(),
        b"\x03[mqtt]\nhost = \"broker\"\nport = 8883\n[queue]\nmax_depth = 10\n[audit]\nstore_text = true\n",
    ]
    for index, example in enumerate(examples):
        (directory / f"seed-{index}").write_bytes(example)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--timeout", type=int, default=5, help="seconds per input before it counts as a hang")
    parser.add_argument("--max-seconds", type=int, default=900)
    args = parser.parse_args()
    corpus = Path(tempfile.mkdtemp(prefix="gsv-fuzz-corpus-"))
    seeds(corpus)
    libfuzzer = [sys.argv[0], f"-runs={args.runs}", f"-timeout={args.timeout}", f"-max_total_time={args.max_seconds}",
                 "-max_len=4096", "-print_final_stats=1", str(corpus)]
    atheris.Setup(libfuzzer, one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
