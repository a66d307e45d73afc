"""Run-folder checkpoints: trainable weights, optimizer, scheduler, RNG states, data position.

A checkpoint is written into a hidden temporary folder and renamed to `checkpoints/step-N` only when
complete, so a run killed at any moment (SIGKILL included) leaves either the previous checkpoints or
the new one, never a half-written one that looks usable.

    checkpoints/step-N/
        trainable.pt     {name: tensor} of the parameters that train (the frozen backbone is rebuilt)
        optimizer.pt     the optimizer's state_dict (one process, DDP; see optimizer_shards/ otherwise)
        scheduler.pt     the LR scheduler's state_dict
        rng.pt           python / numpy / torch (/ cuda) RNG states
        average.pt       the moving average of the weights (optim.average_epochs; training.averaging)
        state.json       {"step", "epoch", "batch", ...}: where the data stream resumes
        optimizer_shards/ (DeepSpeed, FSDP) each process's share of the optimizer state (DeepSpeed: its engine checkpoint)
        checksums.json   every file's size and sha256, written last: a checkpoint damaged later (a cut-off
                         copy, a bad disk) is recognised before use, and --resume falls back to an older one
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import UnimpError, first_line
from ..io import verify_checksums, write_checksums
from ..run_folder import (AVERAGE, BEST, CHECKPOINTS, CHECKSUMS, FINAL, OPTIMIZER, RNG, SCHEDULER, STATE, WEIGHTS, checkpoint_dir,
                          list_checkpoints)



def rng_state() -> dict[str, Any]:
    """RNG states as tensors and plain values, so they load with torch's weights_only loader."""
    version, keys, pos = random.getstate()
    kind, np_keys, np_pos, has_gauss, gauss = np.random.get_state()
    return {"python": (version, torch.tensor(keys, dtype=torch.int64), pos),
            "numpy": (kind, torch.from_numpy(np_keys.astype(np.int64)), np_pos, has_gauss, gauss),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    version, keys, pos = state["python"]
    random.setstate((version, tuple(int(k) for k in keys.tolist()), pos))
    kind, np_keys, np_pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np_keys.numpy().astype(np.uint32), np_pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def remove_stale(run_dir: Path) -> None:
    """Delete the temporary folders a killed save left behind (`.step-N.tmp`, `.final.old`, ...)."""
    run_dir = Path(run_dir)
    for folder in (run_dir, run_dir / CHECKPOINTS):
        if folder.is_dir():
            for p in folder.iterdir():
                if p.name.startswith(".") and p.name.endswith((".tmp", ".old", ".shards")) and p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_folder_atomic(dest: Path, files: dict[str, Any]) -> None:
    """Write {name: tensor-dict | json-able | callable(path)} into `dest` through a temporary folder.

    `*.json` names are written as JSON, other values with torch.save, callables are called with the
    path to fill (e.g. to move a folder there).
    """
    dest = Path(dest)
    tmp = dest.parent / f".{dest.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for name, content in files.items():
        path = tmp / name
        if callable(content):
            content(path)
        elif name.endswith(".json"):
            path.write_text(json.dumps(content, indent=2, default=str))
        else:
            torch.save(content, path)
    write_checksums(tmp, CHECKSUMS)
    # fsync the files so a power cut cannot leave a renamed but empty checkpoint
    for p in tmp.iterdir():
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(tmp)
    old = dest.parent / f".{dest.name}.old"
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    _fsync_dir(dest.parent)
    if old.exists():
        shutil.rmtree(old)


def save_checkpoint(run_dir: Path, step: int, files: dict[str, Any], keep_last: int) -> Path:
    """Write `checkpoints/step-<step>` atomically from `files` (as `write_folder_atomic` takes them;
    STATE among them), then keep only the last `keep_last` checkpoints."""
    if STATE not in files:
        raise ValueError(f"a checkpoint needs {STATE}")
    dest = Path(run_dir) / CHECKPOINTS / f"step-{step}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_folder_atomic(dest, files)
    for _, old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return dest


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint folder (weights_only loading: a checkpoint is data, never code), after checking
    every file against checksums.json.

    Returns {"path", "state", "weights", "optimizer", "scheduler", "rng", "average"} (None for absent parts).
    """
    path = Path(path)
    if not (path / STATE).is_file():
        raise UnimpError(f"{path}: not a complete checkpoint (no {STATE})")
    damage = verify_checksums(path, CHECKSUMS)
    if damage:
        raise UnimpError(f"{path}: damaged checkpoint: {damage}")

    def load(name: str):
        f = path / name
        if not f.is_file():
            return None
        try:
            return torch.load(f, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise UnimpError(f"{f}: unreadable checkpoint file ({first_line(exc)})") from exc

    weights = load(WEIGHTS)
    if weights is None:
        raise UnimpError(f"{path}: not a complete checkpoint (no {WEIGHTS})")
    try:
        state = json.loads((path / STATE).read_text())
        state = {**state, "step": int(state["step"]), "epoch": int(state["epoch"]), "batch": int(state["batch"])}
    except Exception as exc:
        raise UnimpError(f"{path / STATE}: unreadable checkpoint state ({first_line(exc)})") from None
    return {"path": path, "state": state, "weights": weights,
            "optimizer": load(OPTIMIZER), "scheduler": load(SCHEDULER), "rng": load(RNG),
            "average": load(AVERAGE)}


def load_latest(run_dir: Path, log: Callable[[str], None]) -> dict[str, Any] | None:
    """The newest checkpoint of a run that loads intact (None when the run has none). A damaged one is
    skipped, saying so through `log`; when every one is damaged the error names them all."""
    found = list_checkpoints(run_dir)
    damaged: list[str] = []
    for _, path in reversed(found):
        try:
            loaded = load_checkpoint(path)
        except UnimpError as exc:
            damaged.append(str(exc))
            continue
        if damaged:
            log(f"{'; '.join(damaged)}; resuming from {path.name}, the newest intact checkpoint")
        return loaded
    if damaged:
        raise UnimpError(f"{run_dir}: no intact checkpoint to resume from ({'; '.join(damaged)})")
    return None


def write_best(run_dir: Path, weights: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    """`best/`: the weights of the best validation so far (`selection.Selection.best_state` says where)."""
    write_folder_atomic(checkpoint_dir(run_dir, BEST), {WEIGHTS: weights, STATE: state})


def write_final(run_dir: Path, weights: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    """`final/`: the weights the run ended with and where it ended (`state`: step, epoch, early_stopped, ...)."""
    write_folder_atomic(Path(run_dir) / FINAL, {WEIGHTS: weights, STATE: state})
