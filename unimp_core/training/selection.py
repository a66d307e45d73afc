"""Validation-based model selection, as recommender libraries do it (RecBole's `valid_metric`, `stopping_step`).

Every `eval_every` steps a training loop ranks the whole catalogue for the valid split's stored `rec`
instances (`rank_valid`, through the family's `rank_scores`); the checkpoint with the best value of the
chosen metric is kept as `RUN/best/`, and training stops after `patience` evaluations without improvement
(`record_validation`). Every recipe calls these two; `Selection` is the bookkeeping, no torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .. import rank_metrics as RM
from ..errors import UnimpError
from ..evaluation import metrics as M
from ..evaluation.scoring import ranking_batches
from ..rank_metrics import metric_name

__all__ = ["Selection", "metric_name"]


@dataclass
class Selection:
    """The best validation value so far, where it was reached, and how many evaluations since.

    Which way is better is the metric's (`unimp_core.rank_metrics`). Saved with each checkpoint (`state`),
    so a resumed run keeps its best and its patience count.
    """

    metric: str = "NDCG@10"
    patience: int | None = None
    best: float | None = None
    best_step: int | None = None
    since_best: int = 0

    def update(self, step: int, metrics: dict[str, float]) -> bool:
        """Record one validation; True when it is a new best (strictly better than every earlier one)."""
        if self.metric not in metrics:
            raise UnimpError(f"selection metric {self.metric} was not measured (have {', '.join(metrics)})")
        value = float(metrics[self.metric])
        higher = RM.get(self.metric).higher_is_better
        if self.best is None or (value > self.best if higher else value < self.best):
            self.best, self.best_step, self.since_best = value, step, 0
            return True
        self.since_best += 1
        return False

    @property
    def stop(self) -> bool:
        """Early stopping: `patience` evaluations in a row did not improve on the best."""
        return self.patience is not None and self.since_best >= self.patience

    def state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any] | None, metric: str, patience: int | None) -> "Selection":
        """A resumed run's selection (metric and patience from the spec; the record from the checkpoint)."""
        out = cls(metric=metric, patience=patience)
        if state and state.get("metric") == metric:
            out.best, out.best_step, out.since_best = state["best"], state["best_step"], int(state["since_best"])
        return out

    def best_state(self, epoch: float, users: int) -> dict[str, Any]:
        """best/'s state.json: where the best was reached and how it was measured."""
        return {"step": self.best_step, "epoch": epoch, "metric": self.metric, "value": self.best, "split": "valid",
                "users": users, "exclude_history": True}


def rank_valid(setup, model, samples: Sequence, metric: str, *, device, batch_size: int = 512,
               max_tokens: int | None = None, precision: str = "fp32", rank: int = 0, world: int = 1,
               gather: Callable[[list], list] | None = None) -> dict[str, float]:
    """HR/NDCG/MRR@k (k: 5, 10, 20 and `metric`'s) of rec `samples` over the whole catalogue, each user's
    history items excluded, scored by the family's `rank_scores`. Leaves `model` in eval mode.

    With several processes each scores every world-th sample and `gather` (accelerate's gather_object)
    collects the ranks, so every process returns the same metrics.
    """
    import torch

    ks = sorted({5, 10, 20, int(metric.split("@")[1])})
    model.eval()
    ranks: list[int] = []
    with torch.no_grad():
        for chunk in ranking_batches(range(rank, len(samples), world), samples, batch_size):
            group = [samples[i] for i in chunk]
            scores = setup.family.rank_scores(setup, model, group, device=device, max_tokens=max_tokens,
                                              precision=precision)  # (B, N)
            ranks += M.target_ranks(scores.numpy(), [s.meta["target"] for s in group],
                                    [s.meta["history"] for s in group]).tolist()
    if gather is not None:
        ranks = gather(ranks)
    return M.ranking_metrics(np.asarray(ranks, dtype=np.int64), ks)


def record_validation(sel: Selection, step: int, metrics: dict[str, float], *, users: int,
                      write_line: Callable[[dict[str, Any]], None], save_best: Callable[[], None],
                      log: Callable[[str], None]) -> bool:
    """One validation's bookkeeping, the same in every recipe: the metrics line (`write_line` adds step and
    epoch), the log line, best/ on a new best (`save_best`, which writes `sel.best_state`), and the early
    stop. Returns True when training should stop."""
    better = sel.update(step, metrics)
    write_line({"valid_rank": metrics, "valid_users": users, "best": sel.best, "best_step": sel.best_step})
    log(f"step {step}: valid {sel.metric} {metrics[sel.metric]:.4f} (best {sel.best:.4f} at step {sel.best_step})")
    if better:
        save_best()
    if sel.stop:
        log(f"early stop at step {step}: {sel.since_best} validations without a better {sel.metric}")
    return sel.stop
