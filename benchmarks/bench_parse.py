"""Benchmark (not a test): parse a generated 1,000,000-line Amazon 2014 reviews file (gzip JSON lines).

    .venv/bin/python benchmarks/bench_parse.py [--lines 1000000]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.data.amazon_files import big_reviews_2014  # noqa: E402
from unimp_core.data.sources.amazon import read_reviews  # noqa: E402
from unimp_core.progress import Progress  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=1_000_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = big_reviews_2014(Path(tmp) / "reviews_Big_5.json.gz", args.lines)
        t = time.perf_counter()
        inter = read_reviews(path, "big", Progress(), Counter(), False)
        dt = time.perf_counter() - t
    assert inter.height == args.lines
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.lines:,} review lines in {dt:.2f} s = {args.lines / dt:,.0f} lines/s; peak RSS {peak:.0f} MiB")


if __name__ == "__main__":
    main()
