"""Pure learning-rate schedules (no torch): the training loop's LambdaLR and the VQ codebook's loop both follow
`lr_at`."""

from __future__ import annotations

import math
from typing import Literal

from .errors import UnimpError

ScheduleKind = Literal["constant", "linear", "cosine"]
SCHEDULES = ("constant", "linear", "cosine")


def warmup_steps(total_steps: int, warmup_ratio: float) -> int:
    return int(warmup_ratio * total_steps)


def lr_at(step: int, total_steps: int, base_lr: float, warmup_ratio: float = 0.0,
          kind: ScheduleKind = "constant", floor: float = 0.0) -> float:
    """Learning rate before optimizer step `step` (0-based), as transformers' schedules with warmup.

    Warmup rises linearly from 0 over the first int(warmup_ratio * total_steps) steps; then
    constant keeps base_lr, linear decays to floor * base_lr at total_steps, cosine follows half a
    cosine down to floor * base_lr.
    """
    if kind not in SCHEDULES:
        raise UnimpError(f"unknown schedule {kind!r} (choose {', '.join(SCHEDULES)})")
    warm = warmup_steps(total_steps, warmup_ratio)
    if step < warm:
        return base_lr * step / warm
    if kind == "constant":
        return base_lr
    progress = min(1.0, (step - warm) / max(1, total_steps - warm))
    decay = 1.0 - progress if kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return base_lr * (floor + (1.0 - floor) * decay)
