"""torch Datasets of samples: a fixed list (evaluation), and the per-epoch training stream.

The training stream is a pure function of (seed, epoch): `set_epoch` rebuilds it, so a resumed
run reproduces the interrupted epoch and can skip to its data position.
"""

from __future__ import annotations

from typing import Sequence

from torch.utils.data import Dataset as TorchDataset

from ..data.store import Dataset
from ..tasks import Sample, TaskContext, build_training_samples, context, curriculum_mix


class SampleDataset(TorchDataset):
    """A fixed list of samples (e.g. `build_eval_samples(...)`)."""

    def __init__(self, samples: Sequence[Sample]) -> None:
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]


class TrainingSamples(TorchDataset):
    """The training stream of one epoch, rebuilt by `set_epoch`.

    With `curriculum`, epoch e trains `curriculum_mix(tasks, e, n_epochs)`: tasks join in the given
    order, the newest on all of its data and the earlier ones on a `replay` share.
    """

    def __init__(self, data: Dataset | TaskContext, tasks: Sequence[str], history_len: int = 5, seed: int = 0,
                 curriculum: bool = False, n_epochs: int = 1, replay: float = 0.25, epoch: int = 0,
                 group_batch: int = 0) -> None:
        self.ctx = context(data)
        self.group_batch = group_batch
        self.tasks = list(tasks)
        self.history_len = history_len
        self.seed = seed
        self.curriculum = curriculum
        self.n_epochs = n_epochs
        self.replay = replay
        self.set_epoch(epoch)

    def mix(self, epoch: int) -> dict[str, float]:
        """task -> share of its samples at `epoch`."""
        if self.curriculum:
            return curriculum_mix(self.tasks, epoch, self.n_epochs, self.replay)
        return {t: 1.0 for t in self.tasks}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        mix = self.mix(epoch)
        self.samples = build_training_samples(self.ctx, list(mix), self.history_len, self.seed, epoch, fractions=mix)
        if self.group_batch > 1:
            self.samples = group_by_length(self.samples, self.group_batch, self.seed, epoch)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]


def group_by_length(samples: Sequence[Sample], batch_size: int, seed: int, epoch: int,
                    window: int = 64) -> list[Sample]:
    """The stream reordered so that each run of `batch_size` samples has similar prompt lengths.

    A batch is padded to its longest prompt: with histories of 1 to 50 items most of a random
    batch is padding. Each window of `window` batches is sorted by prompt length (characters, a
    proxy for tokens) and cut into batches; the batches are then shuffled (seeded by seed and
    epoch, so a resumed run rebuilds the same stream). The last, partial batch stays last, so every
    batch boundary falls where the DataLoader cuts.
    """
    import numpy as np

    n = len(samples)
    size = batch_size * window
    batches: list[list[int]] = []
    for start in range(0, n, size):
        chunk = sorted(range(start, min(n, start + size)), key=lambda i: len(samples[i].text))
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    tail = [batches.pop()] if batches and len(batches[-1]) < batch_size else []
    order = np.random.default_rng([seed, epoch, 7]).permutation(len(batches))
    return [samples[i] for b in [batches[k] for k in order] + tail for i in b]
