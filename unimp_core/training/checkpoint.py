"""Run-folder checkpoints: trainable weights, optimizer, scheduler, RNG states, data position.

A checkpoint is written into a hidden temporary folder and renamed to `checkpoints/step-N` only when
complete, so a run killed at any moment (SIGKILL included) leaves either the previous checkpoints or
the new one, never a half-written one that looks usable.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UnimpError

STEP_RE = re.compile(r"^step-(\d+)$")
STATE = "state.json"
WEIGHTS = "trainable.pt"


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Only the parameters that train (the frozen backbone is rebuilt from the spec)."""
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: torch.nn.Module, weights: dict[str, torch.Tensor], origin: str) -> None:
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in weights]
    unknown = [n for n in weights if n not in params]
    if unknown or missing:
        bad = (unknown or missing)[0]
        raise UnimpError(f"{origin}: weights do not fit this model ({len(unknown)} unknown, {len(missing)} missing, e.g. {bad})")
    with torch.no_grad():
        for name, value in weights.items():
            if params[name].shape != value.shape:
                raise UnimpError(f"{origin}: {name} has shape {tuple(value.shape)}, the model {tuple(params[name].shape)}")
            params[name].copy_(value)


def rng_state() -> dict[str, Any]:
    """RNG states as tensors and plain values, so they load with torch's weights_only loader."""
    version, keys, pos = random.getstate()
    kind, np_keys, np_pos, has_gauss, gauss = np.random.get_state()
    return {"python": (version, torch.tensor(keys, dtype=torch.int64), pos),
            "numpy": (kind, torch.from_numpy(np_keys.astype(np.int64)), np_pos, has_gauss, gauss),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict[str, Any]) -> None:
    version, keys, pos = state["python"]
    random.setstate((version, tuple(int(k) for k in keys.tolist()), pos))
    kind, np_keys, np_pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np_keys.numpy().astype(np.uint32), np_pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    folder = Path(run_dir) / "checkpoints"
    found = []
    if folder.is_dir():
        for p in folder.iterdir():
            m = STEP_RE.match(p.name)
            if m and (p / STATE).is_file():
                found.append((int(m.group(1)), p))
    return sorted(found)


def write_folder_atomic(dest: Path, files: dict[str, Any]) -> None:
    """Write {name: tensor-dict | json-able | callable(path)} into `dest` through a temporary folder."""
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
    # fsync the files so a power cut cannot leave a renamed but empty checkpoint
    for p in tmp.iterdir():
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    old = dest.parent / f".{dest.name}.old"
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    if old.exists():
        shutil.rmtree(old)


def save_checkpoint(run_dir: Path, step: int, model, optimizer, scheduler, position: dict, keep_last: int,
                    extra: dict | None = None) -> Path:
    """Save everything needed to continue exactly; keep only the last `keep_last` checkpoints."""
    dest = Path(run_dir) / "checkpoints" / f"step-{step}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_folder_atomic(dest, {
        WEIGHTS: trainable_state(model),
        "optimizer.pt": optimizer.state_dict(),
        "scheduler.pt": scheduler.state_dict(),
        "rng.pt": rng_state(),
        STATE: {"step": step, **position, **(extra or {})},
    })
    for _, old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return dest


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint folder (weights_only loading: a checkpoint is data, never code)."""
    path = Path(path)
    if not (path / STATE).is_file():
        raise UnimpError(f"{path}: not a complete checkpoint (no {STATE})")
    out = {"state": json.loads((path / STATE).read_text()),
           "weights": torch.load(path / WEIGHTS, map_location="cpu", weights_only=True)}
    for name in ("optimizer", "scheduler"):
        f = path / f"{name}.pt"
        out[name] = torch.load(f, map_location="cpu", weights_only=True) if f.is_file() else None
    rng = path / "rng.pt"
    out["rng"] = torch.load(rng, map_location="cpu", weights_only=True) if rng.is_file() else None
    return out
