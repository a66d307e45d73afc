"""Benchmark (not a test): `rec` evaluation speed, exact batched ranking vs the paper's code's evaluation.

    unimp's way   batches of users (left padding), one forward pass, logits of every item token,
                  full ranking (what `unimp evaluate` runs, collation included)
    paper-code way    one user at a time, `generate` with 10 beams, 10 returned sequences, 1 new token

Both run on the same tiny model and the same users; the script prints users/s of each, the speed-up,
and whether the top-10 lists agree (the paper's code's unconstrained beams may spend places on tokens that are
not items; among the items it returns, the order must be ours). With `--run` an existing run is used,
otherwise the sample shop is prepared and a tiny model trained briefly in a temporary folder.

    .venv/bin/python benchmarks/bench_evaluate.py [--run RUN] [--users 80] [--batch-size 32] [--steps 30] [--repeats 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _trained_run(base: Path, steps: int) -> Path:
    from unimp_core.prepare import run_prepare
    from unimp_core.specs.data import PrepareSpec
    from unimp_core.specs.train import TrainSpec
    from unimp_core.training.train import run_train

    data = run_prepare(PrepareSpec(datasets=["sample"], out=base / "sample", cache_dir=base / "cache"))
    return run_train(TrainSpec(data={"path": data, "valid_users": 0},
                               run={"out": base / "run", "max_steps": steps, "save_every": 10**6},
                               optim={"lr": 3e-3}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, default=None, help="an existing run folder (default: train a tiny one)")
    ap.add_argument("--users", type=int, default=80, help="rec instances (test, then valid)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=30, help="training steps of the tiny run made without --run")
    ap.add_argument("--repeats", type=int, default=2, help="timings are the best of this many runs")
    args = ap.parse_args()

    from unimp_core.model.openflamingo import decode as R
    from unimp_core.evaluation.scoring import EvalContext, ranking_records
    from unimp_core.model.setup import load_run
    from unimp_core.specs.evaluate import EvaluateSpec
    from unimp_core.tasks import build_eval_samples

    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or _trained_run(Path(tmp), args.steps)
        loaded = load_run(run)
        samples = (build_eval_samples(loaded.dataset, "rec", "test", loaded.history_len, loaded.ctx)
                   + build_eval_samples(loaded.dataset, "rec", "valid", loaded.history_len, loaded.ctx))[: args.users]
        n = len(samples)
        spec = EvaluateSpec(run=run, batch_size=args.batch_size, save_top=10)
        ids, model, collate = loaded.bundle.ids, loaded.bundle.model, loaded.collator()
        token_to_item = {int(t): i for i, t in enumerate(ids.items.tolist())}
        print(f"{n} users, {loaded.bundle.n_items} items, model {loaded.bundle.spec.preset} ({loaded.bundle.total:,} parameters), "
              f"torch threads {torch.get_num_threads()}")

        # The machine may be shared: every timing is the best of --repeats runs.
        ev = EvalContext(loaded, spec, Path(tmp), np.zeros(loaded.bundle.n_items), [])
        ranking_records(ev, samples, list(range(min(n, args.batch_size))), lambda *_: None)  # warm-up
        fast = float("inf")
        for _ in range(args.repeats):
            t = time.perf_counter()
            ours = ranking_records(ev, samples, list(range(n)), lambda *_: None)
            fast = min(fast, time.perf_counter() - t)

        def seed_style(sample, constrained: bool = False) -> list[int | None]:
            batch = collate([sample])
            kwargs = {}
            if constrained:
                trie = R.TokenTrie.build([[t] for t in ids.items.tolist()])
                kwargs["allowed"] = R.prefix_constraint(trie, batch["input_ids"].shape[1], ids.eoc)
            seqs, _ = R.generate(model, batch, max_new_tokens=1, eos_id=ids.eoc, pad_id=ids.pad, num_beams=10,
                                 num_return=10, **kwargs)
            return [token_to_item.get(int(tok)) for tok in seqs[:, 0].tolist()]

        seed_style(samples[0])  # warm-up
        per_user = [float("inf")] * n
        for _ in range(args.repeats):
            seed = []
            for k, s in enumerate(samples):
                t = time.perf_counter()
                seed.append(seed_style(s))
                per_user[k] = min(per_user[k], time.perf_counter() - t)
        slow = sum(per_user)
        constrained = [seed_style(s, constrained=True) for s in samples]

        top10 = [[item for item, _ in r["top"][:10]] for r in ours]
        exact = sum(c == o for c, o in zip(constrained, top10))
        agree = sum([i for i in s if i is not None] == o[: sum(i is not None for i in s)] for s, o in zip(seed, top10))
        same_set = sum(set(i for i in s if i is not None) <= set(o) for s, o in zip(seed, top10))
        invalid = sum(i is None for s in seed for i in s)
        print(f"unimp (batch {args.batch_size}, one forward pass, full ranking): {fast:.2f} s, {n / fast:.1f} users/s")
        print(f"seed-style (batch 1, generate 10 beams x 10 sequences, 1 token): {slow:.2f} s, {n / slow:.1f} users/s")
        print(f"speed-up: {slow / fast:.1f}x")
        print(f"constrained 10-beam top-10 == unimp top-10 (same order): {exact}/{n} users")
        print(f"seed-style items in unimp's order: {agree}/{n} users; within unimp's top-10: {same_set}/{n}; "
              f"non-item outputs: {invalid}/{10 * n} ({invalid / (10 * n):.1%})")


if __name__ == "__main__":
    main()
