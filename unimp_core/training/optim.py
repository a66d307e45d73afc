"""AdamW with weight-decay groups, and the LambdaLR that follows `unimp_core.schedule`.

By default weight decay applies only to the gated cross-attention layers' matrices (the paper's code's
rule: names containing "gated_cross_attn", minus biases, norms and the tanh gates); the Perceiver, the
new token embeddings and everything else train without decay. Scope "all" decays every matrix and
embedding, item rows included (the rows of tokens that never occur shrink towards zero): under a full
softmax the rows of rarely bought items grow longest, and decay holds every row only as far out as its
gradients push it (docs/benchmarks.md, "Seventh run").
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Iterable

import torch

from ..errors import UnimpError
from ..schedule import SCHEDULES, ScheduleKind, lr_at, warmup_steps

if TYPE_CHECKING:
    from ..specs.train import DecayScope

__all__ = ["SCHEDULES", "ScheduleKind", "build_optimizer", "build_scheduler", "decays", "lr_at", "param_groups",
           "warmup_steps"]


def decays(name: str, param: torch.Tensor, scope: DecayScope = "cross_attention") -> bool:
    """True for the weights that get weight decay: matrices and embeddings, of the gated cross-attention
    layers alone or (scope "all") of the whole model.

    Biases, norm scales and the scalar gates are all 1-D, so "2-D or more" excludes them whatever
    they are called (the paper's code's name test missed the LayerNorm inside the feed-forward, `ff.0`).
    """
    leaf = name.rsplit(".", 1)[-1]
    return ((scope == "all" or "gated_cross_attn" in name) and param.ndim >= 2 and "norm" not in name
            and leaf != "bias" and not leaf.endswith("gate"))


def param_groups(named_params: Iterable[tuple[str, torch.nn.Parameter]], weight_decay: float,
                 scope: DecayScope = "cross_attention") -> list[dict]:
    """Two AdamW groups over the trainable parameters: decayed (`decays`) and the rest."""
    with_wd, without_wd = [], []
    for name, p in named_params:
        if p.requires_grad:
            (with_wd if decays(name, p, scope) else without_wd).append(p)
    return [
        {"params": with_wd, "weight_decay": weight_decay},
        {"params": without_wd, "weight_decay": 0.0},
    ]


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float = 0.1, beta2: float = 0.999,
                    eps: float = 1e-8, decay_scope: DecayScope = "cross_attention") -> torch.optim.AdamW:
    """AdamW over `model`'s trainable parameters with the decay groups of `decay_scope`."""
    groups = param_groups(model.named_parameters(), weight_decay, decay_scope)
    if not any(g["params"] for g in groups):
        raise UnimpError("optimizer: the model has no trainable parameters")
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, beta2), eps=eps)


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float = 0.0,
                    kind: ScheduleKind = "constant") -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR following `lr_at` (a multiplier on each group's lr); its state_dict is resumable."""
    if total_steps < 1:
        raise UnimpError(f"schedule needs at least one step (got total_steps={total_steps})")
    if not 0.0 <= warmup_ratio < 1.0:
        raise UnimpError(f"warmup_ratio must be in [0, 1) (got {warmup_ratio})")
    lr_at(0, total_steps, 1.0, warmup_ratio, kind)  # validates `kind` now rather than at the first step
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, partial(lr_at, total_steps=total_steps, base_lr=1.0, warmup_ratio=warmup_ratio, kind=kind)
    )
