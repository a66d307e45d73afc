"""A small sample dataset and a briefly trained tiny run, built once per test session and shared by
the evaluation, generation and CLI tests (cached under pytest's session temporary folder)."""

from __future__ import annotations

from pathlib import Path

N_USERS, N_ITEMS = 80, 40


def sample_dataset(base: Path, users: int = N_USERS, items: int = N_ITEMS) -> Path:
    """The synthetic sample shop (with images) at `base/ds-<users>-<items>`, written once."""
    from unimp_core.prepare import run_prepare
    from unimp_core.data.store import is_complete
    from unimp_core.specs.data import PrepareSpec

    out = base / f"ds-{users}-{items}"
    if not is_complete(out):
        run_prepare(PrepareSpec(datasets=["sample"], out=out, cache_dir=base / "cache", sample_users=users,
                                sample_items=items))
    return out


def trained_run(tmp_path_factory, steps: int = 6) -> Path:
    """A tiny run trained for a few steps on all four tasks (its final/ weights are not the fresh ones)."""
    from unimp_core.specs.train import TrainSpec
    from unimp_core.training.train import run_train

    base = tmp_path_factory.getbasetemp() / "unimp-eval"
    base.mkdir(exist_ok=True)
    run = base / f"run-{steps}"
    if not (run / "final").is_dir():
        data = sample_dataset(base)
        # no rank validation: these tests read final/ (tests/training cover best/)
        run_train(TrainSpec(data={"path": data, "valid_users": 0},
                            run={"out": run, "max_steps": steps, "save_every": 3, "select_users": 0},
                            optim={"lr": 3e-3, "batch_size": 8}))
    return run
