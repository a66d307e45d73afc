"""OpenFlamingo's training recipe (`unimp train`, `unimp finetune`): setup → train → save → cleanup.

The run folder describes itself: train_spec.json, model.json + tokenizer/ (rebuild the model),
checkpoints/step-N/ (trainable weights, optimizer, scheduler, RNG, data position), final/, metrics.jsonl.
A run killed at any point resumes with `--resume` from its last checkpoint and ends with the same
weights as an uninterrupted run (same seed): the data stream is a pure function of (seed, epoch), the
loop alone chooses the epoch, no DataLoader draws from the global RNG, and every RNG state is restored.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader

from ... import run_folder as RF
from ...data.store import Dataset
from ...errors import UnimpError
from ...progress import Progress
from ...specs.train import TrainSpec
from ...tasks import build_eval_samples, get_task, instance_table, run_history_lengths, task_names
from ...training import checkpoint as ckpt
from ...training.averaging import WeightAverage, averaged, start_average
from ...training.distributed import make_accelerator, reset_accelerate_state
from ...training.loss import LossParts, answer_loss_parts, check_finite_loss, per_task
from ...training.optim import build_optimizer, build_scheduler
from ...training.recipe import RunFolder, record_dataset, setup_dataset, setup_run_dir
from ...training.samples import SampleDataset, TrainingSamples
from ...training.selection import Selection, metric_name, rank_valid, record_validation
from ...training.stream import EpochStream, epoch_sizes, planned_steps, steps_per_epoch, validation_samples
from ..setup import Setup, load_trainable, load_weights, setup_model, trainable_state
from .sharded import load_sharded_optimizer, save_sharded_optimizer


# ------------------------------------------------------------------------------------------ the run


@dataclass
class Position:
    """Where the run is: optimizer steps done, and the epoch and batch (per process) the data resumes at."""

    step: int = 0
    epoch: int = 0
    batch: int = 0


@dataclass
class Meter:
    """Training losses since the last metrics line (summed over micro-batches)."""

    loss: float = 0.0
    batches: int = 0
    task_sums: torch.Tensor = field(default_factory=lambda: torch.zeros(len(task_names())))
    task_tokens: torch.Tensor = field(default_factory=lambda: torch.zeros(len(task_names())))

    def add(self, parts: LossParts, batch: dict) -> None:
        self.loss += float(parts.loss.detach())
        self.batches += 1
        # per-task losses without the task weight, comparable with the validation loss
        w = batch["weights"].to(parts.sample_sums.device)
        plain = torch.where(w > 0, parts.sample_sums / w.clamp(min=1e-12), torch.zeros_like(w))
        sums, counts = per_task(plain, parts.sample_tokens, batch["task_ids"].to(plain.device), len(task_names()))
        self.task_sums += sums.cpu()
        self.task_tokens += counts.cpu().float()


@dataclass
class Run(RunFolder):
    """What the loop works with, built by the _setup_* steps."""

    model: Any = None
    setup: Setup | None = None
    optimizer: Any = None
    scheduler: Any = None
    loader: Any = None
    stream: EpochStream | None = None
    valid: dict[str, DataLoader] = field(default_factory=dict)
    total: int = 0
    eval_every: int = 1  # optimizer steps between validations (the spec's, else one epoch's)
    steps_per_epoch: int = 1
    average: WeightAverage | None = None  # optim.average_epochs: what validation and best/ and final/ read
    item_range: tuple[int, int] | None = None  # item tokens whose answers the softmax runs over (optim.item_softmax)
    n_epochs: int = 1
    trainable_names: list[str] = field(default_factory=list)
    position: Position = field(default_factory=Position)
    selection: Selection | None = None  # None: the run does not train rec (nothing to rank)
    select_samples: list = field(default_factory=list)  # the selecting task's (rec) valid instances, ranked at each validation
    stopped: bool = False  # early stopping

    @property
    def sharding(self) -> str:
        """How the accelerator actually split the run (whatever chose it: --distributed, the launcher,
        a config file): "deepspeed" or "fsdp" keep each process's share of the optimizer state;
        "none" (one process, DDP) keeps all of it everywhere."""
        from accelerate.utils import DistributedType

        kind = self.accelerator.distributed_type
        return {DistributedType.DEEPSPEED: "deepspeed", DistributedType.FSDP: "fsdp"}.get(kind, "none")

    @property
    def sharded_weights(self) -> bool:
        """ZeRO-3 and FSDP split the weights too: saving them gathers across processes."""
        if self.sharding == "deepspeed":
            return self.accelerator.state.deepspeed_plugin.zero_stage == 3
        return self.sharding == "fsdp"


def run_train_openflamingo(spec: TrainSpec, progress: Progress | None = None) -> Path:
    """Train (or resume, or finetune) the OpenFlamingo run described by `spec`; returns the run folder."""
    from accelerate.utils import set_seed

    from ..item_ids import choose_item_ids

    try:
        accelerator = make_accelerator(spec, log_dir=spec.run.out)
        progress = (progress or Progress()) if accelerator.is_main_process else Progress()
        spec, ds = setup_dataset(spec, progress.log)  # before the run folder is touched: a bad --data leaves nothing behind
        # atomic or semantic item ids, decided once: the saved spec and the model built from it hold the choice
        spec = spec.model_copy(update={"model": choose_item_ids(spec.model, ds, progress.log)})
        run = Run(spec, Path(spec.run.out), accelerator, progress)
        fresh = setup_run_dir(run)
        record_dataset(run, ds)
        set_seed(spec.run.seed)
        setup = _setup_model(run, ds, fresh)
        _setup_data(run, ds, setup)
        _setup_optimizer(run, setup)
        _train(run)
        _save_final(run)
        accelerator.end_training()
    finally:
        reset_accelerate_state()
    return run.out


# ------------------------------------------------------------------------------------------- setup


def _setup_model(run: Run, ds: Dataset, fresh: bool) -> Setup:
    spec = run.spec
    # The main process builds (tokenizer, feature cache) and writes; the others then rebuild from the folder.
    with run.accelerator.main_process_first():
        run.setup = setup_model(spec, ds, run.out, fresh=fresh and run.main, progress=run.progress)
    return run.setup


def _setup_data(run: Run, ds: Dataset, setup: Setup) -> None:
    spec, acc = run.spec, run.accelerator
    run.n_epochs = max(1, math.ceil(spec.run.epochs))
    samples = TrainingSamples(setup.ctx, spec.data.tasks, run_history_lengths(spec.data, spec.data.tasks), spec.run.seed,
                              curriculum=spec.data.curriculum, n_epochs=run.n_epochs,
                              group_batch=spec.optim.batch_size if spec.data.group_by_length else 0)
    if len(samples) == 0:
        raise UnimpError(f"{ds.root}: no training samples for tasks {spec.data.tasks}")
    sizes = epoch_sizes(samples, run.n_epochs)
    run.total = planned_steps(spec, sizes, acc.num_processes)
    run.steps_per_epoch = steps_per_epoch(sizes(0), spec.optim.batch_size, acc.num_processes, spec.optim.grad_accum)
    run.eval_every = spec.run.eval_every or run.steps_per_epoch
    ids = getattr(setup.bundle, "ids", None)
    if spec.optim.item_softmax and ids is not None and not ids.semantic:
        run.item_range = ids.item_range
    if spec.run.max_steps is not None:
        run.n_epochs = 10**9  # as many passes as the steps need
    run.stream = EpochStream(samples)
    collate = setup.collator(spec.data.max_tokens, padding_side="right", task_weights=spec.data.task_weights)
    # Its own generator: a DataLoader iterator otherwise draws its worker seed from the global RNG,
    # which a resumed run (one more iterator) would then see shifted.
    run.loader = DataLoader(run.stream, batch_size=spec.optim.batch_size, shuffle=False, collate_fn=collate,
                            num_workers=spec.run.num_workers, generator=torch.Generator().manual_seed(spec.run.seed))
    task = next((t for t in spec.data.tasks if get_task(t).selects_checkpoints and instance_table(t) in ds.instances), None)
    if task is not None:
        lengths = run_history_lengths(spec.data, [task])
        run.select_samples = build_eval_samples(ds, task, "valid", lengths, setup.ctx)[: spec.run.select_users]
        run.selection = Selection(metric_name(spec.run.select_metric), spec.run.patience or None) if run.select_samples else None
    shards = validation_samples(spec, ds, acc.process_index, acc.num_processes, run.progress, setup.ctx)
    run.valid = {t: DataLoader(SampleDataset(s), batch_size=spec.optim.batch_size, collate_fn=collate)
                 for t, s in shards.items()}


def _setup_optimizer(run: Run, setup: Setup) -> None:
    spec, acc = run.spec, run.accelerator
    model = setup.bundle.model
    run.trainable_names = [n for n, p in model.named_parameters() if p.requires_grad]
    optimizer = build_optimizer(model, spec.optim.lr, spec.optim.weight_decay, spec.optim.beta2,
                                decay_scope=spec.optim.decay_scope)
    # The scheduler stays outside accelerate: its wrapper steps it once per process per step.
    run.scheduler = build_scheduler(optimizer, run.total, spec.optim.warmup_ratio, spec.optim.schedule)
    if run.resume is not None:
        res = run.resume
        load_trainable(model, res["weights"], str(res["path"]))
        if res["optimizer"] is not None and run.sharding == "none":
            optimizer.load_state_dict(res["optimizer"])
        if res["scheduler"] is not None:
            run.scheduler.load_state_dict(res["scheduler"])
        state = res["state"]
        run.position = Position(state["step"], state["epoch"], state["batch"])
        if run.selection is not None:
            run.selection = Selection.from_state(state.get("selection"), run.selection.metric, run.selection.patience)
        run.progress.log(f"resuming {run.out} at step {state['step']} (epoch {state['epoch']}, batch {state['batch']})")
    elif spec.init_from is not None:  # a finetune's start (also when resumed before its first checkpoint)
        load_trainable(model, load_weights(spec.init_from), str(spec.init_from))
        run.progress.log(f"starting from the weights of {spec.init_from}")
    run.model, run.optimizer, run.loader = acc.prepare(model, optimizer, run.loader)
    if run.resume is not None:
        load_sharded_optimizer(run, run.resume["path"])
    if spec.optim.average_epochs > 0 and run.sharded_weights:
        raise UnimpError("optim.average_epochs: not with ZeRO-3 or FSDP, which split the weights across processes")
    res = run.resume or {}
    run.average = start_average(acc.unwrap_model(run.model), spec.optim.average_epochs, run.steps_per_epoch,
                                res.get("average"), str(res.get("path")))
    if spec.run.trackers:
        config = {"lr": spec.optim.lr, "gamma": spec.optim.gamma, "batch_size": spec.optim.batch_size,
                  "tasks": ",".join(spec.data.tasks)}
        acc.init_trackers(run.out.name, config=config)


# ------------------------------------------------------------------------------------------- train


def _train(run: Run) -> None:
    """The loop: micro-batches → optimizer steps, with metrics, validation and checkpoints on schedule."""
    acc, pos, meter = run.accelerator, run.position, Meter()
    run.model.train()
    clock = {"started": time.time(), "seen": 0}
    with run.progress.task("training", total=run.total) as advance:
        advance(pos.step)
        if run.resume is not None and run.resume["rng"] is not None:
            ckpt.set_rng_state(run.resume["rng"])
        while pos.step < run.total and pos.epoch < run.n_epochs:
            run.stream.use_epoch(pos.epoch)
            batches = acc.skip_first_batches(run.loader, pos.batch) if pos.batch else run.loader
            for batch in batches:
                parts = _micro_step(run, batch)
                pos.batch += 1
                clock["seen"] += batch["input_ids"].shape[0] * acc.num_processes
                meter.add(parts, batch)
                if not acc.sync_gradients:
                    continue
                pos.step += 1
                if run.average is not None:
                    run.average.update()
                meter = _after_step(run, meter, clock, advance)
                if pos.step >= run.total or run.stopped:
                    return
            pos.epoch, pos.batch = pos.epoch + 1, 0


def _micro_step(run: Run, batch: dict) -> LossParts:
    acc, opt = run.accelerator, run.optimizer
    with acc.accumulate(run.model):
        with acc.autocast():
            logits = run.setup.forward(run.model, batch, run.item_range)  # at the label positions
        parts = answer_loss_parts(logits, batch["labels"], batch["weights"], run.spec.optim.gamma,
                                  item_range=run.item_range)
        acc.backward(parts.loss)
        if acc.sync_gradients and run.spec.optim.grad_clip > 0:
            acc.clip_grad_norm_(run.model.parameters(), run.spec.optim.grad_clip)
        opt.step()
        if acc.sync_gradients and not _step_skipped(opt):
            run.scheduler.step()
        opt.zero_grad()
    return parts


def _step_skipped(optimizer) -> bool:
    """fp16 loss scaling skips the steps whose gradients overflowed (the schedule then waits too)."""
    try:
        return bool(optimizer.step_was_skipped)
    except AttributeError:
        return False


def _after_step(run: Run, meter: Meter, clock: dict, advance) -> Meter:
    """Progress, metrics line, validation and checkpoint after optimizer step `run.position.step`."""
    spec, pos, acc = run.spec, run.position, run.accelerator
    last = pos.step == run.total
    lr = run.scheduler.get_last_lr()[0]
    # every process takes part (a NaN on one rank stops them all)
    check_finite_loss(float(acc.reduce(torch.tensor([meter.loss], device=acc.device), reduction="sum")), pos.step, lr)
    rate = clock["seen"] / max(time.time() - clock["started"], 1e-9)
    advance(1, info=f"loss {meter.loss / max(meter.batches, 1):.4f} lr {lr:.2e} {rate:.1f} samples/s")
    if pos.step % spec.run.log_every == 0 or last:
        _log_train(run, meter, lr, rate)
        meter = Meter()
    if pos.step % run.eval_every == 0 or last:
        with averaged(run.average):
            _validate(run)
    if pos.step % spec.run.save_every == 0 and not (last or run.stopped):
        _save_checkpoint(run)
    return meter


def _validate(run: Run) -> None:
    """The validation loss of every task, then the rank metrics that select best/ (every process calls this)."""
    spec, pos, acc = run.spec, run.position, run.accelerator
    if run.valid:
        losses = validation_loss(run.model, run.valid, spec.optim.gamma, acc, run.setup.forward, run.item_range)
        if run.main:
            RF.append_metrics(run.out, {"step": pos.step, "epoch": pos.epoch, "valid_loss": losses})
            acc.log({f"valid/{k}": v for k, v in losses.items()}, step=pos.step)
            shown = ", ".join(f"{k} {v:.4f}" for k, v in losses.items())
            run.progress.log(f"step {pos.step}: validation loss {shown}")
    if run.selection is not None:
        _select(run)


def _select(run: Run) -> None:
    """Rank the valid split's rec instances (every process its share), keep best/ on a new best, and
    stop early when `patience` validations in a row did not improve. Every process must call this."""
    from accelerate.utils import gather_object

    spec, acc, pos, sel = run.spec, run.accelerator, run.position, run.selection
    net = acc.unwrap_model(run.model)
    metrics = rank_valid(run.setup, net, run.select_samples, sel.metric, device=acc.device,
                         batch_size=spec.optim.batch_size, max_tokens=spec.data.max_tokens,
                         precision=spec.run.precision, rank=acc.process_index, world=acc.num_processes,
                         gather=gather_object if acc.num_processes > 1 else None)
    net.train()

    def write_line(record: dict) -> None:
        if run.main:
            RF.append_metrics(run.out, {"step": pos.step, "epoch": pos.epoch, **record})
            acc.log({f"valid/{k}": v for k, v in metrics.items()}, step=pos.step)

    def save_best() -> None:
        weights = _trainable_weights(run)
        if run.main:
            ckpt.write_best(run.out, weights, sel.best_state(pos.epoch, len(run.select_samples)))
        acc.wait_for_everyone()

    run.stopped = record_validation(sel, pos.step, metrics, users=len(run.select_samples), write_line=write_line,
                                    save_best=save_best, log=run.progress.log)


def _log_train(run: Run, meter: Meter, lr: float, rate: float) -> None:
    """One metrics line, averaged over every process (all of them call this)."""
    acc = run.accelerator
    packed = torch.cat([torch.tensor([meter.loss, float(meter.batches)]), meter.task_sums, meter.task_tokens])
    packed = acc.reduce(packed.to(acc.device), reduction="sum").cpu()
    names = task_names()
    n = len(names)
    loss_sum, batches, sums, tokens = packed[0], packed[1], packed[2:2 + n], packed[2 + n:]
    if not run.main:
        return
    task_loss = {t: float(sums[i] / tokens[i]) for i, t in enumerate(names) if tokens[i] > 0}
    record = {"step": run.position.step, "epoch": run.position.epoch, "loss": float(loss_sum / batches.clamp(min=1)),
              "lr": lr, "samples_per_s": rate, "task_loss": task_loss}
    RF.append_metrics(run.out, record)
    acc.log({"train/loss": record["loss"], "train/lr": lr,
             **{f"train/{t}": v for t, v in task_loss.items()}}, step=run.position.step)


def validation_loss(model, loaders: dict[str, Any], gamma: float, accelerator,
                    forward: Callable, item_range: tuple[int, int] | None = None) -> dict[str, float]:
    """Mean answer-token loss per task (no task weights) over every process's share of the validation
    instances. Every process must call it (the sums are reduced across processes)."""
    net = accelerator.unwrap_model(model)
    net.eval()
    sums = torch.zeros(2 * len(loaders), dtype=torch.float64)
    with torch.no_grad():
        for k, loader in enumerate(loaders.values()):
            for batch in loader:
                batch = {n: v.to(accelerator.device) if torch.is_tensor(v) else v for n, v in batch.items()}
                with accelerator.autocast():
                    logits = forward(net, batch, item_range)  # at the label positions
                parts = answer_loss_parts(logits, batch["labels"], None, gamma, item_range=item_range)
                sums[2 * k] += float(parts.sample_sums.sum())
                sums[2 * k + 1] += float(parts.sample_tokens.sum())
    net.train()
    sums = accelerator.reduce(sums.to(accelerator.device), reduction="sum").cpu()
    return {task: float(sums[2 * k] / max(float(sums[2 * k + 1]), 1.0)) for k, task in enumerate(loaders)}


# -------------------------------------------------------------------------------------------- save


def _trainable_weights(run: Run) -> dict[str, torch.Tensor] | None:
    """The trainable weights on the main process (None elsewhere). Sharded strategies gather them:
    every process must call this."""
    acc = run.accelerator
    if run.sharded_weights:
        full = acc.get_state_dict(run.model)
        return {n: full[n].detach().cpu().clone() for n in run.trainable_names} if run.main else None
    return trainable_state(acc.unwrap_model(run.model)) if run.main else None


def _save_checkpoint(run: Run) -> None:
    """checkpoints/step-N, written atomically by the main process; every process must call this."""
    acc, pos = run.accelerator, run.position
    weights = _trainable_weights(run)
    files: dict[str, Any] = {}
    sharded = save_sharded_optimizer(run)
    if sharded is not None:
        files[RF.SHARDS_DIR] = lambda path: os.replace(sharded, path)
    else:
        files[RF.OPTIMIZER] = run.optimizer.state_dict() if run.main else None
    if run.main:
        if run.average is not None:
            files[RF.AVERAGE] = run.average.state_dict()
        files.update({RF.WEIGHTS: weights, RF.SCHEDULER: run.scheduler.state_dict(), RF.RNG: ckpt.rng_state(),
                      RF.STATE: {"step": pos.step, "epoch": pos.epoch, "batch": pos.batch,
                                 "selection": run.selection.state() if run.selection else None}})
        ckpt.save_checkpoint(run.out, pos.step, files, run.spec.run.keep_last)
    acc.wait_for_everyone()


def _save_final(run: Run) -> None:
    """final/: the trainable weights (their moving average, when the run keeps one) and where the run ended
    (every process must call this)."""
    run.accelerator.wait_for_everyone()
    with averaged(run.average):
        weights = _trainable_weights(run)
    if run.main:
        pos = run.position
        ckpt.write_final(run.out, weights, {"step": pos.step, "epoch": pos.epoch, "batch": pos.batch,
                                            "early_stopped": run.stopped})
    run.accelerator.wait_for_everyone()
