"""`unimp train` / `unimp finetune`: setup → train → save → cleanup.

The run folder describes itself: train_spec.json, model.json + tokenizer/ (rebuild the model),
checkpoints/step-N/ (trainable weights, optimizer, scheduler, RNG, data position), final/, metrics.jsonl.
A run killed at any point resumes with `--resume` from its last checkpoint and ends with the same
weights as an uninterrupted run (same seed): the data stream is a pure function of (seed, epoch) and
every RNG state is restored.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from ..data.store import Dataset, load_dataset
from ..errors import UnimpError
from ..io import write_json_atomic
from ..progress import Progress
from ..specs.train import TrainSpec
from ..tasks import TASK_NAMES, build_eval_samples, build_training_samples
from . import checkpoint as ckpt
from .collate import make_collator
from .distributed import make_accelerator
from .loss import answer_loss_parts, per_task
from .optim import build_optimizer, build_scheduler
from .samples import SampleDataset, TrainingSamples

SPEC_FILE = "train_spec.json"
METRICS = "metrics.jsonl"
FINAL = "final"
_TOKENS = re.compile(r"<[^>\s]+>|\b(?:item|rate|s|img)_\d+\b")


@dataclass
class Setup:
    """Everything a training (or evaluation) loop needs, built once."""

    dataset: Dataset
    bundle: Any  # unimp_core.model.factory.ModelBundle
    images: Any  # item_id -> tensor (pixels or cached features)
    image_shape: tuple[int, ...]


def tokenizer_texts(ds: Dataset, seed: int) -> Iterator[str]:
    """What the tiny BPE tokenizer learns from: the catalogue and reviews, and the prompt phrases
    (without the added tokens, which are whole tokens anyway)."""
    from ..model.tokenizer import dataset_texts

    prompts = build_training_samples(ds, list(TASK_NAMES), 5, seed, 0)[:2000]
    return itertools.chain(dataset_texts(ds), (_TOKENS.sub(" ", s.text) for s in prompts))


def setup_model(spec: TrainSpec, ds: Dataset, run_dir: Path, fresh: bool, progress: Progress) -> Setup:
    """Build (fresh) or rebuild (resume, finetune) the model, and the item image function."""
    from ..model.factory import build_model, load_bundle, save_bundle
    from ..model.vision_cache import FEATURES, ItemImages, build_feature_cache, use_cached_features

    source = spec.init_from if (fresh and spec.init_from is not None) else (None if fresh else run_dir)
    if source is None:
        bundle = build_model(spec.model, items_text=tokenizer_texts(ds, spec.run.seed), n_items=ds.items.height,
                             progress=progress)
    else:
        bundle = load_bundle(source, progress=progress)
        if bundle.n_items != ds.items.height:
            raise UnimpError(f"{source}: the model knows {bundle.n_items} items, {ds.root} has {ds.items.height}")
    if fresh:
        save_bundle(bundle, run_dir)
    if fresh and spec.init_from is not None:
        ckpt.load_trainable(bundle.model, load_weights(spec.init_from), str(spec.init_from))
    images = ItemImages(ds, bundle.image_transform)
    shape = (3, bundle.image_size, bundle.image_size)
    if spec.run.cache_vision_features:
        images = build_feature_cache(bundle.model, ds, images, run_dir / FEATURES, progress=progress)
        use_cached_features(bundle.model)
        shape = images.shape
    return Setup(ds, bundle, images, shape)


def load_weights(run_dir: Path, checkpoint: str = FINAL) -> dict[str, torch.Tensor]:
    """A run's trainable weights: `final` or `step-N`."""
    run_dir = Path(run_dir)
    folder = run_dir / FINAL if checkpoint == FINAL else run_dir / "checkpoints" / checkpoint
    if not (folder / ckpt.WEIGHTS).is_file():
        have = [p.name for _, p in ckpt.list_checkpoints(run_dir)] + ([FINAL] if (run_dir / FINAL).is_dir() else [])
        raise UnimpError(f"{folder}: no such checkpoint (have: {', '.join(have) or 'none'})")
    return torch.load(folder / ckpt.WEIGHTS, map_location="cpu", weights_only=True)


def steps_per_epoch(n_samples: int, batch_size: int, world: int, grad_accum: int) -> int:
    batches = math.ceil(n_samples / (batch_size * world))
    return max(1, math.ceil(batches / grad_accum))


def _prepare_run_dir(spec: TrainSpec) -> tuple[Path, dict | None]:
    """New run: refuse to overwrite one. --resume: the last checkpoint (None: start from scratch)."""
    out = Path(spec.run.out)
    saved = out / SPEC_FILE
    if spec.run.resume:
        if not saved.is_file():
            raise UnimpError(f"{out}: nothing to resume (no {SPEC_FILE})")
        old = TrainSpec.model_validate_json(saved.read_text())
        if old.model_dump(exclude={"run"}) != spec.model_dump(exclude={"run"}):
            raise UnimpError(f"{out}: --resume needs the same model, data and optimizer settings as the run")
        found = ckpt.list_checkpoints(out)
        return out, (ckpt.load_checkpoint(found[-1][1]) if found else None)
    if saved.is_file() or (out / FINAL).exists():
        raise UnimpError(f"{out}: a run is already there; use --resume to continue it or another --out")
    return out, None


def _log(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _trim_log(path: Path, step: int) -> None:
    """On resume, forget log lines written after the checkpoint (they will be written again)."""
    if path.is_file():
        lines = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln).get("step", 0) <= step]
        from ..io import write_bytes_atomic

        write_bytes_atomic(path, ("\n".join(lines) + "\n" if lines else "").encode())


def validation_loss(model, loaders: dict[str, Any], gamma: float, accelerator) -> dict[str, float]:
    """Mean answer loss per task on the stored validation instances (answers appended)."""
    model.eval()
    out = {}
    with torch.no_grad():
        for task, loader in loaders.items():
            total = tokens = 0.0
            for batch in loader:
                with accelerator.autocast():
                    logits = model(vision_x=batch["vision_x"], lang_x=batch["input_ids"],
                                   attention_mask=batch["attention_mask"]).logits
                parts = answer_loss_parts(logits, batch["labels"], None, gamma)
                total += float(parts.sample_sums.sum())
                tokens += float(parts.sample_tokens.sum())
            out[task] = total / max(tokens, 1.0)
    model.train()
    return out


def run_train(spec: TrainSpec, progress: Progress | None = None) -> Path:
    """Train (or resume, or finetune) the run described by `spec`; returns the run folder."""
    progress = progress or Progress()
    accelerator = make_accelerator(spec, log_dir=spec.run.out)
    main = accelerator.is_main_process
    out, resume = _prepare_run_dir(spec)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(spec.run.seed)
    ds = load_dataset(spec.data.path)
    unknown = [t for t in spec.data.tasks if t not in TASK_NAMES]
    if unknown:
        raise UnimpError(f"data.tasks: {unknown} cannot train yet (known: {', '.join(TASK_NAMES)})")
    fresh = resume is None and not (out / "model.json").is_file()
    if main:
        spec.save(out / SPEC_FILE)
    setup = setup_model(spec, ds, out, fresh=fresh or (resume is None and spec.init_from is not None), progress=progress)
    bundle = setup.bundle
    model = bundle.model
    if resume is None and spec.init_from is not None and not fresh:
        ckpt.load_trainable(model, load_weights(spec.init_from), str(spec.init_from))
    progress.log(f"trainable parameters: {bundle.trainable:,} of {bundle.total:,}")

    # data
    n_epochs = max(1, math.ceil(spec.run.epochs)) if spec.run.max_steps is None else 10**9
    samples = TrainingSamples(ds, spec.data.tasks, spec.data.history_len, spec.run.seed,
                              curriculum=spec.data.curriculum, n_epochs=max(1, math.ceil(spec.run.epochs)))
    if len(samples) == 0:
        raise UnimpError(f"{ds.root}: no training samples for tasks {spec.data.tasks}")
    collate = make_collator(bundle.tokenizer, max_length=spec.data.max_tokens, padding_side="right",
                            images=setup.images, image_shape=setup.image_shape, task_weights=spec.data.task_weights)
    loader = torch.utils.data.DataLoader(samples, batch_size=spec.optim.batch_size, shuffle=False, collate_fn=collate,
                                         num_workers=spec.run.num_workers)
    valid = {}
    if spec.data.valid_users > 0:
        for task in spec.data.tasks:
            split = "valid"
            ev = [s.with_answer() for s in build_eval_samples(ds, task, split, spec.data.history_len)][: spec.data.valid_users]
            if ev:
                valid[task] = torch.utils.data.DataLoader(SampleDataset(ev), batch_size=spec.optim.batch_size,
                                                          collate_fn=collate)

    # optimisation
    optimizer = build_optimizer(model, spec.optim.lr, spec.optim.weight_decay)
    per_epoch = steps_per_epoch(len(samples), spec.optim.batch_size, accelerator.num_processes, spec.optim.grad_accum)
    total = spec.run.max_steps or max(1, round(spec.run.epochs * per_epoch))
    scheduler = build_scheduler(optimizer, total, spec.optim.warmup_ratio, spec.optim.schedule)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    valid = {t: accelerator.prepare(dl) for t, dl in valid.items()}

    step, epoch, skip = 0, 0, 0
    if resume is not None:
        state = resume["state"]
        ckpt.load_trainable(accelerator.unwrap_model(model), resume["weights"], "checkpoint")
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        step, epoch, skip = state["step"], state["epoch"], state["batch"]
        progress.log(f"resuming {out} at step {step} (epoch {epoch}, batch {skip})")
        if main:
            _trim_log(out / METRICS, step)
    if spec.run.trackers:
        accelerator.init_trackers(out.name, config={"lr": spec.optim.lr, "gamma": spec.optim.gamma})

    model.train()
    seen, started = 0, time.time()
    loss_window: list[float] = []
    with progress.task("training", total=total) as advance:
        advance(step)
        if resume is not None:
            ckpt.set_rng_state(resume["rng"])
        while step < total and epoch < n_epochs:
            samples.set_epoch(epoch)
            batches = accelerator.skip_first_batches(loader, skip) if skip else loader
            batch_index = skip
            for batch in batches:
                with accelerator.accumulate(model):
                    with accelerator.autocast():
                        logits = model(vision_x=batch["vision_x"], lang_x=batch["input_ids"],
                                       attention_mask=batch["attention_mask"]).logits
                    parts = answer_loss_parts(logits.float(), batch["labels"], batch["weights"], spec.optim.gamma)
                    accelerator.backward(parts.loss)
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(model.parameters(), spec.optim.grad_clip)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad()
                batch_index += 1
                seen += batch["input_ids"].shape[0] * accelerator.num_processes
                loss_window.append(float(parts.loss.detach()))
                if not accelerator.sync_gradients:
                    continue
                step += 1
                lr = scheduler.get_last_lr()[0]
                rate = seen / max(time.time() - started, 1e-9)
                advance(1, info=f"loss {sum(loss_window) / len(loss_window):.4f} lr {lr:.2e} {rate:.1f} samples/s")
                if main and (step % spec.run.log_every == 0 or step == total):
                    sums, counts = per_task(parts.sample_sums.detach(), parts.sample_tokens, batch["task_ids"],
                                            len(TASK_NAMES))
                    task_loss = {t: float(sums[i] / counts[i]) for i, t in enumerate(TASK_NAMES) if counts[i] > 0}
                    record = {"step": step, "epoch": epoch, "loss": sum(loss_window) / len(loss_window), "lr": lr,
                              "samples_per_s": rate, "task_loss": task_loss}
                    _log(out / METRICS, record)
                    accelerator.log({"train/loss": record["loss"], "train/lr": lr}, step=step)
                    loss_window = []
                if valid and (step % spec.run.eval_every == 0 or step == total):
                    vl = validation_loss(model, valid, spec.optim.gamma, accelerator)
                    if main:
                        _log(out / METRICS, {"step": step, "valid_loss": vl})
                        accelerator.log({f"valid/{k}": v for k, v in vl.items()}, step=step)
                        progress.log(f"step {step}: validation loss " + ", ".join(f"{k} {v:.4f}" for k, v in vl.items()))
                if step % spec.run.save_every == 0 and step < total:
                    accelerator.wait_for_everyone()
                    if main:
                        ckpt.save_checkpoint(out, step, accelerator.unwrap_model(model), optimizer, scheduler,
                                             {"epoch": epoch, "batch": batch_index}, spec.run.keep_last)
                if step >= total:
                    break
            else:
                epoch, skip = epoch + 1, 0
                continue
            break

    accelerator.wait_for_everyone()
    if main:
        ckpt.write_folder_atomic(out / FINAL, {
            ckpt.WEIGHTS: ckpt.trainable_state(accelerator.unwrap_model(model)),
            ckpt.STATE: {"step": step, "epoch": epoch, "seconds": round(time.time() - started, 1)},
        })
    accelerator.end_training()
    return out


def finetune_spec(source: Path, overrides: dict) -> TrainSpec:
    """`unimp finetune --from RUN`: the run's model and data, its weights, single task, constant schedule."""
    saved = Path(source) / SPEC_FILE
    if not saved.is_file():
        raise UnimpError(f"{source}: not a run folder (no {SPEC_FILE})")
    if not (Path(source) / FINAL).is_dir():
        raise UnimpError(f"{source}: the run has not finished (no {FINAL}/); resume it first")
    base = json.loads(saved.read_text())
    base["init_from"] = str(source)
    base["data"]["tasks"] = ["rec"]
    base["optim"]["schedule"] = "constant"
    base["run"] = {k: v for k, v in base["run"].items() if k in ("precision", "distributed", "seed")}
    from ..specs.base import _deep_merge, _drop_none

    merged = _deep_merge(base, _drop_none(overrides))
    try:
        return TrainSpec.model_validate(merged)
    except Exception as exc:
        from pydantic import ValidationError

        from ..specs.base import format_validation_error

        if isinstance(exc, ValidationError):
            raise UnimpError(format_validation_error(exc, "finetune options")) from exc
        raise


def remove_run(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
