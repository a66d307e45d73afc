"""The curriculum of the paper's code: tasks join the training stream in stages across epochs.

The paper's code (`--train_method continue`) trains rec first, then adds search, img_sel and exp, one per
quarter of the epochs, and replays the tasks already learnt on a quarter of their data while the
newest task gets all of its data. Here the stages follow the order the tasks are given in, and
the stages have equal length with the last epoch always training every task (the paper's code's
`epoch <= n // 4` boundaries never reached the last stage with 4 epochs).
"""

from __future__ import annotations

from typing import Sequence

from ..errors import UnimpError

REPLAY = 0.25


def curriculum_stage(n_tasks: int, epoch: int, n_epochs: int) -> int:
    """Index of the last task active at `epoch` (0-based): ceil((epoch + 1) * n_tasks / n_epochs) - 1."""
    if n_tasks < 1 or n_epochs < 1:
        raise UnimpError(f"curriculum needs at least one task and one epoch (got {n_tasks} tasks, {n_epochs} epochs)")
    epoch = min(max(epoch, 0), n_epochs - 1)
    return min(n_tasks - 1, -(-(epoch + 1) * n_tasks // n_epochs) - 1)


def curriculum_tasks(tasks: Sequence[str], epoch: int, n_epochs: int) -> list[str]:
    """The tasks active at `epoch`: a growing prefix of `tasks`, all of them in the last epoch."""
    return list(tasks[: curriculum_stage(len(tasks), epoch, n_epochs) + 1])


def curriculum_mix(tasks: Sequence[str], epoch: int, n_epochs: int, replay: float = REPLAY) -> dict[str, float]:
    """task -> fraction of its samples used at `epoch`: the newest task 1.0, earlier ones `replay`."""
    active = curriculum_tasks(tasks, epoch, n_epochs)
    return {t: (1.0 if t == active[-1] else replay) for t in active}
