"""`unimp train --model sasrec`: SASRec's own loop over the same dataset folder and run-folder contract.

    setup (run folder, model, every training sequence as one window) -> steps of `batch_size` sequences
    -> every eval_every steps: rank metrics on the valid split, best/ kept, early stopping
    -> checkpoints/step-N every save_every steps -> final/

The data stream is a pure function of (seed, step): epoch e visits the sequences in the order
`default_rng([seed, e]).permutation`, step s draws its negatives from a generator seeded with (seed, s),
and dropout draws from torch's global RNG, which checkpoints restore. A run killed at any point
resumes with `--resume` and ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ... import run_folder as RF
from ...errors import UnimpError
from . import net as S
from ..setup import load_trainable, setup_model, trainable_state
from ...progress import Progress
from ...specs.train import TrainSpec
from ...tasks import build_eval_samples, context
from ...training import checkpoint as ckpt
from ...training.averaging import averaged, start_average
from ...training.loss import check_finite_loss
from ...training.distributed import make_accelerator, reset_accelerate_state
from ...training.recipe import RunFolder, record_dataset, setup_dataset, setup_run_dir
from ...training.selection import Selection, metric_name, rank_valid, record_validation

BETAS = (0.9, 0.98)  # the paper's Adam


def run_train_sasrec(spec: TrainSpec, progress: Progress | None = None) -> Path:
    """Train (or resume) the SASRec run described by `spec`; returns the run folder."""
    progress = progress or Progress()
    try:
        accelerator = make_accelerator(spec, log_dir=spec.run.out)
        if accelerator.num_processes > 1:
            raise UnimpError("SASRec trains in one process (run `unimp train --model sasrec` without accelerate launch)")
        spec, ds = setup_dataset(spec)  # before the run folder is touched
        run = RunFolder(spec, Path(spec.run.out), accelerator, progress)
        fresh = setup_run_dir(run)
        record_dataset(run, ds)  # dataset.json: evaluate, generate and --resume refuse a rebuilt dataset
        torch.manual_seed(spec.run.seed)
        setup = setup_model(spec, ds, run.out, fresh=fresh, progress=progress)
        _Loop(run, setup, ds, accelerator.device).train()
    finally:
        reset_accelerate_state()
    return run.out


class _Loop:
    def __init__(self, run, setup, ds, device) -> None:
        spec = run.spec
        self.run, self.spec, self.out, self.progress = run, spec, run.out, run.progress
        self.setup, self.device = setup, device
        self.model: S.SASRec = setup.bundle.model.to(device)
        ctx = context(ds)
        users = sorted(ctx.train_lengths)
        self.inputs, self.targets = (torch.from_numpy(a) for a in S.training_windows(
            [ctx.sequences[u][:ctx.train_lengths[u]] for u in users], self.model.max_len))  # (U, L) each
        if len(self.inputs) == 0:
            raise UnimpError(f"{ds.root}: no training sequence of 2 or more items")
        self.per_epoch = math.ceil(len(self.inputs) / spec.optim.batch_size)
        self.total = spec.run.max_steps or max(1, math.ceil(spec.run.epochs * self.per_epoch))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=spec.optim.lr, betas=BETAS)
        self.eval_every = spec.run.eval_every or self.per_epoch
        self.selection = Selection(metric_name(spec.run.select_metric), spec.run.patience or None)
        valid = build_eval_samples(ds, "rec", "valid", 1, ctx) if "rec" in ds.instances else []
        self.valid = valid[: spec.run.select_users]
        res = run.resume or {}  # the average validation, best/ and final/ read
        self.average = start_average(self.model, spec.optim.average_epochs, self.per_epoch, res.get("average"),
                                     str(res.get("path")))
        self.step = 0
        self._order: tuple[int, np.ndarray] | None = None
        if run.resume is not None:
            self._resume(run.resume)

    def _resume(self, res: dict[str, Any]) -> None:
        load_trainable(self.model, res["weights"], str(res["path"]))
        if res["optimizer"] is not None:
            self.optimizer.load_state_dict(res["optimizer"])
        state = res["state"]
        self.step = int(state["step"])
        self.selection = Selection.from_state(state.get("selection"), self.selection.metric, self.selection.patience)
        if res["rng"] is not None:
            ckpt.set_rng_state(res["rng"])
        self.progress.log(f"resuming {self.out} at step {self.step} (epoch {self.step // self.per_epoch})")

    # ------------------------------------------------------------------------------------ stream

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Step `step`'s sequences: (B, L) inputs and targets."""
        epoch, index = divmod(step, self.per_epoch)
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, np.random.default_rng([self.spec.run.seed, epoch]).permutation(len(self.inputs)))
        size = self.spec.optim.batch_size
        rows = torch.from_numpy(self._order[1][index * size:(index + 1) * size])
        return self.inputs[rows], self.targets[rows]

    # ------------------------------------------------------------------------------------- train

    def train(self) -> None:
        spec, model = self.spec, self.model
        model.train()
        started, seen, losses = time.time(), 0, []
        stopped = False
        with self.progress.task("training SASRec", total=self.total) as advance:
            advance(self.step)
            while self.step < self.total and not stopped:
                inputs, targets = self.batch(self.step)
                gen = torch.Generator().manual_seed(spec.run.seed * 1_000_003 + self.step)
                loss = S.loss(model, inputs, targets, spec.model.loss, gen)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                if self.average is not None:
                    self.average.update()
                self.step += 1
                seen += len(inputs)
                losses.append(loss.item())
                check_finite_loss(losses[-1], self.step, spec.optim.lr)
                rate = seen / max(time.time() - started, 1e-9)
                advance(1, info=f"loss {np.mean(losses[-50:]):.4f} {rate:.0f} sequences/s")
                last = self.step == self.total
                if self.step % spec.run.log_every == 0 or last:
                    self._log({"loss": float(np.mean(losses)), "lr": spec.optim.lr, "samples_per_s": rate})
                    losses = []
                if self.valid and (self.step % self.eval_every == 0 or last):
                    with averaged(self.average):
                        stopped = self._validate()
                if self.step % spec.run.save_every == 0 and not (last or stopped):
                    self._save_checkpoint()
        self._save_final(stopped)

    def _log(self, record: dict[str, Any]) -> None:
        RF.append_metrics(self.out, {"step": self.step, "epoch": round(self.step / self.per_epoch, 4), **record})

    def _validate(self) -> bool:
        """Rank the valid split, keep best/ on a new best; True when early stopping says stop."""
        metrics = rank_valid(self.setup, self.model, self.valid, self.selection.metric, device=self.device)
        self.model.train()

        def save_best() -> None:
            ckpt.write_best(self.out, trainable_state(self.model),
                            self.selection.best_state(self.step / self.per_epoch, len(self.valid)))

        return record_validation(self.selection, self.step, metrics, users=len(self.valid), write_line=self._log,
                                 save_best=save_best, log=self.progress.log)

    def _state(self) -> dict[str, Any]:
        epoch, batch = divmod(self.step, self.per_epoch)
        return {"step": self.step, "epoch": epoch, "batch": batch, "selection": self.selection.state()}

    def _save_checkpoint(self) -> None:
        files = {RF.WEIGHTS: trainable_state(self.model), RF.OPTIMIZER: self.optimizer.state_dict(),
                 RF.RNG: ckpt.rng_state(), RF.STATE: self._state()}
        if self.average is not None:
            files[RF.AVERAGE] = self.average.state_dict()
        ckpt.save_checkpoint(self.out, self.step, files, self.spec.run.keep_last)

    def _save_final(self, stopped: bool) -> None:
        with averaged(self.average):
            weights = trainable_state(self.model)
        ckpt.write_final(self.out, weights, {**self._state(), "early_stopped": stopped})
