"""`unimp finetune --from RUN`: a new run's spec built from a finished run's (no torch import)."""

from __future__ import annotations

from pathlib import Path

from .. import run_folder as RF
from ..errors import UnimpError
from ..specs.base import deep_merge, load_config, merge_spec
from ..specs.train import TrainSpec
from ..task_names import DEFAULT_TASK


def finetune_spec(source: Path, overrides: dict, config: Path | None = None) -> TrainSpec:
    """`unimp finetune --from RUN`: the run's model and data, its final weights, DEFAULT_TASK (rec) alone and a
    constant schedule (as the paper's finetune script) unless a `config` file or the flags (`overrides`,
    which win) say otherwise."""
    source = Path(source)
    base = RF.read_train_spec_dict(source)
    if not RF.is_finished(source):
        raise UnimpError(f"{source}: the run has not finished (no {RF.FINAL}/); resume it first")
    RF.read_train_spec(source)  # refuses a run folder of an older unimp before anything is built
    base["init_from"] = str(source.resolve())
    base["data"]["tasks"] = [DEFAULT_TASK]
    base["optim"]["schedule"] = "constant"
    kept = ("precision", "distributed", "seed", "cache_vision_features", "num_workers", "trackers")
    base["run"] = {k: v for k, v in base.get("run", {}).items() if k in kept}
    if config is not None:
        base = deep_merge(base, load_config(config))
    return merge_spec(TrainSpec, base, overrides, str(config) if config else "finetune options")
