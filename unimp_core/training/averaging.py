"""An exponential moving average of the trained weights (Polyak averaging), which validation, best/ and
final/ read (`optim.average_epochs`).

At a constant learning rate under heavy dropout the weights keep wandering along the valley floor after the
valid metric has stopped rising; their recent average lies nearer its middle. The trained weights themselves
are untouched (the run follows the same path with or without the average), so a checkpoint keeps both:
`trainable.pt` (to go on training) and `average.pt` (this module's state).

Until `horizon` steps are done the average is the plain mean of every step's weights (step t weighs in at
1/t), so the starting weights do not linger in it; after that each step weighs in at 1/horizon.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Iterator

import torch

from ..errors import UnimpError


class WeightAverage:
    """The moving average of a module's trainable parameters over about `horizon` optimizer steps."""

    def __init__(self, model: torch.nn.Module, horizon: float) -> None:
        if horizon < 1:
            raise UnimpError(f"weight averaging needs a horizon of at least one step (got {horizon:g})")
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        # float32 whatever the weights are: a bf16 copy (DeepSpeed's) would round away a 1/horizon step
        self.average = [p.detach().float().clone() for p in self.params]
        self.horizon = horizon
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        """Fold the parameters in, after an optimizer step."""
        self.updates += 1
        weight = 1.0 / min(self.updates, self.horizon)
        torch._foreach_lerp_(self.average, [p.detach().float() for p in self.params], weight)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The averaged weights in the model for the duration (validation, saving), the trained ones after."""
        with torch.no_grad():
            trained = [p.detach().clone() for p in self.params]
            torch._foreach_copy_([p.data for p in self.params], self.average)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_([p.data for p in self.params], trained)

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "weights": {n: a.detach().cpu().clone() for n, a in zip(self.names, self.average)}}

    def load_state_dict(self, state: dict[str, Any], origin: str) -> None:
        weights = state["weights"]
        if sorted(weights) != sorted(self.names):
            raise UnimpError(f"{origin}: the averaged weights do not fit this model")
        with torch.no_grad():
            for n, a in zip(self.names, self.average):
                a.copy_(weights[n])
        self.updates = int(state["updates"])


def start_average(model: torch.nn.Module, epochs: float, steps_per_epoch: int, saved: dict[str, Any] | None = None,
                  origin: str = "") -> WeightAverage | None:
    """The run's average over `epochs` epochs (None when `epochs` is 0), continued from a checkpoint's `saved` one."""
    if epochs <= 0:
        return None
    average = WeightAverage(model, epochs * steps_per_epoch)
    if saved is not None:
        average.load_state_dict(saved, origin)
    return average


def averaged(average: WeightAverage | None) -> AbstractContextManager:
    """The weights validation, best/ and final/ read: the average's when the run keeps one."""
    return average.applied() if average is not None else nullcontext()
