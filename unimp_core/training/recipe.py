"""What every family's training recipe shares: the run folder's setup and the dataset it records.

A recipe (`Family.recipe`, in its family's package) has torchtune's shape, setup → train
→ save → cleanup; its setup starts the same way whatever the family:

    spec, ds = setup_dataset(spec, log)  # before the run folder is touched: a bad --data leaves nothing behind
    run = RunFolder(spec, out, accelerator, progress)  # the settled spec: the one saved and trained with
    fresh = setup_run_dir(run)           # refuse a used folder, or load the checkpoint --resume continues
    record_dataset(run, ds)              # dataset.json: evaluate, generate and --resume refuse a rebuilt dataset

Checkpoints, best/ and final/ are written through `unimp_core.training.checkpoint`; validation ranking and
early stopping through `unimp_core.training.selection`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .. import run_folder as RF
from ..data.store import Dataset, dataset_identity, load_dataset
from ..errors import UnimpError
from ..progress import Progress
from ..run_folder import SPEC_FILE
from ..specs.train import TrainSpec
from ..tasks import get_task, skipped_line, task_names, unsupported_tasks
from . import checkpoint as ckpt


@dataclass
class RunFolder:
    """The run being written: its spec, folder, accelerator (one process or several) and progress; `resume`
    holds the checkpoint a `--resume` continues from (`checkpoint.load_checkpoint`'s dict)."""

    spec: TrainSpec
    out: Path
    accelerator: Any
    progress: Progress
    resume: dict | None = None

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process


def spec_difference(old: TrainSpec, new: TrainSpec) -> str | None:
    """The first setting (outside `run`) that differs, as 'section.field: old vs new'."""
    def flat(d: dict, prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    a, b = flat(old.model_dump(mode="json", exclude={"run"})), flat(new.model_dump(mode="json", exclude={"run"}))
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            return f"{key}: {a.get(key)!r} vs {b.get(key)!r}"
    return None


def setup_run_dir(run: RunFolder) -> bool:
    """Check the run folder (every process), then write the spec (main). Returns whether the model
    is built fresh. New run: refuse an existing one. --resume: load the last checkpoint (none: start over)."""
    spec, out, acc = run.spec, run.out, run.accelerator
    saved = out / SPEC_FILE
    if spec.run.resume:
        if not saved.is_file():
            raise UnimpError(f"{out}: nothing to resume (no {SPEC_FILE})")
        diff = spec_difference(RF.read_train_spec(out), spec)
        if diff is not None:
            raise UnimpError(f"{out}: --resume needs the run's model, data and optimizer settings ({diff})")
        run.resume = ckpt.load_latest(out, run.progress.log)
    elif RF.holds_run(out):
        raise UnimpError(f"{out}: a run is already there; add --resume to continue it, or choose another --out")
    elif out.is_dir() and any(out.iterdir()):
        raise UnimpError(f"{out}: folder is not empty and holds no run; choose another --out")
    fresh = run.resume is None and not RF.has_model_meta(out)
    acc.wait_for_everyone()  # every process has looked before the main one writes
    if run.main:
        out.mkdir(parents=True, exist_ok=True)
        if spec.run.resume:
            ckpt.remove_stale(out)
            step = run.resume["state"]["step"] if run.resume else 0
            RF.trim_metrics(out, step)
        RF.write_train_spec(out, spec)
    acc.wait_for_everyone()
    return fresh


def record_dataset(run: RunFolder, ds: Dataset) -> None:
    """dataset.json: a resumed run must see the dataset it started on; a new run records it."""
    identity = dataset_identity(ds.manifest)
    if run.spec.run.resume:
        RF.check_dataset_identity(run.out, ds.root, identity)
    if run.main:
        RF.write_dataset_identity(run.out, Path(ds.root).resolve(), identity)
    run.accelerator.wait_for_everyone()


def _settle_tasks(spec: TrainSpec, ds: Dataset, log: Callable[[str], None]) -> TrainSpec:
    """`spec` with the tasks `ds` supports: tasks the dataset cannot support (no images, reviews or categories:
    they would teach nothing) are one error when named, and left out of the default task list (with one line
    saying so)."""
    cannot = unsupported_tasks(ds.items, ds.interactions)
    skipped = {t: cannot[t] for t in spec.data.tasks if t in cannot}
    kept = [t for t in spec.data.tasks if t not in skipped]
    if skipped and ("tasks" in spec.data.model_fields_set or not kept):
        why = "; ".join(f"{t}: {reason}" for t, reason in skipped.items())
        raise UnimpError(f"--tasks {','.join(skipped)}: {ds.root} cannot support this ({why}); "
                         f"its tasks: {', '.join(t for t in task_names() if t not in cannot)}")
    if not skipped:
        return spec
    log(f"training {', '.join(kept)}; {skipped_line(skipped)}")
    return spec.model_copy(update={"data": spec.data.model_copy(update={"tasks": kept})})


def setup_dataset(spec: TrainSpec, log: Callable[[str], None] | None = None) -> tuple[TrainSpec, Dataset]:
    """The dataset folder the run trains on, and the run's spec settled on it: its task list cut to what the
    dataset supports and each task's `configure` applied. The recipe saves and trains with that spec."""
    ds = load_dataset(spec.data.path)
    spec = _settle_tasks(spec, ds, log or Progress().log)
    for task in [get_task(t) for t in spec.data.tasks]:
        if task.configure is not None:
            spec = task.configure(spec, ds)
    return spec, ds
