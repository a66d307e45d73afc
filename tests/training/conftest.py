"""Shared fixtures for the training tests: one small prepared sample dataset, and specs for a model
smaller than `tiny` (a step takes milliseconds) so whole runs fit in the default suite."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from unimp_core.specs.base import deep_merge

# Smaller than the tiny preset's defaults; the same code path.
TEST_MODEL = {"tiny": {"vocab_size": 512, "hidden_size": 32, "heads": 2, "layers": 1, "vision_width": 32,
                       "vision_layers": 1, "vision_head_width": 16, "image_size": 16, "patch_size": 8,
                       "perceiver_latents": 4, "perceiver_dim_head": 16}}


def spec_dict(data_dir: Path, out_dir: Path, **sections) -> dict:
    """A TrainSpec as a dict: the test model, short prompts, a few steps; `sections` override it
    (e.g. optim={"lr": 1e-3}, run={"max_steps": 4})."""
    base = {
        "model": copy.deepcopy(TEST_MODEL),
        "data": {"path": str(data_dir), "tasks": ["rec", "exp"], "history_len": 3, "max_tokens": 256, "valid_users": 4},
        "optim": {"batch_size": 4, "lr": 1e-3, "warmup_ratio": 0.0},
        "run": {"out": str(out_dir), "max_steps": 4, "save_every": 2, "eval_every": 2, "log_every": 1, "seed": 7},
    }
    return deep_merge(base, sections)


def make_spec(data_dir: Path, out_dir: Path, **sections):
    from unimp_core.specs.train import TrainSpec

    return TrainSpec.model_validate(spec_dict(data_dir, out_dir, **sections))


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory) -> Path:
    """A prepared sample shop: 80 users, 40 items (with images), every task's eval instances."""
    from unimp_core.prepare import run_prepare
    from unimp_core.specs.data import PrepareSpec

    root = tmp_path_factory.mktemp("train-data")
    return run_prepare(PrepareSpec(datasets=["sample"], out=root / "sample", cache_dir=root / "cache",
                                   sample_users=80, sample_items=40, user_core=5, item_core=3))


def read_metrics(run: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def open_gates(model, value: float = 1.0) -> None:
    """Cross-attention gates start at 0 (images have no effect); open them."""
    for layer in model.lang_encoder.gated_cross_attn_layers:
        if layer is not None:
            layer.attn_gate.data.fill_(value)
            layer.ff_gate.data.fill_(value)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every training test runs torch on one thread (tests/conftest.py: one_thread)."""
    yield


def subprocess_env(**extra: str) -> dict:
    """The environment for `unimp` child processes: this checkout importable, one thread each."""
    import os

    root = Path(__file__).resolve().parents[2]
    return {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1", **extra}


# A driver for launched runs: `unimp <args>` in each process, and after the final save every process
# dumps its own trainable weights (and the group size it saw) to <out>/rank-<i>.pt.
RANK_DUMP_DRIVER = """
import sys
import torch
from unimp_core.model.openflamingo import recipe as train

real_save_final = train._save_final

def save_final(run):
    real_save_final(run)
    net = run.accelerator.unwrap_model(run.model)
    weights = {n: p.detach().cpu().clone() for n, p in net.named_parameters() if p.requires_grad}
    torch.save({"world": run.accelerator.num_processes, "weights": weights},
               run.out / f"rank-{run.accelerator.process_index}.pt")

train._save_final = save_final
from unimp_cli.app import main
main(sys.argv[1:])
"""


def write_config(spec, path: Path) -> Path:
    """A spec file for `unimp train --config` (without run.out: the command line gives it)."""
    import json

    import yaml

    path.write_text(yaml.safe_dump(json.loads(spec.model_dump_json(exclude={"run": {"out"}}))))
    return path
