"""Benchmark (not a test): recommendation quality on real sequences, unimp's recipe beside SASRec and
popularity, with training time and training throughput, all through the CLI a user runs.

    .venv/bin/python benchmarks/bench_quality.py --sequences ../shared/data/amazon2014-seq/Beauty.txt
        [--work bench-quality] [--config examples/train-beauty-ids.yaml] [--epochs N] [--skip-sasrec]
        [--threads N]

Steps (each printed as the exact command it runs):
1. the sequence file (one `user item item ...` line per user, in time order) becomes a user,item,timestamp
   CSV (timestamp = position), then `unimp prepare --source files ... --protocol leave-one-out
   --user-core 5 --item-core 5 --no-images`;
2. `unimp train --config examples/train-beauty-ids.yaml` (the tiny unimp model);
3. `unimp train --model sasrec` when the sasrec model family is installed (unimp_core.model.families);
   otherwise the row says so;
4. `unimp evaluate --run RUN --tasks rec --exclude-history --json` on the test split (full catalogue,
   every test user), for each run; popularity comes from the same evaluation.
Steps whose output is already in --work (data/manifest.json, runs/<name>/final/) are not redone.
The table gives HR@5, NDCG@5, HR@10, NDCG@10, training wall time and training samples/s (whole run,
from metrics.jsonl: prompts/s for unimp, sequences/s for SASRec: one sample per training user
either way), with the machine's load average at the start and the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KS = ("HR@5", "NDCG@5", "HR@10", "NDCG@10")


def sequences_to_csv(sequences: Path, out: Path) -> tuple[int, int]:
    """`user item item ...` lines -> user,item,timestamp rows (timestamp = position). Returns (users, rows)."""
    users = rows = 0
    with open(sequences) as src, open(out, "w") as dst:
        dst.write("user,item,timestamp\n")
        for line in src:
            parts = line.split()
            if len(parts) < 2:
                continue
            users += 1
            for t, item in enumerate(parts[1:]):
                dst.write(f"{parts[0]},{item},{t}\n")
                rows += 1
    return users, rows


def unimp_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("unimp")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "unimp_cli"]


def run(cmd: list[str], env: dict[str, str], capture: bool = False) -> tuple[float, str]:
    print("$", " ".join(shlex.quote(c) for c in cmd), flush=True)
    start = time.time()
    res = subprocess.run(cmd, env=env, text=True, stdout=subprocess.PIPE if capture else None)
    if res.returncode:
        raise SystemExit(f"failed ({res.returncode}): {' '.join(cmd)}")
    return time.time() - start, res.stdout or ""


def mean_rate(run_dir: Path) -> float | None:
    """Training samples/s over the whole run: the last metrics line's (the loop's rate counts from the start)."""
    rates = []
    path = run_dir / "metrics.jsonl"
    if path.is_file():
        rates = [rec["samples_per_s"] for rec in map(json.loads, path.read_text().splitlines())
                 if "samples_per_s" in rec]
    return rates[-1] if rates else None


def train_seconds(run_dir: Path) -> float | None:
    """A finished run's wall time: from its train_spec.json (written first) to its final/ folder."""
    spec, final = run_dir / "train_spec.json", run_dir / "final"
    if spec.is_file() and final.is_dir():
        return final.stat().st_mtime - spec.stat().st_mtime
    return None


def evaluate(run_dir: Path, env: dict[str, str]) -> dict:
    _, out = run(unimp_cmd() + ["evaluate", "--run", str(run_dir), "--tasks", "rec", "--exclude-history",
                                "--batch-size", "64", "--json"], env, capture=True)
    return json.loads(out[out.index("{"):])


def rec_metrics(report: dict) -> dict:
    tasks = report.get("tasks", report)
    return tasks["rec"]


def sasrec_available() -> bool:
    from unimp_core.model.families import FAMILIES

    return "sasrec" in FAMILIES


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sequences", type=Path, default=ROOT.parent / "shared/data/amazon2014-seq/Beauty.txt")
    ap.add_argument("--work", type=Path, default=Path("bench-quality"))
    ap.add_argument("--config", type=Path, default=ROOT / "examples/train-beauty-ids.yaml")
    ap.add_argument("--epochs", type=float, default=None, help="override the recipe's epochs")
    ap.add_argument("--skip-sasrec", action="store_true")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (OMP_NUM_THREADS); 1 avoids oversubscription on a busy machine")
    args = ap.parse_args()
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()[0]
    data = work / "data"
    if not (data / "manifest.json").is_file():
        csv = work / "sequences.csv"
        users, rows = sequences_to_csv(args.sequences, csv)
        print(f"{args.sequences}: {users} users, {rows} interactions")
        run(unimp_cmd() + ["prepare", "--source", "files", "--interactions", str(csv), "--domain", "seq",
                           "--out", str(data), "--protocol", "leave-one-out", "--user-core", "5", "--item-core", "5",
                           "--no-images"], env)

    rows = []
    unimp_run = work / "runs" / "unimp"
    if not (unimp_run / "final").is_dir():
        extra = ["--epochs", str(args.epochs)] if args.epochs else []
        run(unimp_cmd() + ["train", "--config", str(args.config), "--data", str(data),
                            "--out", str(unimp_run)] + extra, env)
    rows.append(("unimp tiny (recipe)", unimp_run))

    sasrec_run = work / "runs" / "sasrec"
    if args.skip_sasrec:
        pass
    elif sasrec_available():
        if not (sasrec_run / "final").is_dir():
            run(unimp_cmd() + ["train", "--data", str(data), "--model", "sasrec", "--tasks", "rec",
                                "--out", str(sasrec_run)], env)
        rows.append(("SASRec (built in)", sasrec_run))
    else:
        print("SASRec: the sasrec model family is not installed yet (unimp_core.model.families); row skipped")

    results = []
    popularity = None
    for name, run_dir in rows:
        rec = rec_metrics(evaluate(run_dir, env))
        popularity = popularity or (rec["popularity"], rec["users"])
        results.append((name, rec["metrics"], train_seconds(run_dir), mean_rate(run_dir), rec["users"]))
    load_end = os.getloadavg()[0]

    print(f"\nleave-one-out test split, full catalogue, history items excluded, pessimistic ties, "
          f"{results[0][4]} users; load average {load_start:.1f} -> {load_end:.1f} on {os.cpu_count()} CPUs")
    print("| model | " + " | ".join(KS) + " | training | samples/s |")
    print("|---|" + "---|" * (len(KS) + 2))
    for name, metrics, seconds, rate, _ in results:
        took = f"{seconds / 60:.1f} min" if seconds is not None else "-"
        speed = f"{rate:.0f}" if rate is not None else "-"
        print(f"| {name} | " + " | ".join(f"{metrics[k]:.4f}" for k in KS) + f" | {took} | {speed} |")
    if popularity is not None:
        print("| popularity | " + " | ".join(f"{popularity[0][k]:.4f}" for k in KS) + " | - | - |")


if __name__ == "__main__":
    main()
