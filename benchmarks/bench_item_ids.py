"""Benchmark (not a test): atomic item ids (one token `item_<i>` per item) vs semantic ids (a code tuple of
shared tokens, `--item-ids semantic`).

    .venv/bin/python benchmarks/bench_item_ids.py memory [--items 1000000]
        (a) embedding rows of the tiny model (built, counted) and of the 4b preset (assembled on the meta
            device, no download; its item rows projected): input + output rows, fp32 weights, gradients and
            Adam's two moments (16 bytes per parameter)
    .venv/bin/python benchmarks/bench_item_ids.py step [--items 1000000] [--steps 10] [--batch-size 8]
        (b) one training step (forward, focal loss, backward, clipping, AdamW) of the tiny model on synthetic
            rec prompts over a catalogue of --items items; each kind in its own process (its peak memory)
    .venv/bin/python benchmarks/bench_item_ids.py rank --data DATA [--users 256] [--history-len 50]
        exact full-catalogue ranking speed (users/s) of a fresh tiny model on DATA's test rec instances, atomic
        vs semantic (the code tree's passes); DATA without item codes gets random ones in a copy (timing only)
    .venv/bin/python benchmarks/bench_item_ids.py quality --data DATA [--config CFG] [--epochs N | --max-steps N]
        (c) the same recipe trained with atomic and with semantic ids, each evaluated on rec with the full
            protocol (test split, whole catalogue, --exclude-history)
    .venv/bin/python benchmarks/bench_item_ids.py cold --data DATA [--cold-share 0.05] [--source text image] [...]
        cold start: a share of the items that are some user's last item is held out of training (every other
        occurrence removed, the folder re-prepared leave-one-out), then HR@10 / NDCG@10 on the test instances
        whose target is such an item, atomic vs semantic

quality and cold need item codes from `unimp tokenize-items` (run on the folder when the command exists);
`--synthetic-codes` writes codes derived from nothing but random numbers into a copy instead: a plumbing
check only, its numbers say nothing about semantic ids. Steps whose output is already in --work are not redone.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_quality import run, train_seconds, unimp_cmd  # noqa: E402  (this folder is sys.path[0])

LEVELS, CODES = 3, 256  # the paper's code's --use_semantic: 3 levels of 512 codes; TIGER: 3 x 256
BYTES_PER_PARAM = 16  # fp32 weight + gradient + Adam's m and v
KS = ("HR@5", "NDCG@5", "HR@10", "NDCG@10")


# ------------------------------------------------------------------------------------------ helpers


def random_codes(n_items: int, seed: int = 0, levels: int = LEVELS, codes: int = CODES) -> list[tuple[int, ...]]:
    """Uniform random quantiser codes (a balanced residual quantiser's shape) + collision indices."""
    import numpy as np

    rng = np.random.default_rng(seed)
    table = rng.integers(0, codes, size=(n_items, levels))
    out, seen = [], {}
    for row in map(tuple, table.tolist()):
        k = seen.get(row, 0)
        seen[row] = k + 1
        out.append(row + (k,))
    return out


def item_codes(n_items: int, seed: int = 0):
    from unimp_core.itemcodes.codes import ItemCodes

    tuples = random_codes(n_items, seed)
    return ItemCodes(LEVELS, CODES, max(t[-1] for t in tuples) + 1, tuple(tuples))


def write_codes(root: Path, seed: int = 0) -> None:
    """item_codes.parquet + manifest record (the tokenize-items contract) with random codes."""
    import polars as pl

    n = pl.read_parquet(root / "items.parquet", columns=["item_id"]).height
    tuples = random_codes(n, seed)
    pl.DataFrame({"item_id": list(range(n)), "codes": [list(t) for t in tuples]},
                 schema={"item_id": pl.Int64, "codes": pl.List(pl.Int32)}).write_parquet(root / "item_codes.parquet")
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["item_codes"] = {"file": "item_codes.parquet", "levels": LEVELS, "codes": CODES,
                              "collision_codes": max(t[-1] for t in tuples) + 1,
                              "colliding_items": sum(t[-1] > 0 for t in tuples), "source": ["random (benchmark)"],
                              "quantizer": "random", "seed": seed,
                              "sha256": hashlib.sha256((root / "item_codes.parquet").read_bytes()).hexdigest()}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))


def with_codes(data: Path, work: Path, synthetic: bool, env: dict, sources: list[str] | None = None) -> Path:
    """`data` if it has item codes; else tokenize-items on it (`sources`: its --source, default its own), or
    (synthetic) a copy with random codes."""
    manifest = json.loads((data / "manifest.json").read_text())
    if "item_codes" in manifest:
        return data
    if synthetic:
        copy = work / f"{data.name}-{hashlib.sha256(str(data).encode()).hexdigest()[:8]}-random-codes"
        if not (copy / "item_codes.parquet").is_file():
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(data, copy)
            write_codes(copy)
        return copy
    if not has_command("tokenize-items"):
        raise SystemExit(f"{data} has no item codes and this unimp has no `tokenize-items`; pass --synthetic-codes "
                         "for a plumbing check")
    run(unimp_cmd() + ["tokenize-items", "--data", str(data)] + (["--source", *sources] if sources else []), env)
    return data


def has_command(name: str) -> bool:
    res = subprocess.run(unimp_cmd() + [name, "--help"], capture_output=True, text=True)
    return res.returncode == 0


def gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.2f} GiB" if n_bytes >= 2**28 else f"{n_bytes / 2**20:.1f} MiB"


def tiny_spec(item_ids: str, codes=None):
    from unimp_core.model.openflamingo.spec import ModelSpec
    from unimp_core.specs.model import ItemCodesRecord

    record = None if codes is None else ItemCodesRecord(levels=codes.levels, codes=codes.codes,
                                                         collision_codes=codes.collision_codes)
    return ModelSpec(item_ids=item_ids, item_codes=record)


# ------------------------------------------------------------------------------------------ (a) memory


def vocabulary_texts(lines: int = 4000) -> list[str]:
    """Random words enough for the tiny BPE to learn its full 4,096-token vocabulary (as on a real dataset)."""
    import numpy as np

    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, size=int(rng.integers(3, 9)))) for _ in range(6000)]
    return [" ".join(rng.choice(words, size=12)) for _ in range(lines)]


def embedding_rows(model) -> int:
    lm = model.lang_encoder
    tables = {id(t.weight): t.weight for t in (lm.get_input_embeddings(), lm.get_output_embeddings()) if t is not None}
    return sum(w.numel() for w in tables.values())


def memory(args) -> None:
    import torch

    from unimp_core.model.openflamingo.factory import build_model
    from unimp_core.model.openflamingo.spec import ModelSpec

    torch.set_num_threads(1)
    n = args.items
    texts = vocabulary_texts()
    rows = []
    for kind in ("atomic", "semantic"):
        codes = item_codes(n) if kind == "semantic" else None
        t0 = time.perf_counter()
        bundle = build_model(tiny_spec(kind, codes), items_text=texts, n_items=n, item_codes=codes)
        built = time.perf_counter() - t0
        emb = embedding_rows(bundle.model)
        hidden = bundle.model.lang_encoder.get_input_embeddings().weight.shape[1]
        items = 2 * hidden * (n if codes is None else codes.n_tokens)
        rows.append((f"tiny (hidden {hidden}), {kind}", len(bundle.tokenizer), items, emb, bundle.total, built))
        del bundle
    # the 4b preset on the meta device (no download): its own rows; the item rows are projected for n items
    meta = build_model(ModelSpec(preset="4b", item_ids="atomic"), n_items=1, device="meta")
    hidden = meta.model.lang_encoder.get_input_embeddings().weight.shape[1]
    base_rows = len(meta.tokenizer) - 1  # without its one item token
    base_total = meta.total - 2 * hidden
    for kind, added in (("atomic", n), ("semantic", item_codes(n).n_tokens)):
        vocab = base_rows + added
        emb = 2 * vocab * hidden
        rows.append((f"4b (hidden {hidden}), {kind}", vocab, 2 * added * hidden, emb, base_total + 2 * added * hidden,
                     None))
    print(f"\nembedding tables (input + output rows) at {n:,} items; semantic: {LEVELS} levels x {CODES} codes + "
          f"collision codes; memory = fp32 weights + gradients + Adam m and v ({BYTES_PER_PARAM} B/parameter)")
    print("| model, item ids | vocabulary | item rows' parameters | their training memory | embedding tables' "
          "parameters | their training memory | share of the model | build |")
    print("|---|---|---|---|---|---|---|---|")
    for name, vocab, items, emb, total, built in rows:
        took = f"{built:.0f} s" if built is not None else "-"
        print(f"| {name} | {vocab:,} | {items:,} | {gib(items * BYTES_PER_PARAM)} | {emb:,} | "
              f"{gib(emb * BYTES_PER_PARAM)} | {emb / total:.1%} | {took} |")


# -------------------------------------------------------------------------------------------- (b) step


def step_child(kind: str, args) -> dict:
    """One kind's step time, measured in this process (its peak RSS is its own)."""
    import numpy as np
    import torch

    from unimp_core.model.openflamingo.factory import build_model
    from unimp_core.model.openflamingo.family import forward
    from unimp_core.tasks.base import Sample
    from unimp_core.tokens import ANSWER, EOC, item_token, semantic_item
    from unimp_core.training.collate import make_collator
    from unimp_core.training.loss import answer_loss_parts
    from unimp_core.training.optim import build_optimizer

    torch.set_num_threads(1)
    torch.manual_seed(0)
    n = args.items
    codes = item_codes(n) if kind == "semantic" else None
    t0 = time.perf_counter()
    bundle = build_model(tiny_spec(kind, codes), items_text=vocabulary_texts(), n_items=n, item_codes=codes)
    built = time.perf_counter() - t0
    name = (lambda i: item_token(i)) if codes is None else (lambda i: semantic_item(codes.tuples[i]))
    rng = np.random.default_rng(0)

    def sample() -> Sample:
        items = rng.integers(0, n, size=args.history_len + 1).tolist()
        history = " ".join(f"{ANSWER} {name(i)} {EOC}" for i in items[:-1])
        return Sample("rec", f"{history} What is the next item recommended to the user? {ANSWER} {name(items[-1])} {EOC}", [])

    size = bundle.image_size
    collate = make_collator(bundle.tokenizer, max_length=1024, images=lambda i: torch.zeros(3, size, size),
                            image_shape=(3, size, size))
    model = bundle.model
    model.train()
    optimizer = build_optimizer(model, 1e-3, 0.1)
    batches = [collate([sample() for _ in range(args.batch_size)]) for _ in range(args.steps + 2)]
    times = []
    for k, batch in enumerate(batches):
        t = time.perf_counter()
        logits = forward(model, batch)
        parts = answer_loss_parts(logits, batch["labels"], batch["weights"], 2.0)
        parts.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        if k >= 2:  # the first steps allocate the optimizer state
            times.append(time.perf_counter() - t)
    return {"kind": kind, "vocab": len(bundle.tokenizer), "trainable": bundle.trainable, "built_s": built,
            "step_s": float(np.median(times)), "tokens": int(batches[0]["input_ids"].shape[1]),
            "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def step(args) -> None:
    results = []
    for kind in ("atomic", "semantic"):
        cmd = [sys.executable, __file__, "step", "--only", kind, "--items", str(args.items), "--steps",
               str(args.steps), "--batch-size", str(args.batch_size), "--history-len", str(args.history_len)]
        out = subprocess.run(cmd, text=True, stdout=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if out.returncode:
            raise SystemExit(f"{kind}: failed ({out.returncode})")
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"\ntraining step of the tiny model, {args.items:,} items, batch {args.batch_size} rec prompts of "
          f"{args.history_len} history items, 1 thread, median of {args.steps} steps; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print("| item ids | vocabulary | trainable parameters | prompt tokens | step | peak memory | model build |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['kind']} | {r['vocab']:,} | {r['trainable']:,} | {r['tokens']} | {r['step_s']:.3f} s | "
              f"{gib(r['peak_rss'])} | {r['built_s']:.0f} s |")


# -------------------------------------------------------------------------------------------- rank speed


def rank(args) -> None:
    import torch

    from unimp_core.data.store import load_dataset
    from unimp_core.model.openflamingo import decode as R
    from unimp_core.model.openflamingo import tree as T
    from unimp_core.itemcodes.codes import load_item_codes
    from unimp_core.model.openflamingo.factory import build_model
    from unimp_core.model.openflamingo.family import batch_scores
    from unimp_core.model.vision_cache import ItemImages
    from unimp_core.tasks import build_eval_samples, context
    from unimp_core.training.collate import make_collator

    torch.set_num_threads(1)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    data = with_codes(args.data.resolve(), work, True, dict(os.environ))
    ds, codes = load_dataset(data), load_item_codes(data)
    print(f"{data}: {ds.items.height:,} items, codes {codes.levels} x {codes.codes} + {codes.collision_codes}")
    for kind in ("atomic", "semantic"):
        used = codes if kind == "semantic" else None
        bundle = build_model(tiny_spec(kind, used), items_text=ds, n_items=ds.items.height, item_codes=used)
        bundle.model.eval()
        samples = build_eval_samples(ds, "rec", "test", args.history_len, context(ds, used))[: args.users]
        collate = make_collator(bundle.tokenizer, max_length=args.max_tokens, padding_side="left",
                                images=ItemImages(ds, bundle.image_transform),
                                image_shape=(3, bundle.image_size, bundle.image_size))
        extra = ""
        if kind == "semantic":
            tree = T.code_tree(bundle.ids.item_tokens)
            extra = (f"; prefixes fed per user {tree.fed:,} (per depth "
                     f"{[len(level.tokens) for level in tree.levels][1:]}), scored "
                     f"{[len(level.scored) for level in tree.levels]}")
        t0, tokens = time.perf_counter(), 0
        for start in range(0, len(samples), args.batch_size):
            batch = collate(samples[start:start + args.batch_size])
            tokens += int(batch["attention_mask"].sum())
            batch_scores(bundle, bundle.model, batch)
        took = time.perf_counter() - t0
        print(f"{kind}: {len(samples)} users in {took:.1f} s = {len(samples) / took:.1f} users/s "
              f"(batch {args.batch_size}, {tokens / len(samples):.0f} prompt tokens per user{extra})", flush=True)


# --------------------------------------------------------------------------------- (c) quality, cold start


def train_and_evaluate(data: Path, runs: Path, args, env) -> dict[str, dict]:
    out = {}
    for kind in ("atomic", "semantic"):
        run_dir = runs / kind
        if not (run_dir / "final").is_dir():
            extra = (["--epochs", str(args.epochs)] if args.epochs else []) + (
                ["--max-steps", str(args.max_steps)] if args.max_steps else [])
            if args.config:
                extra += ["--config", str(args.config)]
            if args.select_users is not None:
                extra += ["--select-users", str(args.select_users)]
            run(unimp_cmd() + ["train", "--data", str(data), "--out", str(run_dir), "--item-ids", kind,
                               "--tasks", "rec"] + extra, env)
        _, text = run(unimp_cmd() + ["evaluate", "--run", str(run_dir), "--tasks", "rec", "--exclude-history",
                                  "--batch-size", str(args.batch_size), "--json"]
                   + (["--limit", str(args.limit)] if args.limit else []), env, capture=True)
        report = json.loads(text[text.index("{"):])
        out[kind] = {"rec": report["tasks"]["rec"], "folder": Path(report["folder"]),
                     "seconds": train_seconds(run_dir)}
    return out


def quality(args) -> None:
    env = dict(os.environ)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    data = with_codes(args.data.resolve(), work, args.synthetic_codes, env, args.source)
    results = train_and_evaluate(data, work / "runs", args, env)
    first = results["atomic"]["rec"]
    print(f"\n{data}: rec, test split, whole catalogue, history items excluded, {first['users']} users"
          + ("  (SYNTHETIC random codes: plumbing check only)" if args.synthetic_codes else ""))
    print("| item ids | " + " | ".join(KS) + " | training | ranking users/s |")
    print("|---|" + "---|" * (len(KS) + 2))
    for kind, r in results.items():
        took = f"{r['seconds'] / 60:.1f} min" if r["seconds"] is not None else "-"
        print(f"| {kind} | " + " | ".join(f"{r['rec']['metrics'][k]:.4f}" for k in KS)
              + f" | {took} | {r['rec']['users_per_s']} |")
    print("| popularity | " + " | ".join(f"{first['popularity'][k]:.4f}" for k in KS) + " | - | - |")


def cold_folder(data: Path, out: Path, share: float, seed: int, env: dict) -> set[str]:
    """Re-prepare `data` with a share of its test-target items held out of training: every occurrence of
    such an item but the users' last is removed. Returns their source ids."""
    import numpy as np
    import polars as pl

    marker = out / "cold-items.json"
    if marker.is_file() and (out / "data" / "manifest.json").is_file():
        return set(json.loads(marker.read_text()))
    items = pl.read_parquet(data / "items.parquet")
    inter = pl.read_parquet(data / "interactions.parquet").sort("user_id", "timestamp", maintain_order=True)
    source = dict(zip(items["item_id"].to_list(), items["source_id"].to_list()))
    seqs = inter.group_by("user_id", maintain_order=True).agg("item_id")
    last = sorted({s[-1] for s in seqs["item_id"].to_list()})
    rng = np.random.default_rng(seed)
    cold = set(rng.choice(last, size=max(1, int(share * len(last))), replace=False).tolist())
    rows = []
    for user, seq in zip(seqs["user_id"].to_list(), seqs["item_id"].to_list()):
        kept = [i for i in seq[:-1] if i not in cold] + [seq[-1]]
        if len(kept) >= 3:
            rows += [(f"u{user}", source[i], t) for t, i in enumerate(kept)]
    out.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows, schema=["user", "item", "timestamp"], orient="row").write_csv(out / "interactions.csv")
    cols = [c for c in ("title", "brand", "category", "price", "description") if c in items.columns]
    table = items.select(pl.col("source_id").alias("item"), *cols)
    images = "image" in items.columns and items["image"].drop_nulls().len() > 0
    if images:
        table = table.with_columns(items["image"].alias("image_path"))
    table.write_parquet(out / "items.parquet")
    run(unimp_cmd() + ["prepare", "--source", "files", "--interactions", str(out / "interactions.csv"),
                       "--items", str(out / "items.parquet"), "--domain", "cold", "--out", str(out / "data"),
                       "--protocol", "leave-one-out", "--user-core", "3", "--item-core", "1"]
        + (["--images-dir", str(data)] if images else ["--no-images"]), env)
    cold_ids = sorted(source[i] for i in cold)
    marker.write_text(json.dumps(cold_ids))
    return set(cold_ids)


def cold(args) -> None:
    import numpy as np
    import polars as pl

    from unimp_core.evaluation.metrics import ranking_metrics

    env = dict(os.environ)
    work = args.work.resolve()
    cold_ids = cold_folder(args.data.resolve(), work / "cold", args.cold_share, args.seed, env)
    data = with_codes(work / "cold" / "data", work, args.synthetic_codes, env, args.source)
    items = pl.read_parquet(data / "items.parquet")
    cold_items = set(items.filter(pl.col("source_id").is_in(sorted(cold_ids)))["item_id"].to_list())
    results = train_and_evaluate(data, work / "cold" / "runs", args, env)
    print(f"\ncold start: {len(cold_items)} items seen only as test targets ({args.cold_share:.0%} of the users' "
          f"last items); rec, test split, whole catalogue, history items excluded"
          + ("  (SYNTHETIC random codes: plumbing check only)" if args.synthetic_codes else ""))
    print("| item ids | cold instances | cold HR@10 | cold NDCG@10 | all HR@10 | all NDCG@10 |")
    print("|---|---|---|---|---|---|")
    for kind, r in results.items():
        records = [json.loads(line) for line in (r["folder"] / "predictions" / "rec.jsonl").read_text().splitlines()]
        ranks = np.array([rec["rank"] for rec in records if rec["target"] in cold_items], dtype=np.int64)
        m = ranking_metrics(ranks, [10]) if len(ranks) else {"HR@10": float("nan"), "NDCG@10": float("nan")}
        print(f"| {kind} | {len(ranks)} | {m['HR@10']:.4f} | {m['NDCG@10']:.4f} | "
              f"{r['rec']['metrics']['HR@10']:.4f} | {r['rec']['metrics']['NDCG@10']:.4f} |")


# ---------------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["memory", "step", "rank", "quality", "cold"])
    ap.add_argument("--items", type=int, default=1_000_000, help="memory, step: catalogue size")
    ap.add_argument("--steps", type=int, default=10, help="step: measured steps (after 2 warm-up steps)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--history-len", type=int, default=10, help="step, rank: history items per prompt")
    ap.add_argument("--max-tokens", type=int, default=512, help="rank: longest prompt")
    ap.add_argument("--users", type=int, default=256, help="rank: test users timed")
    ap.add_argument("--only", choices=["atomic", "semantic"], help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help="rank, quality, cold: a dataset folder (leave-one-out for cold)")
    ap.add_argument("--work", type=Path, default=Path("bench-item-ids"))
    ap.add_argument("--config", type=Path, default=None, help="quality, cold: the training recipe (both kinds)")
    ap.add_argument("--epochs", type=float, default=None)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--synthetic-codes", action="store_true", help="random codes in a copy (plumbing check only)")
    ap.add_argument("--select-users", type=int, default=None,
                    help="quality, cold: valid users ranked at each validation (semantic ranking is the slower)")
    ap.add_argument("--limit", type=int, default=None,
                    help="quality, cold: evaluate the first N test instances only (the same N users for both kinds)")
    ap.add_argument("--cold-share", type=float, default=0.05)
    ap.add_argument("--source", nargs="+", default=None,
                    help="quality, cold: tokenize-items --source for a folder without codes (e.g. text image)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.mode in ("rank", "quality", "cold") and args.data is None:
        ap.error(f"{args.mode} needs --data")
    if args.mode == "step" and args.only:
        print(json.dumps(step_child(args.only, args)))
        return
    {"memory": memory, "step": step, "rank": rank, "quality": quality, "cold": cold}[args.mode](args)


if __name__ == "__main__":
    main()
