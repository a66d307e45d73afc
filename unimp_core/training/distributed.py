"""How a run is spread over processes: an `accelerate.Accelerator` built from the spec.

DeepSpeed configs are generated from the spec (never hand-copied); the paper trained with ZeRO-2 in bf16.
The same code runs as one CPU process, under `accelerate launch --multi_gpu` (DDP, gloo on CPU) and
on many GPUs and machines.
"""

from __future__ import annotations

import os
from typing import Any

from ..specs.train import TrainSpec


def deepspeed_config(spec: TrainSpec, stage: int) -> dict[str, Any]:
    """A DeepSpeed config for ZeRO `stage` that agrees with the spec's batch, accumulation, clipping, precision."""
    zero: dict[str, Any] = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True,
                            "reduce_bucket_size": 5e8, "allgather_bucket_size": 5e8}
    if stage == 3:
        zero.update({"stage3_gather_16bit_weights_on_model_save": True, "stage3_param_persistence_threshold": 1e4})
    return {
        "train_micro_batch_size_per_gpu": spec.optim.batch_size,
        "gradient_accumulation_steps": spec.optim.grad_accum,
        "gradient_clipping": spec.optim.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": spec.run.precision == "bf16"},
        "fp16": {"enabled": spec.run.precision == "fp16", "loss_scale": 0, "initial_scale_power": 16},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def make_accelerator(spec: TrainSpec, log_dir=None):
    """The Accelerator for this run (strategy from --distributed or the user's accelerate config)."""
    from accelerate import Accelerator
    from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin

    mixed = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[spec.run.precision]
    kwargs: dict[str, Any] = {
        "mixed_precision": mixed,
        "gradient_accumulation_steps": spec.optim.grad_accum,
        "log_with": list(spec.run.trackers) or None,
        "project_dir": str(log_dir) if log_dir else None,
    }
    if spec.run.accelerate_config is not None:
        os.environ.setdefault("ACCELERATE_CONFIG_FILE", str(spec.run.accelerate_config))
    strategy = spec.run.distributed
    if strategy in ("zero2", "zero3"):
        kwargs["deepspeed_plugin"] = DeepSpeedPlugin(hf_ds_config=deepspeed_config(spec, 2 if strategy == "zero2" else 3))
    elif strategy == "fsdp":
        kwargs["fsdp_plugin"] = FullyShardedDataParallelPlugin(use_orig_params=True)
    return Accelerator(**kwargs)
