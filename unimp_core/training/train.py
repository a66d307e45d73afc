"""`unimp train` / `unimp finetune`: the run's model family trains it with its own recipe.

A recipe (`unimp_core.model.families.Family.recipe`) has torchtune's shape, setup → train → save →
cleanup, and builds on what every recipe shares (`unimp_core.training.recipe`, `checkpoint`, `selection`).
"""

from __future__ import annotations

from pathlib import Path

from .. import run_folder as RF
from ..errors import UnimpError
from ..model.families import family
from ..progress import Progress
from ..specs.train import TrainSpec


def run_train(spec: TrainSpec, progress: Progress | None = None) -> Path:
    """Train (or resume, or finetune) the run described by `spec`; returns the run folder.

    One command writes a run folder at a time: a second one (a `--resume` started twice) fails at once."""
    out = Path(spec.run.out)
    if out.exists() and not out.is_dir():
        raise UnimpError(f"--out {out}: is a file, not a folder; name a folder for the run")
    with RF.writer_lock(out):
        return family(spec.model.family).recipe(spec, progress)
