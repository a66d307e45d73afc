"""Benchmark (not a test): the built-in SASRec on the real Amazon 2014 Beauty sequences, issue 9's protocol.

    .venv/bin/python benchmarks/bench_sasrec.py [--seq PATH/Beauty.txt] [--work DIR] [--loss bce ce] [--threads N]
                                                [--train-args "--epochs 20"]

1. the `user item item ...` lines (S3-Rec/ICLRec format, time order) become a user,item,timestamp CSV
   (timestamp = position in the line);
2. unimp prepare --source files --interactions DIR/beauty.csv --domain beauty --protocol leave-one-out
       --user-core 5 --item-core 5 --no-images --out DIR/beauty          (skipped when DIR/beauty exists)
3. per loss: unimp train --data DIR/beauty --model sasrec --loss L --out DIR/sasrec-L [train-args]
   (skipped when the run is finished: rerun with another --work to measure again)
4. unimp evaluate --run DIR/sasrec-<first> --compare DIR/sasrec-<others> --exclude-history --json

Prints the side-by-side table (HR@5/10, NDCG@5/10, popularity), and per run the epochs trained, the best
step, the wall time of `unimp train`, its mean training throughput (sequences/s, from metrics.jsonl),
the thread count and the load average before and after (the machine may be shared: say so with the numbers).
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
SHARED = ROOT.parent / "shared" / "data" / "amazon2014-seq" / "Beauty.txt"
PUBLISHED = {"SASRec (published)": {"HR@10": 0.0605, "NDCG@10": 0.0318}}


def unimp(*args: str, env: dict) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "unimp_cli", *args]
    print("$ unimp " + " ".join(shlex.quote(a) for a in args), flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ''}")
    return proc


def to_csv(seq: Path, out: Path) -> None:
    rows = ["user,item,timestamp"]
    for line in seq.read_text().splitlines():
        user, *items = line.split()
        rows += [f"{user},{item},{t}" for t, item in enumerate(items)]
    out.write_text("\n".join(rows) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq", type=Path, default=SHARED, help="Beauty.txt: one `user item item ...` line per user")
    ap.add_argument("--work", type=Path, default=ROOT / "build" / "bench-sasrec", help="where the dataset and runs go")
    ap.add_argument("--loss", nargs="+", default=["bce", "ce"], choices=["bce", "ce"])
    ap.add_argument("--threads", type=int, default=None, help="OMP/torch threads (default: torch's)")
    ap.add_argument("--train-args", default="", help="extra `unimp train` flags, e.g. \"--epochs 20\"")
    a = ap.parse_args()
    if not a.seq.is_file():
        sys.exit(f"{a.seq}: not found (the S3-Rec/ICLRec Beauty.txt sequences)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if a.threads:
        env["OMP_NUM_THREADS"] = str(a.threads)
    a.work.mkdir(parents=True, exist_ok=True)
    data = a.work / "beauty"
    if not (data / "manifest.json").is_file():
        to_csv(a.seq, a.work / "beauty.csv")
        unimp("prepare", "--source", "files", "--interactions", str(a.work / "beauty.csv"), "--domain", "beauty",
              "--protocol", "leave-one-out", "--user-core", "5", "--item-core", "5", "--no-images", "--out", str(data),
              env=env)
    runs, facts = [], {}
    for loss in a.loss:
        run = a.work / f"sasrec-{loss}"
        runs.append(run)
        load = os.getloadavg()[0]
        if (run / "final" / "trainable.pt").is_file():
            print(f"{run}: finished earlier, not retrained", flush=True)
            wall = None
        else:
            t0 = time.time()
            unimp("train", "--data", str(data), "--model", "sasrec", "--loss", loss, "--out", str(run),
                  *shlex.split(a.train_args), env=env)
            wall = time.time() - t0
        lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
        rates = [r["samples_per_s"] for r in lines if "samples_per_s" in r]
        final = json.loads((run / "final" / "state.json").read_text())
        best = json.loads((run / "best" / "state.json").read_text()) if (run / "best").is_dir() else {}
        facts[run.name] = {"wall_s": None if wall is None else round(wall), "load_before": round(load, 1),
                           "load_after": round(os.getloadavg()[0], 1), "steps": final["step"],
                           "epochs": max((r.get("epoch", 0) for r in lines), default=0),
                           "early_stopped": final.get("early_stopped"), "best_step": best.get("step"),
                           "best_valid": best.get("value"),
                           "sequences_per_s": round(sum(rates) / len(rates)) if rates else None}
    args = ["evaluate", "--run", str(runs[0])]
    if len(runs) > 1:
        args += ["--compare", *map(str, runs[1:])]
    out = unimp(*args, "--exclude-history", "--json", env=env).stdout
    result = json.loads(out[out.index("{"):])
    rec = result["tasks"]["rec"]
    if "runs" not in rec:  # one run: an ordinary report, put in the comparison's shape
        from unimp_core.evaluation.compare import protocol

        rec = {"runs": [{"run": result["run"], "checkpoint": result["checkpoint"], "metrics": rec["metrics"]}],
               "popularity": rec["popularity"], "protocol": protocol(result, rec)}
    names = ["HR@5", "HR@10", "NDCG@5", "NDCG@10"]
    print("\n| | " + " | ".join(names) + " | epochs | best step | train wall | sequences/s |")
    print("|---|" + "---|" * (len(names) + 4))
    for row in rec["runs"]:
        f = facts[Path(row["run"]).name]
        wall = "—" if f["wall_s"] is None else f"{f['wall_s'] / 60:.1f} min"
        print(f"| {Path(row['run']).name} ({row['checkpoint']}) | " + " | ".join(f"{row['metrics'][n]:.4f}" for n in names)
              + f" | {f['epochs']:g} | {f['best_step']} | {wall} | {f['sequences_per_s']} |")
    print("| popularity | " + " | ".join(f"{rec['popularity'][n]:.4f}" for n in names) + " | | | | |")
    for name, m in PUBLISHED.items():
        print(f"| {name} | — | {m['HR@10']:.4f} | — | {m['NDCG@10']:.4f} | | | | |")
    p = rec["protocol"]
    print(f"\nprotocol: {p['split']} split ({p['protocol']}), {p['candidates']}, history excluded: "
          f"{p['history_excluded']}, ties {p['ties']}, {p['users']:,} users")
    print(f"threads: {a.threads or 'torch default'}; load average (1 min) before/after each run: "
          + ", ".join(f"{k} {v['load_before']}/{v['load_after']}" for k, v in facts.items()))
    print(json.dumps(facts, indent=1))


if __name__ == "__main__":
    main()
