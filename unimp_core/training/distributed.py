"""How a run is spread over processes: an `accelerate.Accelerator` built from the spec.

DeepSpeed configs are generated from the spec (never hand-copied); the paper trained with ZeRO-2 in bf16.
The same code runs as one CPU process, under `accelerate launch --multi_gpu --num_processes N` (DDP; gloo
when the machine has no GPU) and on many GPUs and machines.

Measured with accelerate 1.15 on a CPU-only machine:
  - `accelerate launch --multi_gpu --num_processes 2` starts two processes; with `cpu=True` (set here
    when no accelerator device exists) they form one gloo group. Without `cpu=True` each process
    silently trains alone, which `make_accelerator` refuses.
  - `accelerate launch --cpu --num_processes 2` starts ONE process; `--cpu` and `--multi_gpu` together
    are rejected by the launcher.
  - `--distributed zero2|zero3` outside a launcher runs as a one-process DeepSpeed group (the
    rendezvous variables are filled in), on DeepSpeed's CPU accelerator when there is no GPU.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from ..errors import UnimpError
from ..specs.train import TrainSpec

DEEPSPEED = ("zero2", "zero3")
# Variables a launcher (accelerate, torchrun, deepspeed) sets for every process.
_LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


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


def has_accelerator_device() -> bool:
    """True when torch sees a GPU (or another accelerator device)."""
    import torch

    probe = getattr(torch, "accelerator", None)
    if probe is not None and hasattr(probe, "is_available"):
        return bool(probe.is_available())
    return torch.cuda.is_available()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Variables single_process_rendezvous added (removed again by reset_accelerate_state, so that a later
# run in the same process is not mistaken for a launched one).
_ADDED_ENV: list[str] = []


def single_process_rendezvous() -> None:
    """Fill in the variables a launcher would set, for a one-process group (DeepSpeed needs a group
    even alone; without them it falls back to MPI discovery). Launched processes keep theirs."""
    if "RANK" in os.environ or "WORLD_SIZE" in os.environ:
        return
    defaults = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
                "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    for key, value in defaults.items():
        if key not in os.environ:
            os.environ[key] = value
            _ADDED_ENV.append(key)


def _launched_with_deepspeed() -> bool:
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def launched_by_accelerate() -> bool:
    """True inside a process started by `accelerate launch` (it sets these for every process)."""
    return "ACCELERATE_MIXED_PRECISION" in os.environ or "ACCELERATE_DYNAMO_BACKEND" in os.environ


def _strategy(spec: TrainSpec) -> str:
    """The strategy to set up here. A user's accelerate config file is read by accelerate's launcher,
    not by the Accelerator, so it only counts under `accelerate launch --config_file`."""
    if spec.run.accelerate_config is None:
        return spec.run.distributed
    if not launched_by_accelerate():
        raise UnimpError(f"run.accelerate_config: accelerate reads {spec.run.accelerate_config} in its launcher; run "
                         f"`accelerate launch --config_file {spec.run.accelerate_config} -m unimp_cli train ...`")
    if spec.run.distributed != "auto":
        raise UnimpError(f"run.distributed: {spec.run.distributed} and an accelerate config file both choose the "
                         "strategy; keep one")
    return "auto"


def make_accelerator(spec: TrainSpec, log_dir=None):
    """The Accelerator for this run (strategy from --distributed or the user's accelerate config).

    Raises UnimpError (one line) for settings this machine cannot run (e.g. fp16 without a GPU) and
    for a launch whose processes do not form one group.
    """
    from accelerate import Accelerator
    from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin, InitProcessGroupKwargs

    _check_trackers(spec.run.trackers)
    mixed = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[spec.run.precision]
    kwargs: dict[str, Any] = {
        "mixed_precision": mixed,
        "gradient_accumulation_steps": spec.optim.grad_accum,
        "log_with": list(spec.run.trackers) or None,
        "project_dir": str(log_dir) if log_dir else None,
    }
    strategy = _strategy(spec)
    device = has_accelerator_device()
    if strategy in DEEPSPEED:
        single_process_rendezvous()
        stage = 2 if strategy == "zero2" else 3
        kwargs["deepspeed_plugin"] = DeepSpeedPlugin(hf_ds_config=deepspeed_config(spec, stage))
    if strategy in DEEPSPEED or (strategy == "auto" and _launched_with_deepspeed()):
        if not device:
            # accelerate finds no backend for DeepSpeed without a GPU: DeepSpeed still forms the
            # group, but accelerate counts one process (each rank then sees all the data and sizes
            # the global batch for one). Naming gloo makes accelerate count the group.
            kwargs["kwargs_handlers"] = [InitProcessGroupKwargs(backend="gloo")]
    else:
        if strategy == "fsdp":
            kwargs["fsdp_plugin"] = FullyShardedDataParallelPlugin(use_orig_params=True)
        # Without cpu=True, `--multi_gpu` on a machine without GPUs gives N unrelated one-process runs
        # (and cpu=True would switch a DeepSpeed launch to plain DDP, hence not above).
        kwargs["cpu"] = not device
    try:
        accelerator = Accelerator(**kwargs)
    except (ValueError, RuntimeError, ImportError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnimpError(f"run.distributed/precision: accelerate cannot set up {strategy} / {spec.run.precision}: "
                         f"{first}") from exc
    launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if launched != accelerator.num_processes:
        raise UnimpError(f"launched as {launched} processes but accelerate formed a group of "
                         f"{accelerator.num_processes}; on CPU use `accelerate launch --multi_gpu --num_processes N`")
    return accelerator


def _check_trackers(trackers) -> None:
    """accelerate silently drops a tracker that is not installed; say so instead."""
    from accelerate.utils import is_tensorboard_available, is_wandb_available

    available = {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available}
    missing = [t for t in trackers if not available[t]()]
    if missing:
        raise UnimpError(f"run.trackers: {', '.join(missing)} not installed (pip install {' '.join(missing)})")


def reset_accelerate_state() -> None:
    """Forget accelerate's process-wide singletons (and the rendezvous variables set here), so the
    next run in this process (tests, a notebook) can choose another precision or strategy."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    while _ADDED_ENV:
        os.environ.pop(_ADDED_ENV.pop(), None)
