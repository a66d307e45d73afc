"""The SASRec model family: the built-in sequential-recommendation yardstick (item ids only, task rec).

The family interface is described in `unimp_core.model.families` (SASRec has no prompts: no `inputs`,
`collator`, `forward` or `decoder`); the network is `unimp_core.model.sasrec.net`
and its training loop `unimp_core.model.sasrec.recipe`. A SASRec run folder is an ordinary run folder
(train_spec.json, model.json, checkpoints/, best/, final/, metrics.jsonl) without a tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from ... import run_folder as RF
from ...data.store import Dataset
from ...progress import Progress
from ...specs.train import TrainSpec
from .net import SASRec, history_batch
from .spec import SASRecSpec

NAME = "sasrec"
TASKS = ("rec",)  # what evaluate and generate may ask of a SASRec run


@dataclass
class SASRecBundle:
    model: SASRec
    n_items: int
    spec: SASRecSpec


def _model(spec: SASRecSpec, n_items: int) -> SASRec:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.init_seed)
        return SASRec(n_items, hidden=spec.hidden, blocks=spec.blocks, heads=spec.heads, max_len=spec.max_len,
                      dropout=spec.dropout)


def build(spec: TrainSpec, ds: Dataset, progress: Progress) -> SASRecBundle:
    n_items = ds.items.height
    model = _model(spec.model, n_items)
    progress.log(f"SASRec: {sum(p.numel() for p in model.parameters()):,} parameters, {n_items:,} items, "
                 f"{spec.model.loss} loss")
    return SASRecBundle(model, n_items, spec.model)


def save(bundle: SASRecBundle, run_dir: Path) -> None:
    RF.write_model_meta(run_dir, NAME, bundle.spec.model_dump(mode="json"), bundle.n_items)


def load(run_dir: Path, meta: dict[str, Any], progress: Progress) -> SASRecBundle:
    spec = SASRecSpec.model_validate(meta["spec"])
    return SASRecBundle(_model(spec, meta["n_items"]), meta["n_items"], spec)


def history_window(bundle: SASRecBundle) -> int:
    """SASRec reads its last max_len items, not a prompt."""
    return bundle.model.max_len


@torch.no_grad()
def rank_scores(setup, model: SASRec, samples: Sequence, *, device, max_tokens: int | None = None,
                precision: str = "fp32") -> torch.Tensor:
    """(B, N) scores of every catalogue item after each sample's whole history (its last max_len items)."""
    histories = [s.meta["history"] for s in samples]
    return model.last_scores(history_batch(histories, model.max_len).to(device)).float().cpu()


def recipe(spec: TrainSpec, progress: Progress | None = None) -> Path:
    """Train (or resume) the run `spec` describes; returns the run folder."""
    from .recipe import run_train_sasrec

    return run_train_sasrec(spec, progress)
