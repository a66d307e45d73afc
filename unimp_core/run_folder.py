"""The run folder: the one contract between `train` and everything that reads a run (no torch import).

Layout (every name other steps rely on is defined here):
    train_spec.json        the resolved TrainSpec (model, data, optim, run)
    model.json             {"family", "spec", "n_items", "unimp_version"}: what rebuilds the model (see unimp_core.model.families)
    tokenizer/             the (extended) tokenizer of a token-based family
    item_codes.npy         semantic item ids: every item's code tuple (N, levels + 1) int32, as trained
    vision_features.npy    --cache-vision-features: every item's frozen vision features
    metrics.jsonl          one JSON line per logged step (training losses, validation losses, valid rank metrics)
    dataset.json           {"folder", "identity"}: the dataset trained on (evaluate/generate refuse another)
    checkpoints/step-N/    trainable.pt, optimizer.pt, scheduler.pt, rng.pt, state.json[, optimizer_shards/],
                           checksums.json (every file's size and sha256, checked before it is used)
    best/                  trainable.pt, state.json, checksums.json: the weights with the best valid rank metric
                           (the default checkpoint of evaluate and generate; unimp_core.training.selection)
    final/                 trainable.pt, state.json, checksums.json: the weights a finished run ends with
    evaluations/<name>/    metrics.json, report.html, predictions/<task>.jsonl[, images/]: one per evaluation protocol

Checkpoint and final folders are written atomically (unimp_core.training.checkpoint); a run is
finished when final/trainable.pt exists.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import UnimpError, first_line
from .io import write_bytes_atomic, write_json_atomic

if TYPE_CHECKING:
    from .specs.train import TrainSpec

SPEC_FILE = "train_spec.json"
MODEL_META = "model.json"
DATASET = "dataset.json"
TOKENIZER_DIR = "tokenizer"
FEATURES = "vision_features.npy"
ITEM_CODES = "item_codes.npy"  # semantic item ids (unimp_core.model.item_ids)
METRICS = "metrics.jsonl"
FINAL = "final"
BEST = "best"  # the weights with the best validation metric (unimp_core.training.selection)
CHECKPOINTS = "checkpoints"
STEP_RE = re.compile(r"^step-(\d+)$")

# inside checkpoints/step-N/ and final/
STATE = "state.json"
WEIGHTS = "trainable.pt"
OPTIMIZER = "optimizer.pt"
SCHEDULER = "scheduler.pt"
RNG = "rng.pt"
AVERAGE = "average.pt"  # optim.average_epochs: the moving average of the weights (training.averaging)
SHARDS_DIR = "optimizer_shards"
CHECKSUMS = "checksums.json"

# inside evaluations/<name>/
EVALUATIONS = "evaluations"
EVAL_METRICS = "metrics.json"
EVAL_REPORT = "report.html"  # `unimp report` on this evaluation (unimp_core.report)
PREDICTIONS = "predictions"
IMAGES = "images"  # img_gen: generated|true PNG pairs


def older_run(path: Path, missing: str) -> UnimpError:
    """The one error for a run folder this unimp did not write: what it lacks, and what to do."""
    return UnimpError(f"{path}: {missing}: a run folder from an unimp older than {__version__}, which reads only "
                      "the run folders it writes; train the run again")


# --------------------------------------------------------------------------------------------- spec


def read_train_spec(run: Path) -> "TrainSpec":
    """The run's saved TrainSpec (its model, dataset and prompt settings)."""
    from .specs.train import TrainSpec

    saved = Path(run) / SPEC_FILE
    if not saved.is_file():
        raise UnimpError(f"{run}: not a run folder (no {SPEC_FILE}; train one with `unimp train`)")
    try:
        spec = TrainSpec.model_validate(json.loads(saved.read_text()))
    except Exception as exc:
        raise UnimpError(f"{saved}: unreadable run spec: {first_line(exc)}") from exc
    if getattr(spec.model, "item_ids", None) == "auto":  # training names the item ids before it saves the spec
        raise older_run(saved, "its item ids are not named (auto)")
    return spec


def read_train_spec_dict(run: Path) -> dict[str, Any]:
    """The saved spec as plain JSON (what a finetune starts from before its overrides)."""
    saved = Path(run) / SPEC_FILE
    if not saved.is_file():
        raise UnimpError(f"{run}: not a run folder (no {SPEC_FILE})")
    try:
        spec = json.loads(saved.read_text())
    except json.JSONDecodeError as exc:
        raise UnimpError(f"{saved}: unreadable ({exc})") from exc
    model = spec.get("model") if isinstance(spec, dict) else None
    if isinstance(model, dict) and model.get("item_ids") == "auto":
        raise older_run(saved, "its item ids are not named (auto)")
    return spec


def write_train_spec(run: Path, spec: "TrainSpec") -> None:
    spec.save(Path(run) / SPEC_FILE)


def dataset_folder(run: Path, train_spec: "TrainSpec", data: Path | None = None) -> Path:
    """`data` if given, else the dataset folder the run was trained on (which must still exist)."""
    folder = Path(data) if data is not None else Path(train_spec.data.path)
    if not folder.is_dir():
        where = "--data" if data is not None else f"{run}/{SPEC_FILE}: its dataset"
        raise UnimpError(f"{where} folder {folder} is not there; pass the dataset folder with --data")
    return folder


def write_dataset_identity(run: Path, folder: Path, identity: str) -> None:
    """dataset.json: which dataset the run trains on (its folder and `store.dataset_identity`)."""
    write_json_atomic(Path(run) / DATASET, {"folder": str(folder), "identity": identity})


def check_dataset_identity(run: Path, folder: Path, identity: str) -> None:
    """Refuse a dataset other than the one the run was trained on (a rebuilt or re-indexed one gives
    item ids another meaning)."""
    path = Path(run) / DATASET
    if not path.is_file():
        raise older_run(Path(run), f"no {DATASET} (which dataset it was trained on)")
    try:
        recorded = json.loads(path.read_text())
        then = recorded["identity"]
    except Exception as exc:
        raise UnimpError(f"{path}: unreadable: {first_line(exc)}") from exc
    if then != identity:
        raise UnimpError(f"{folder}: not the dataset {run} was trained on (that was {recorded.get('folder')}, "
                         f"identity {then}; this one is {identity}: rebuilt or changed since); pass the run's "
                         "dataset with --data, or train again")


# --------------------------------------------------------------------------------------- model meta


def write_model_meta(run: Path, family: str, spec: dict[str, Any], n_items: int) -> None:
    """model.json: which model family, its spec (JSON) and the catalogue size (and the unimp that wrote it)."""
    write_json_atomic(Path(run) / MODEL_META, {"family": family, "spec": spec, "n_items": int(n_items),
                                               "unimp_version": __version__})


def has_model_meta(run: Path) -> bool:
    return (Path(run) / MODEL_META).is_file()


def read_model_meta(run: Path) -> dict[str, Any]:
    """model.json as {"family", "spec", "n_items"}."""
    path = Path(run) / MODEL_META
    if not path.is_file():
        raise UnimpError(f"{run}: not a run folder (no {MODEL_META})")
    try:
        meta = json.loads(path.read_text())
        out = {"family": meta.get("family"), "spec": meta["spec"], "n_items": int(meta["n_items"])}
    except Exception as exc:
        raise UnimpError(f"{path}: unreadable: {first_line(exc)}") from exc
    if out["family"] is None:
        raise older_run(path, "no model family")
    return out


def tokenizer_dir(run: Path) -> Path:
    return Path(run) / TOKENIZER_DIR


# ------------------------------------------------------------------------------------- metrics log


def append_metrics(run: Path, record: dict[str, Any]) -> None:
    """One line of metrics.jsonl (training losses, validation losses, ...)."""
    with open(Path(run) / METRICS, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_metrics(run: Path) -> list[dict[str, Any]]:
    path = Path(run) / METRICS
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.is_file() else []


def trim_metrics(run: Path, step: int) -> None:
    """On resume, forget the lines written after the checkpoint at `step` (they will be written again)."""
    path = Path(run) / METRICS
    if path.is_file():
        lines = [ln for ln in path.read_text().splitlines() if ln.strip() and _line_step(ln) <= step]
        write_bytes_atomic(path, ("\n".join(lines) + "\n" if lines else "").encode())


def _line_step(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return 1 << 62  # a torn last line (killed mid-write) goes


# -------------------------------------------------------------------------------------- checkpoints


def list_checkpoints(run: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run as (step, folder), oldest first."""
    folder = Path(run) / CHECKPOINTS
    found = []
    if folder.is_dir():
        for p in folder.iterdir():
            m = STEP_RE.match(p.name)
            if m and (p / STATE).is_file():
                found.append((int(m.group(1)), p))
    return sorted(found)


def checkpoint_dir(run: Path, name: str) -> Path:
    """The folder of checkpoint `name` ("final", "best" or "step-N"), whether or not it exists."""
    run = Path(run)
    return run / name if name in (FINAL, BEST) else run / CHECKPOINTS / name


def weights_file(run: Path, name: str = FINAL) -> Path:
    """The trainable weights of checkpoint `name`. A checkpoint that is not there names the ones there are;
    one that is there without its weights is named as damaged (never replaced by another)."""
    path = checkpoint_dir(run, name) / WEIGHTS
    if path.parent.is_dir() and not path.is_file():
        others = [n for n in checkpoint_names(run) if n != name and (checkpoint_dir(run, n) / WEIGHTS).is_file()]
        raise UnimpError(f"{path.parent}: damaged checkpoint: {WEIGHTS} is missing"
                         + (f" (--checkpoint picks another: {', '.join(others)})" if others else ""))
    if not path.is_file():
        raise UnimpError(f"{path.parent}: no such checkpoint (have: {', '.join(checkpoint_names(run)) or 'none'})")
    return path


def checkpoint_names(run: Path) -> list[str]:
    """The checkpoints a run has, oldest first, then "best" and "final"."""
    run = Path(run)
    return [p.name for _, p in list_checkpoints(run)] + [n for n in (BEST, FINAL) if (run / n).is_dir()]


def default_checkpoint(run: Path) -> str:
    """What evaluate and generate use when no --checkpoint is given: "best" when the run kept one (its
    folder is there, whole or damaged: a damaged best/ is refused, not swapped for final/), else "final"."""
    return BEST if (Path(run) / BEST).is_dir() else FINAL


def best_record(run: Path) -> dict[str, Any] | None:
    """best/state.json: the step and validation value that made it the best (None when there is no best/)."""
    path = Path(run) / BEST / STATE
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except json.JSONDecodeError:
        return None


def is_finished(run: Path) -> bool:
    return (Path(run) / FINAL / WEIGHTS).is_file()


def writer_lock(folder: Path):
    """`folder_lock(folder)`, held by the main process: the processes of one `accelerate launch` are one
    writer, and a second command writing `folder` fails at once with one line naming the first."""
    import os
    from contextlib import nullcontext

    from .io import folder_lock

    return folder_lock(folder) if os.environ.get("RANK", "0") == "0" else nullcontext()


def holds_run(run: Path) -> bool:
    """A run is there: its spec, the first thing a run writes (a folder of the user's that merely has a
    `checkpoints/` or `final/` subfolder is not a run, and `--resume` could not continue it)."""
    return (Path(run) / SPEC_FILE).is_file()


# -------------------------------------------------------------------------------------- evaluations


def evaluation_dir(run: Path, name: str) -> Path:
    return Path(run) / EVALUATIONS / name


def predictions_file(out_dir: Path, task: str) -> Path:
    return Path(out_dir) / PREDICTIONS / f"{task}.jsonl"


def read_evaluation(out_dir: Path) -> dict[str, Any] | None:
    """An evaluation folder's metrics.json (None when absent or unreadable)."""
    path = Path(out_dir) / EVAL_METRICS
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return report if isinstance(report, dict) else None


def write_evaluation(out_dir: Path, report: dict[str, Any]) -> None:
    write_json_atomic(Path(out_dir) / EVAL_METRICS, report)
