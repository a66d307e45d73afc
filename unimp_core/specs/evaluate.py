"""Specs for `unimp evaluate` and `unimp generate` (no torch import: `--dry-run` is instant)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ..rank_metrics import DEFAULT_KS
from ..task_names import DEFAULT_TASK, TaskName
from ..tokens import N_SLOTS
from .base import Spec

# The checkpoints a run folder holds (unimp_core.run_folder: BEST, FINAL, checkpoints/step-N).
CHECKPOINT_RE = re.compile(r"^(final|best|step-\d+)$")


def _check_checkpoint(value: str) -> str:
    if not CHECKPOINT_RE.match(value):
        raise ValueError(f"{value!r} is not a checkpoint name (use best, final or step-N)")
    return value


class EvaluateSpec(Spec):
    """Everything `unimp evaluate` needs; saved inside the evaluation's metrics.json."""

    run: Path = Field(description="Run folder written by `unimp train` (its model, tokenizer and weights).")
    checkpoint: str | None = Field(
        default=None, description="Weights to evaluate: best (the best validation metric during training), final, or step-N "
        "(a saved checkpoint). Default: best when the run kept one, else final.",
    )
    split: Literal["valid", "test"] = Field(default="test", description="Evaluation split of the dataset folder's stored instances.")
    tasks: list[TaskName] = Field(
        default_factory=list, description="Tasks to evaluate (default: the tasks the run was trained on)."
    )
    data: Path | None = Field(default=None, description="Dataset folder (default: the one the run was trained on).")
    compare: list[Path] = Field(
        default_factory=list,
        description="More runs of the same dataset to evaluate under the same protocol and show in one table with "
        "--run and popularity (tasks rec, search).",
    )
    batch_size: int = Field(default=32, ge=1, description="Users per forward pass (per process).")
    ks: list[int] = Field(default_factory=lambda: list(DEFAULT_KS), description="Cut-offs k of HR@k, NDCG@k and MRR@k.")
    decode: Literal["rank", "beam", "free"] = Field(
        default="rank",
        description="rec/search: rank (exact: one forward pass, logits of every item token; semantic ids: every "
        "item's code-path log-probability), beam (beam search constrained to valid item ids) or free "
        "(unconstrained beam search; reports the share of invalid outputs).",
    )
    num_beams: int = Field(default=10, ge=1, le=100, description="Beams (and returned items) of --decode beam/free.")
    exclude_history: bool = Field(
        default=False, description="Remove the user's history items from the ranking (off by default, as the paper)."
    )
    text_beams: int = Field(default=1, ge=1, le=20, description="exp/img_sel/img_gen: beams of generation (1: greedy).")
    image_pairs: int = Field(default=8, ge=0, le=1000, description="img_gen: generated/true image pairs saved as PNG in the evaluation folder.")
    max_new_tokens: int = Field(default=48, ge=1, le=1024, description="exp: longest generated rating + explanation, in tokens.")
    rating_policy: Literal["exclude", "fill"] = Field(
        default="exclude",
        description="exp: outputs without a parsable rating are left out of RMSE/MAE (exclude) or scored as the "
        "training mean rating (fill); their count is always reported.",
    )
    save_top: int = Field(default=20, ge=1, le=1000, description="Items with scores kept per user in predictions/<task>.jsonl.")
    limit: int | None = Field(default=None, ge=1, description="Evaluate only the first N instances of each task (quick checks).")
    history_len: int | None = Field(default=None, ge=1, le=50, description="History items per prompt (default: the run's).")
    max_tokens: int | None = Field(default=None, ge=32, description="Longest prompt in tokens (default: the run's).")
    precision: Literal["fp32", "bf16", "fp16"] = Field(default="fp32", description="Autocast precision of the model (GPU).")

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint_name(cls, value: str | None) -> str | None:
        return None if value is None else _check_checkpoint(value)

    @field_validator("ks")
    @classmethod
    def _cutoffs(cls, value: list[int]) -> list[int]:
        if not value or min(value) < 1:
            raise ValueError(f"cut-offs must be positive integers (got {value})")
        return sorted(set(value))

    @field_validator("tasks")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


class GenerateSpec(Spec):
    """Everything `unimp generate` needs: whose history, which task, what to print or write."""

    run: Path = Field(description="Run folder written by `unimp train`.")
    checkpoint: str | None = Field(
        default=None, description="Weights to use: best, final, or step-N (a saved checkpoint). Default: best when the "
        "run kept one, else final.",
    )
    data: Path | None = Field(default=None, description="Dataset folder (default: the one the run was trained on).")
    task: TaskName = Field(default=DEFAULT_TASK, description="rec (next items), search (items for --query), exp (rating and "
                           "explanation for --item), img_sel (pick among --candidates), img_gen (an image for --query).")
    user: str | None = Field(default=None, description="User: internal user id or original user key (id:N / key:K to be explicit).")
    history: list[str] = Field(
        default_factory=list,
        description="A history for a user the model has never seen: item ids or source ids, oldest first "
        "(id:N / src:S to be explicit).",
    )
    list_users: bool = Field(default=False, description="List the dataset's users (id, key, split, history length) and exit.")
    query: str | None = Field(default=None, description="search / img_gen: the query text.")
    out: Path | None = Field(default=None, description="img_gen: write the generated image here (PNG).")
    item: str | None = Field(default=None, description="exp: the item (id or source id) to rate and explain.")
    candidates: list[str] = Field(default_factory=list, description=f"img_sel: 2 to {N_SLOTS} candidate items (ids or source ids).")
    k: int = Field(default=10, ge=1, le=1000, description="rec/search: how many items to recommend.")
    exclude_history: bool = Field(default=True, description="rec/search: leave the user's history items out of "
                                  "the recommendations (the default; --keep-history lists them too).")
    num_beams: int = Field(default=1, ge=1, le=20, description="exp/img_sel/img_gen: beams of generation (1: greedy).")
    max_new_tokens: int = Field(default=48, ge=1, le=1024, description="exp/img_sel: longest generated answer, in tokens.")
    history_len: int | None = Field(default=None, ge=1, le=50, description="History items in the prompt (default: the run's).")
    max_tokens: int | None = Field(default=None, ge=32, description="Longest prompt in tokens (default: the run's).")
    html: Path | None = Field(default=None, description="Also write a self-contained HTML page (images embedded) to this file.")
    force: bool = Field(default=False, description="Replace an existing --html / --out file (without it, an "
                        "existing file is refused before any work).")

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint_name(cls, value: str | None) -> str | None:
        return None if value is None else _check_checkpoint(value)

    @model_validator(mode="after")
    def _check(self) -> "GenerateSpec":
        if self.list_users:
            return self
        if (self.user is None) == (not self.history):
            raise ValueError("give either --user (a known user) or --history (items of an unseen user), not both or none")
        # which task needs or takes --query, --item, ... is the task's (generation.check_options)
        if self.candidates and not 2 <= len(self.candidates) <= N_SLOTS:
            raise ValueError(f"candidates: give 2 to {N_SLOTS} items (got {len(self.candidates)})")
        return self

