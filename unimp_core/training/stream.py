"""The training data stream: its epochs, how many optimizer steps they make, and the validation shares.

The stream is a pure function of (seed, epoch) (unimp_core.training.samples); only the loop chooses
the epoch, so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import math
from typing import Callable

from torch.utils.data import Dataset as TorchDataset

from ..data.store import Dataset
from ..progress import Progress
from ..specs.train import TrainSpec
from ..tasks import build_eval_samples, instance_table, run_history_lengths
from .samples import TrainingSamples


class EpochStream(TorchDataset):
    """The training stream as the DataLoader sees it; only the loop switches its epoch.

    accelerate calls `set_epoch(<its own pass count>)` on a dataset that has one, which is wrong for a
    resumed run (its loader starts counting at 0 mid-run); this wrapper has none.
    """

    def __init__(self, samples: TrainingSamples) -> None:
        self.samples = samples

    def use_epoch(self, epoch: int) -> None:
        if self.samples.epoch != epoch:
            self.samples.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        return self.samples[index]


def steps_per_epoch(n_samples: int, batch_size: int, world: int, grad_accum: int) -> int:
    """Optimizer steps in one pass: accelerate gives every process ceil(n / (batch * world)) batches."""
    batches = math.ceil(n_samples / (batch_size * world))
    return max(1, math.ceil(batches / grad_accum))


def planned_steps(spec: TrainSpec, epoch_size: Callable[[int], int], world: int) -> int:
    """Total optimizer steps: `max_steps`, or the steps of `epochs` passes (a fractional last pass
    counts its share); `epoch_size(e)` is the number of samples of epoch e (the curriculum grows)."""
    if spec.run.max_steps is not None:
        return spec.run.max_steps

    def per(e: int) -> int:
        return steps_per_epoch(epoch_size(e), spec.optim.batch_size, world, spec.optim.grad_accum)

    full, frac = int(spec.run.epochs), spec.run.epochs - int(spec.run.epochs)
    total = sum(per(e) for e in range(full)) + (round(frac * per(full)) if frac > 0 else 0)
    return max(1, total)


def epoch_sizes(samples: TrainingSamples, n_epochs: int) -> Callable[[int], int]:
    if not samples.curriculum:
        size = len(samples)
        return lambda e: size
    current = samples.epoch
    sizes = []
    for e in range(n_epochs + 1):
        samples.set_epoch(e)
        sizes.append(len(samples))
    samples.set_epoch(current)
    return lambda e: sizes[min(e, len(sizes) - 1)]


def validation_samples(spec: TrainSpec, ds: Dataset, rank: int = 0, world: int = 1,
                       progress: Progress | None = None, ctx=None) -> dict[str, list]:
    """This process's share of the stored validation instances per task (answers appended); `ctx`: the
    run's TaskContext (default: the dataset's, atomic item ids)."""
    out = {}
    if spec.data.valid_users == 0:
        return out
    lengths = run_history_lengths(spec.data, spec.data.tasks)
    for task in spec.data.tasks:
        if instance_table(task) not in ds.instances:
            (progress or Progress()).log(f"no eval/{instance_table(task)}.parquet in {ds.root}: "
                                         f"no validation loss for {task}")
            continue
        ev = build_eval_samples(ds, task, "valid", lengths, ctx)[: spec.data.valid_users]
        if ev:
            out[task] = [s.with_answer() for s in ev[rank::world]]
    return out
