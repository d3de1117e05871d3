"""What the Japanese front end costs: resident memory once it has read its first sentence, and its time per sentence.

``python -m bench.frontend_ja`` (needs ``gsv-edge[ja]``) runs in a fresh process so the memory is the front end's
own: the resident set before the module, after importing it (the shared ``daemon.frontend`` package, no pyopenjtalk
yet), and after the first sentence (pyopenjtalk imported, its dictionary checked by sha256 and loaded by MeCab).
File-backed pages (the memory-mapped dictionary) are shown apart from anonymous memory, since the kernel can drop
and share them. Then the same 20-character sentence is read again and again: the median is the warm front-end time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

SENTENCE = "まもなく三番線に東京行きの電車が参ります"  # 20 characters, an announcement with a number


def memory_mb() -> dict[str, float]:
    """VmRSS and its anonymous and file-backed parts, in MB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200, help="warm readings of the sentence (default 200)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    before = memory_mb()
    from daemon.frontend import japanese

    imported = memory_mb()
    start = time.perf_counter()
    phones, _ = japanese.g2p(japanese.text_normalize(SENTENCE))
    first_ms = (time.perf_counter() - start) * 1000
    loaded = memory_mb()
    import pyopenjtalk

    start = time.perf_counter()
    japanese.verify_dictionary(japanese.find_dictionary(pyopenjtalk))
    check_ms = (time.perf_counter() - start) * 1000  # part of the first sentence's time, measured again alone
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        japanese.g2p(japanese.text_normalize(SENTENCE))
        times.append((time.perf_counter() - start) * 1000)
    result = {
        "sentence": SENTENCE,
        "characters": len(SENTENCE),
        "phones": len(phones),
        "rss_mb": {"before": before, "module_imported": imported, "after_first_sentence": loaded},
        # pyopenjtalk and its dictionary alone: the daemon.frontend package itself is shared by every language
        "japanese_rss_mb": round(loaded["VmRSS"] - imported["VmRSS"], 1),
        "dictionary_check_ms": round(check_ms, 1),
        "first_sentence_ms": round(first_ms, 1),
        "warm_ms_median": round(statistics.median(times), 3),
        "warm_ms_min": round(min(times), 3),
    }
    print(json.dumps(result, ensure_ascii=False, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
