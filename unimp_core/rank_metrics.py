"""Rank metrics: the one table that evaluation, checkpoint selection, the terminal, the report and the CLI read.

Each metric scores one user's target from its 0-based rank among the candidates (`ABSENT`: not in a
truncated top-k list) at a cut-off k, and is reported as `NAME@k` for every cut-off of the evaluation
(`--k`, default `DEFAULT_KS`). For one relevant item:

    HR@k   = 1                   if rank < k else 0
    NDCG@k = 1 / log2(rank + 2)  if rank < k else 0   (the ideal DCG of one relevant item is 1)
    MRR@k  = 1 / (rank + 1)      if rank < k else 0

Adding a metric is one `RankMetric` in `METRICS` (or `register(...)` at run time, as a test does):
evaluate then reports it, `--select-metric name@k` accepts it, and the tables show it. It sits below
the specs, which check a metric name against it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable

from .errors import UnimpError

if TYPE_CHECKING:
    import numpy as np

ABSENT = -1  # rank of a target missing from a truncated top-k list
DEFAULT_KS: tuple[int, ...] = (1, 3, 5, 10, 20)


@dataclass(frozen=True)
class RankMetric:
    """One rank metric.

    name: its spelling in metrics.json (`NAME@k`); matched case-insensitively on the command line.
    value: (ranks (B,) int64 with `ABSENT` for a missing target, k) -> (B,) float64 per-user values.
    higher_is_better: which way checkpoint selection goes.
    brief: shown in the compact tables (evaluate --compare, by target popularity, the report's bars).
    """

    name: str
    value: Callable[[np.ndarray, int], np.ndarray]
    higher_is_better: bool = True
    brief: bool = True


# numpy is imported inside the functions: the specs read this table and `unimp --help` stays instant.

def hit(ranks: np.ndarray, k: int) -> np.ndarray:
    """(B,) bool: the target is retrieved within the first k."""
    return (ranks >= 0) & (ranks < k)


def _safe(ranks: np.ndarray) -> np.ndarray:
    return ranks.clip(min=0)  # keeps log2/division finite for absent targets; `hit` masks them out


def hit_rate(ranks: np.ndarray, k: int) -> np.ndarray:
    return hit(ranks, k).astype("float64")


def ndcg(ranks: np.ndarray, k: int) -> np.ndarray:
    import numpy as np

    return np.where(hit(ranks, k), 1.0 / np.log2(_safe(ranks) + 2.0), 0.0)


def mrr(ranks: np.ndarray, k: int) -> np.ndarray:
    import numpy as np

    return np.where(hit(ranks, k), 1.0 / (_safe(ranks) + 1.0), 0.0)


METRICS: dict[str, RankMetric] = {m.name: m for m in (
    RankMetric("HR", hit_rate),
    RankMetric("NDCG", ndcg),
    RankMetric("MRR", mrr, brief=False),
)}
BUILTIN_METRICS: tuple[str, ...] = tuple(METRICS)

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def register(metric: RankMetric) -> RankMetric:
    """Make `metric` known to evaluate, selection, the terminal and the report."""
    if not _NAME.match(metric.name):
        raise UnimpError(f"rank metric name {metric.name!r}: letters, digits and _ only, starting with a letter")
    known = {name.upper(): m for name, m in METRICS.items()}
    if metric.name.upper() in known and known[metric.name.upper()] is not metric:
        raise UnimpError(f"rank metric {metric.name!r} is already registered")
    METRICS[metric.name] = metric
    return metric


def unregister(name: str) -> None:
    """Forget a registered metric (built-in ones stay)."""
    if name in BUILTIN_METRICS:
        raise UnimpError(f"{name!r} is a built-in rank metric")
    METRICS.pop(name, None)


def names(ks: Iterable[int]) -> list[str]:
    """`NAME@k` for every metric (table order) and every cut-off (in the order given)."""
    ks = list(ks)
    return [f"{m}@{k}" for m in METRICS for k in ks]


def metric_name(name: str) -> str:
    """`ndcg@10` -> `NDCG@10` (the evaluation's spelling); anything else is a one-line error."""
    kind, at, k = name.strip().partition("@")
    by_upper = {m.upper(): m for m in METRICS}
    if not at or kind.upper() not in by_upper or not re.fullmatch(r"[1-9][0-9]*", k):
        spelled = [f"{m.lower()}@K" for m in METRICS]
        choices = ", ".join(spelled[:-1]) + f" or {spelled[-1]}" if len(spelled) > 1 else spelled[0]
        raise UnimpError(f"selection metric {name!r}: use {choices} (e.g. ndcg@10)")
    return f"{by_upper[kind.upper()]}@{int(k)}"


def get(name: str) -> RankMetric:
    """The metric of `NAME@k` (or of `NAME`)."""
    kind = name.partition("@")[0]
    if kind not in METRICS:
        raise UnimpError(f"unknown rank metric {name!r} (known: {', '.join(METRICS)})")
    return METRICS[kind]


def is_rank_metric(name: str) -> bool:
    kind, at, k = name.partition("@")
    return bool(at) and kind in METRICS and k.isdigit()


def sort_key(name: str) -> tuple[int, int]:
    """Table order: metric by metric (as `METRICS` lists them), each by k ascending; others last."""
    kind, _, k = name.partition("@")
    order = list(METRICS)
    return (order.index(kind) if kind in METRICS else len(order), int(k) if k.isdigit() else 0)


def brief(names: Iterable[str]) -> list[str]:
    """The names (in their order) whose metric is shown in the compact tables."""
    return [n for n in names if is_rank_metric(n) and METRICS[n.partition("@")[0]].brief]
