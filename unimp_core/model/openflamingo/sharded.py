"""DeepSpeed / FSDP optimizer state in a checkpoint: each process writes and reads its own share
(`checkpoints/step-N/optimizer_shards/`); one process or DDP keeps the whole state in optimizer.pt.

`run` is the recipe's `recipe.Run` (accelerator, model, optimizer, out, position, sharding).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ... import run_folder as RF
from ...errors import UnimpError


def save_sharded_optimizer(run) -> Path | None:
    """DeepSpeed / FSDP keep each process's share of the optimizer state: every process writes its
    own into a staging folder (moved into the checkpoint by the main process). None otherwise."""
    if run.sharding == "none":
        return None
    acc = run.accelerator
    staging = run.out / RF.CHECKPOINTS / f".step-{run.position.step}.shards"
    if run.main:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    acc.wait_for_everyone()
    if run.sharding == "deepspeed":
        run.model.save_checkpoint(str(staging), tag="zero", exclude_frozen_parameters=True)
    else:
        from accelerate.utils import save_fsdp_optimizer

        save_fsdp_optimizer(acc.state.fsdp_plugin, acc, run.optimizer, run.model, str(staging))
    acc.wait_for_everyone()
    return staging


def load_sharded_optimizer(run, checkpoint: Path) -> None:
    folder = Path(checkpoint) / RF.SHARDS_DIR
    if run.sharding == "none":
        return
    if not folder.is_dir():
        raise UnimpError(f"{checkpoint}: no {RF.SHARDS_DIR}/ optimizer shards for a {run.sharding} resume")
    if run.sharding == "deepspeed":
        run.model.load_checkpoint(str(folder), tag="zero", load_module_strict=False, load_optimizer_states=True,
                                  load_lr_scheduler_states=False)
    else:
        from accelerate.utils import load_fsdp_optimizer

        load_fsdp_optimizer(run.accelerator.state.fsdp_plugin, run.accelerator, run.optimizer, run.model, str(folder))
