"""Benchmark (not a test): `unimp serve` under load, with dynamic micro-batching and without.

For each server setting (by default `--max-batch 64 --max-wait-ms 10`, then `--max-batch 1`) the script
starts `unimp serve` as its own process on 127.0.0.1, waits until /healthz is ready, then runs
`--clients` concurrent clients (one process, aiohttp, each sending POST /v1/recommend for a user drawn
in turn, waiting for the answer before sending the next) for `--seconds`, and prints:

    requests/s, p50 / p99 latency, errors (connection failures and non-200 answers; must be 0),
    the server's peak memory (VmHWM of its process), the mean batch size (from /metrics)

and the throughput ratio batched / unbatched. The load generator shares the machine with the server,
so both compete for the CPUs; the machine's load (`uptime`) is printed before and after.

    .venv/bin/python benchmarks/bench_serve.py [--run demo/runs/sample-tiny] [--checkpoint final] [--clients 200]
        [--seconds 30] [--settings "64,10" "1,0"] [--json out.json]

Without --run it uses demo/runs/sample-tiny (`make demo` trains it) or, if missing, trains the same
tiny run in a temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEMO_RUN = ROOT / "demo" / "runs" / "sample-tiny"


def _demo_run(base: Path) -> Path:
    """The tiny run `make demo` trains (examples/train-sample-tiny.yaml on the bundled sample)."""
    from unimp_core.data.prepare import run_prepare
    from unimp_core.specs import resolve_spec
    from unimp_core.specs.data import PrepareSpec
    from unimp_core.specs.train import TrainSpec
    from unimp_core.training.train import run_train

    prep = resolve_spec(PrepareSpec, ROOT / "examples" / "prepare-sample.yaml", {"out": base / "sample", "cache_dir": base / "cache"})
    data = run_prepare(prep)
    spec = resolve_spec(TrainSpec, ROOT / "examples" / "train-sample-tiny.yaml",
                        {"data": {"path": data}, "run": {"out": base / "run"}})
    return run_train(spec)


class Server:
    """`unimp serve` in its own process; `url` once it says where it listens."""

    def __init__(self, run: Path, checkpoint: str, max_batch: int, max_wait_ms: float):
        cmd = [sys.executable, "-m", "unimp_cli", "serve", "--run", str(run), "--checkpoint", checkpoint, "--port", "0",
               "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms), "--max-pending", "4096",
               "--timeout-s", "900"]  # measure throughput, not the timeout: every request is answered
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        self.url: str | None = None
        self.ready = threading.Event()
        self.access_lines = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            if "aiohttp.access" in line:
                self.access_lines += 1
                continue
            m = re.search(r"listening on (http://\S+)", line)
            if m:
                self.url = m.group(1)
            if " ready: " in line:
                self.ready.set()
            if "error" in line.lower():
                print("  server:", line.rstrip(), file=sys.stderr)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.2):
            if self.proc.poll() is not None:
                raise SystemExit(f"unimp serve exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit("the server did not get ready")

    def peak_rss_mb(self) -> float:
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", text).group(1)) / 1024

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(120)


async def load(url: str, clients: int, seconds: float, users: list[int], k: int) -> dict:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    failures: list[str] = []

    async def client(session: aiohttp.ClientSession, i: int, stop_at: float) -> None:
        n = i
        while time.monotonic() < stop_at:
            body = {"user": users[n % len(users)], "k": k}
            n += clients
            started = time.perf_counter()
            try:
                async with session.post(url + "/v1/recommend", json=body) as res:
                    await res.read()
                    statuses[res.status] = statuses.get(res.status, 0) + 1
                    if res.status == 200:
                        latencies.append(time.perf_counter() - started)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                failures.append(repr(exc))

    timeout = aiohttp.ClientTimeout(total=900)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients), timeout=timeout) as session:
        started = time.monotonic()
        await asyncio.gather(*(client(session, i, started + seconds) for i in range(clients)))
        elapsed = time.monotonic() - started
        async with session.get(url + "/metrics") as res:
            metrics = await res.text()
    ok = statuses.get(200, 0)
    lat = np.array(latencies) * 1000
    batches = _metric(metrics, "unimp_batch_size_count")
    return {"requests": sum(statuses.values()), "ok": ok, "seconds": round(elapsed, 2),
            "requests_per_s": round(ok / elapsed, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 1) if ok else None,
            "p99_ms": round(float(np.percentile(lat, 99)), 1) if ok else None,
            "errors": len(failures) + sum(n for s, n in statuses.items() if s != 200),
            "statuses": statuses, "failures": failures[:3],
            "mean_batch": round(_metric(metrics, "unimp_batch_size_sum") / batches, 1) if batches else None}


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, default=None, help="run folder (default: demo/runs/sample-tiny, else train it)")
    ap.add_argument("--checkpoint", default="final", help="final or step-N")
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--settings", nargs="+", default=["64,10", "1,0"], help="server settings as MAX_BATCH,MAX_WAIT_MS")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or (DEMO_RUN if (DEMO_RUN / "final").is_dir() else _demo_run(Path(tmp)))
        import polars as pl

        from unimp_core.run_folder import dataset_folder, read_train_spec

        users = pl.read_parquet(Path(dataset_folder(run, read_train_spec(run))) / "users.parquet")["user_id"].to_list()
        results = {"run": str(run), "checkpoint": args.checkpoint, "clients": args.clients, "seconds": args.seconds, "cpus": os.cpu_count(),
                   "uptime_before": _uptime(), "settings": []}
        print(f"run {run}: {len(users)} users; {args.clients} clients for {args.seconds:g} s per setting")
        print(results["uptime_before"])
        for setting in args.settings:
            max_batch, max_wait = setting.split(",")
            server = Server(run, args.checkpoint, int(max_batch), float(max_wait))
            try:
                server.wait_ready(600)
                out = asyncio.run(load(server.url, args.clients, args.seconds, users, args.k))
                out["peak_rss_mb"] = round(server.peak_rss_mb(), 1)
            finally:
                code = server.stop()
            out.update(max_batch=int(max_batch), max_wait_ms=float(max_wait), exit_code=code, log_lines=server.access_lines)
            results["settings"].append(out)
            print(f"--max-batch {max_batch:>3} --max-wait-ms {max_wait:>3}: {out['requests_per_s']:>7} req/s  "
                  f"p50 {out['p50_ms']} ms  p99 {out['p99_ms']} ms  errors {out['errors']}  "
                  f"mean batch {out['mean_batch']}  peak RSS {out['peak_rss_mb']} MB  (requests {out['requests']}, "
                  f"log lines {out['log_lines']}, exit {code})")
        results["uptime_after"] = _uptime()
        print(results["uptime_after"])
        s = results["settings"]
        if len(s) >= 2 and s[-1]["requests_per_s"]:
            results["speedup"] = round(s[0]["requests_per_s"] / s[-1]["requests_per_s"], 2)
            print(f"micro-batching: {results['speedup']}x the throughput of --max-batch {s[-1]['max_batch']}")
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
