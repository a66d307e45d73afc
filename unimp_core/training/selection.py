"""Validation-based model selection, as recommender libraries do it (RecBole's `valid_metric`, `stopping_step`).

Every `eval_every` steps a training loop ranks the whole catalogue for the valid split's stored `rec`
instances; the checkpoint with the best value of the chosen metric is kept as `RUN/best/`, and
training stops after `patience` evaluations without improvement. Pure bookkeeping here, no torch:
the loops measure, this decides.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .. import rank_metrics as RM
from ..errors import UnimpError
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
