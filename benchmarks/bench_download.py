"""Benchmark (not a test): download 500 images from a local server that answers each request after
50 ms, with unimp's downloader versus one request at a time (a plain urllib loop, as research scripts do).

    .venv/bin/python benchmarks/bench_download.py [--images 500] [--delay 0.05]
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.data.images_util import jpeg  # noqa: E402
from tests.httpserver import LocalServer, Reply  # noqa: E402
from unimp_core.data.images import download_images  # noqa: E402
from unimp_core.progress import Progress  # noqa: E402
from unimp_core.specs.data import ImageDownloadSpec  # noqa: E402


def serve(n: int, delay: float, conn) -> None:
    """The server runs in its own process so it does not share the client's GIL."""
    server = LocalServer().start()
    body = jpeg(size=(128, 128))
    conn.send(([server.add(f"/img/{i}.jpg", Reply(body, delay=delay)) for i in range(n)], len(body)))
    conn.recv()  # until told to stop
    server.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--delay", type=float, default=0.05)
    args = ap.parse_args()
    parent, child = multiprocessing.Pipe()
    proc = multiprocessing.Process(target=serve, args=(args.images, args.delay, child), daemon=True)
    proc.start()
    urls, size = parent.recv()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            res = download_images(urls, Path(tmp), ImageDownloadSpec(), Progress())
            fast = time.perf_counter() - t
            assert all(v is None for v in res.values()), res
        t = time.perf_counter()
        n_seq = min(args.images, 100)  # the sequential loop is slow; time 100 and scale
        for url in urls[:n_seq]:
            urllib.request.urlopen(url, timeout=30).read()
        seq = (time.perf_counter() - t) * args.images / n_seq
    finally:
        parent.send("stop")
        proc.join(10)
    print(f"{args.images} images, server delay {args.delay * 1000:.0f} ms each, {size} bytes")
    print(f"unimp downloader (concurrency 32): {fast:.2f} s = {args.images / fast:.0f} images/s")
    print(f"one at a time (urllib loop):       {seq:.2f} s = {args.images / seq:.1f} images/s")
    print(f"speed-up: {seq / fast:.1f}x")


if __name__ == "__main__":
    main()
