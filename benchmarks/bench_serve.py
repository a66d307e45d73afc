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

`--soak SECONDS` instead holds the first setting at capacity for that long (the same closed loop: every
client sends its next request as soon as it has its answer) and prints, every `--sample-s`, the server's
resident memory (VmRSS) and the requests and 5xx answers so far; at the end the memory growth from the
first sample under load to the last (flat memory: no leak), and the 5xx count, which must be 0:

    .venv/bin/python benchmarks/bench_serve.py --soak 600 [--sample-s 30] [--clients 200] [--json soak.json]

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
from typing import Awaitable, Callable

import aiohttp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEMO_RUN = ROOT / "demo" / "runs" / "sample-tiny"


def _demo_run(base: Path) -> Path:
    """The tiny run `make demo` trains (examples/train-sample-tiny.yaml on the bundled sample)."""
    from unimp_core.prepare import run_prepare
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

    def __init__(self, run: Path, checkpoint: str, max_batch: int, max_wait_ms: float, data: Path | None = None):
        cmd = [sys.executable, "-m", "unimp_cli", "serve", "--run", str(run), "--checkpoint", checkpoint, "--port", "0",
               "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms), "--max-pending", "4096",
               "--timeout-s", "900"]  # measure throughput, not the timeout: every request is answered
        cmd += ["--data", str(data)] if data else []
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

    def _status_mb(self, field: str) -> float:
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(field + r":\s+(\d+) kB", text).group(1)) / 1024

    def peak_rss_mb(self) -> float:
        return self._status_mb("VmHWM")

    def rss_mb(self) -> float:
        return self._status_mb("VmRSS")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(120)
        except subprocess.TimeoutExpired:  # never leave a server behind
            self.proc.kill()
            return self.proc.wait()


async def load(url: str, clients: int, seconds: float, users: list[int], k: int,
               monitor: Callable[[dict[int, int], list[str]], Awaitable[None]] | None = None) -> dict:
    """`clients` closed-loop clients for `seconds`; `monitor(statuses, failures)`, if given, runs alongside
    them (it sees the tallies grow) until they stop."""
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
        watcher = asyncio.ensure_future(monitor(statuses, failures)) if monitor else None
        await asyncio.gather(*(client(session, i, started + seconds) for i in range(clients)))
        elapsed = time.monotonic() - started
        if watcher is not None:
            watcher.cancel()
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


def soak(server: Server, clients: int, seconds: float, every: float, users: list[int], k: int) -> dict:
    """Hold the server at capacity for `seconds`, sampling its memory and the 5xx count every `every` s."""
    samples: list[dict] = []
    started = time.monotonic()

    def sample(statuses: dict[int, int], failures: list[str]) -> None:
        row = {"t_s": round(time.monotonic() - started, 1), "rss_mb": round(server.rss_mb(), 1),
               "requests": sum(statuses.values()), "5xx": sum(n for s, n in statuses.items() if s >= 500),
               "failures": len(failures)}
        samples.append(row)
        print(f"  t {row['t_s']:>6} s  RSS {row['rss_mb']:>7} MB  requests {row['requests']:>8}  "
              f"5xx {row['5xx']}  connection failures {row['failures']}", flush=True)

    live: dict = {}

    async def monitor(statuses: dict[int, int], failures: list[str]) -> None:
        live.update(statuses=statuses, failures=failures)
        while True:
            sample(statuses, failures)
            await asyncio.sleep(every)

    out = asyncio.run(load(server.url, clients, seconds, users, k, monitor))
    sample(live["statuses"], live["failures"])  # the end
    out["samples"] = samples
    # growth from the first sample under load (the first, at 0 s, is the idle server) to the last
    out["rss_growth_mb"] = round(samples[-1]["rss_mb"] - samples[min(1, len(samples) - 1)]["rss_mb"], 1)
    out["5xx"] = samples[-1]["5xx"]
    out["peak_rss_mb"] = round(server.peak_rss_mb(), 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, default=None, help="run folder (default: demo/runs/sample-tiny, else train it)")
    ap.add_argument("--checkpoint", default="final", help="final or step-N")
    ap.add_argument("--data", type=Path, default=None, help="the run's dataset folder, if it moved")
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--settings", nargs="+", default=["64,10", "1,0"], help="server settings as MAX_BATCH,MAX_WAIT_MS")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--soak", type=float, default=None, metavar="SECONDS",
                    help="hold the first setting at capacity this long, sampling memory and 5xx (no comparison)")
    ap.add_argument("--sample-s", type=float, default=30.0, help="--soak: seconds between samples")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or (DEMO_RUN if (DEMO_RUN / "final").is_dir() else _demo_run(Path(tmp)))
        import polars as pl

        from unimp_core.run_folder import dataset_folder, read_train_spec

        data = args.data or Path(dataset_folder(run, read_train_spec(run)))
        users = pl.read_parquet(data / "users.parquet")["user_id"].to_list()
        results = {"run": str(run), "checkpoint": args.checkpoint, "clients": args.clients, "seconds": args.seconds, "cpus": os.cpu_count(),
                   "uptime_before": _uptime(), "settings": []}
        if args.soak:
            _soak_main(args, run, users, results)
            return
        print(f"run {run}: {len(users)} users; {args.clients} clients for {args.seconds:g} s per setting")
        print(results["uptime_before"])
        for setting in args.settings:
            max_batch, max_wait = setting.split(",")
            server = Server(run, args.checkpoint, int(max_batch), float(max_wait), args.data)
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


def _soak_main(args: argparse.Namespace, run: Path, users: list[int], results: dict) -> None:
    max_batch, max_wait = args.settings[0].split(",")
    print(f"run {run}: {len(users)} users; soak: {args.clients} clients for {args.soak:g} s, "
          f"--max-batch {max_batch} --max-wait-ms {max_wait}")
    print(results["uptime_before"])
    server = Server(run, args.checkpoint, int(max_batch), float(max_wait), args.data)
    try:
        server.wait_ready(600)
        out = soak(server, args.clients, args.soak, args.sample_s, users, args.k)
    finally:
        code = server.stop()
    out.update(max_batch=int(max_batch), max_wait_ms=float(max_wait), exit_code=code, log_lines=server.access_lines)
    results.update(soak_s=args.soak, soak=out, uptime_after=_uptime())
    print(results["uptime_after"])
    print(f"soak {args.soak:g} s: {out['requests_per_s']} req/s  requests {out['requests']}  5xx {out['5xx']}  "
          f"errors {out['errors']}  RSS {out['samples'][0]['rss_mb']} -> {out['samples'][-1]['rss_mb']} MB "
          f"(growth {out['rss_growth_mb']} MB, peak {out['peak_rss_mb']} MB)  exit {code}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
