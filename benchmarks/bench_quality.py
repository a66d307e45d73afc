"""Benchmark (not a test): recommendation quality on real sequences, unimp from item ids alone and with
item content beside SASRec and popularity, with training time and training throughput, all through the
CLI a user runs.

    .venv/bin/python benchmarks/bench_quality.py --sequences ../shared/data/amazon2014-seq/Beauty.txt \
        --items ../shared/data/amazon2014-attributes/Beauty_item2attributes.json --threads 1 --jobs 2
        [--work bench-quality] [--ids-config examples/train-beauty-ids.yaml]
        [--content-config examples/train-beauty-attributes.yaml] [--epochs N] [--skip-sasrec]

Steps (each printed as the exact command it runs):
1. the sequence file (one `user item item ...` line per user, in time order) becomes a user,item,timestamp
   CSV (timestamp = position), then `unimp prepare --source files ... --protocol leave-one-out
   --user-core 5 --item-core 5 --no-images` (with `--items FILE` when given: the item attributes);
2. the trainings, `--jobs` at a time (each with `--threads` torch threads): `unimp train --config
   IDS_CONFIG` (the unimp model from item ids alone: the config turns item attributes off), `unimp train
   --config CONTENT_CONFIG` (the same model reading the items' attributes; only with --items) and
   `unimp train --model sasrec` (its defaults);
3. `unimp evaluate --run RUN --tasks rec --exclude-history --json` on the test split (full catalogue,
   every test user), for each run; popularity comes from the same evaluation.
Steps whose output is already in --work (data/manifest.json, runs/<name>/final/) are not redone.
Two tables: HR@5, NDCG@5, HR@10, NDCG@10, training wall time and training samples/s (whole run, from
metrics.jsonl: prompts/s for unimp, sequences/s for SASRec: one sample per training user either way),
with the machine's load average at the start and the end; then NDCG@10 by the target item's popularity
in training (evaluate's `by_popularity`).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
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


def train_all(commands: list[list[str]], env: dict[str, str], jobs: int) -> None:
    """Run the training commands (`run`), `jobs` at a time; any failure stops the benchmark."""
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(lambda cmd: run(cmd, env, capture=True), commands))  # capture: no interleaved logs

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sequences", type=Path, default=ROOT.parent / "shared/data/amazon2014-seq/Beauty.txt")
    ap.add_argument("--items", type=Path, default=None, help="item attributes for `prepare --items` (adds the content row)")
    ap.add_argument("--work", type=Path, default=Path("bench-quality"))
    ap.add_argument("--ids-config", type=Path, default=ROOT / "examples/train-beauty-ids.yaml")
    ap.add_argument("--content-config", type=Path, default=ROOT / "examples/train-beauty-attributes.yaml")
    ap.add_argument("--epochs", type=float, default=None, help="override the unimp recipes' epochs (a cap)")
    ap.add_argument("--skip-sasrec", action="store_true")
    ap.add_argument("--jobs", type=int, default=1, help="trainings run at once (one per core: --threads 1 --jobs 2)")
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
        items = ["--items", str(args.items)] if args.items else []
        run(unimp_cmd() + ["prepare", "--source", "files", "--interactions", str(csv), "--domain", "seq",
                           "--out", str(data), "--protocol", "leave-one-out", "--user-core", "5", "--item-core", "5",
                           "--no-images"] + items, env)

    extra = ["--epochs", str(args.epochs)] if args.epochs else []
    # in this order, so that with --jobs 2 the ids recipe and SASRec (whose times are compared) share the machine
    runs = [("unimp tiny, item ids", work / "runs" / "unimp-ids",
             ["train", "--config", str(args.ids_config)] + extra)]
    if not args.skip_sasrec:
        runs.append(("SASRec (built in, defaults)", work / "runs" / "sasrec", ["train", "--model", "sasrec"]))
    if args.items:
        runs.append(("unimp tiny, ids + attributes", work / "runs" / "unimp-content",
                     ["train", "--config", str(args.content_config)] + extra))
    todo = [unimp_cmd() + cmd + ["--data", str(data), "--out", str(run_dir)]
            for _, run_dir, cmd in runs if not (run_dir / "final").is_dir()]
    train_all(todo, env, args.jobs)

    results = []
    popularity = None
    for name, run_dir, _ in runs:
        rec = rec_metrics(evaluate(run_dir, env))
        popularity = popularity or rec
        results.append((name, rec, train_seconds(run_dir), mean_rate(run_dir)))
    load_end = os.getloadavg()[0]

    print(f"\nleave-one-out test split, full catalogue, history items excluded, pessimistic ties, "
          f"{results[0][1]['users']} users; load average {load_start:.1f} -> {load_end:.1f} on {os.cpu_count()} CPUs")
    print("| model | " + " | ".join(KS) + " | training | samples/s |")
    print("|---|" + "---|" * (len(KS) + 2))
    for name, rec, seconds, rate in results:
        took = f"{seconds / 60:.1f} min" if seconds is not None else "-"
        speed = f"{rate:.0f}" if rate is not None else "-"
        print(f"| {name} | " + " | ".join(f"{rec['metrics'][k]:.4f}" for k in KS) + f" | {took} | {speed} |")
    if popularity is not None:
        print("| popularity | " + " | ".join(f"{popularity['popularity'][k]:.4f}" for k in KS) + " | - | - |")
    buckets = popularity_table(results)
    if buckets:
        print("\n" + buckets)


def popularity_table(results: list) -> str:
    """NDCG@10 / HR@10 by the target item's training popularity, one row per run and popularity
    (evaluate's by_popularity and popularity_by_popularity)."""
    first = results[0][1].get("by_popularity")
    if not first:
        return ""
    labels = list(first)
    rows = [(name, rec["by_popularity"]) for name, rec, _, _ in results]
    rows.append(("popularity", results[0][1]["popularity_by_popularity"]))

    def cell(b: dict) -> str:
        return "-" if b.get("NDCG@10") is None else f"{b['NDCG@10']:.4f} / {b['HR@10']:.4f}"

    lines = ["NDCG@10 / HR@10 by how often the target item occurs in training (test users per bucket)",
             "| model | " + " | ".join(f"{b} ({first[b]['users']})" for b in labels) + " |",
             "|---|" + "---|" * len(labels)]
    lines += [f"| {name} | " + " | ".join(cell(buckets.get(b, {})) for b in labels) + " |" for name, buckets in rows]
    return "\n".join(lines)

if __name__ == "__main__":
    main()
