"""Model families: which kind of model a run is, and the one table that finds a family by its name.

A run folder records its family in model.json (`unimp_core.run_folder.read_model_meta`); a new run takes
it from `spec.model.family`. Everything that trains, loads, evaluates, generates or serves a run asks
`family(name)` (the family's module) or `spec_class(name)` (its model spec); nothing else names a family.
A new family is one package under `unimp_core/model/` plus one line in FAMILIES (or, for a family defined
elsewhere, e.g. in a test, one `register` call).

No torch import here (specs read the table): a family's module is imported when asked for.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

from ..errors import UnimpError

DEFAULT_FAMILY = "openflamingo"  # what a spec without `model.family` builds


@runtime_checkable
class Family(Protocol):
    """What every model family provides (a module, or any object, with these names).

    A bundle has at least `.model` (an nn.Module whose trainable parameters are what checkpoints hold),
    `.n_items` and `.spec` (the family's model spec).

    Its model spec (`spec_class`) is a `unimp_core.specs.model.FamilySpec`: the training defaults and checks,
    the `unimp train` flags that apply and what `unimp evaluate` says the model read.

    Optional capabilities, looked up with `capability` (absent: the family does not have it):
        TASKS                    the tasks a run of the family can train, evaluate and generate (default: all)
        inputs(bundle, spec, ds, run_dir, progress) -> (images, image_shape)
                                 what feeds items' pictures (absent: none, `(None, ())`)
        collator(bundle, images, image_shape, max_length, padding_side, task_weights) -> collate_fn
        forward(model, batch, item_range)
                                 a token model's prompts -> batches -> the logits the loss reads (with
                                 `item_range`, item labels' rows over the item tokens alone: `training.loss.SplitLogits`)
        decoder                  a token model's decoding (`unimp_core.model.openflamingo.decode`'s functions:
                                 answer logits, beam search, text generation), read by the tasks' decoders
        collated_scores(setup, model, batch) -> (B, N) scores of a batch already collated (a token model's
                                 `answer` step for rec and search)
        history_window(bundle) -> int | None
                                 how many of the latest history items the model reads (None: the prompt's)
    """

    NAME: str

    # spec: a TrainSpec; ds: a data.store.Dataset; progress: a progress.Progress (not imported: specs read this table)
    def build(self, spec: Any, ds: Any, progress: Any) -> Any:
        """A fresh bundle for `ds`'s catalogue."""

    def save(self, bundle: Any, run_dir: Path) -> None:
        """Write model.json (`run_folder.write_model_meta`) and the family's own files."""

    def load(self, run_dir: Path, meta: dict[str, Any], progress: Any) -> Any:
        """The bundle rebuilt from the folder (its trainable weights are the caller's to load)."""

    def recipe(self, spec: Any, progress: Any = None) -> Path:
        """Train (or resume) the run `spec` describes (setup -> train -> save -> cleanup); the run folder."""

    def rank_scores(self, setup: Any, model: Any, samples: Sequence, *, device: Any, max_tokens: int | None,
                    precision: str = "fp32") -> Any:
        """(B, N) CPU scores of every catalogue item for rec/search samples."""


@dataclass(frozen=True)
class Entry:
    """Where a family lives: its module (a dotted path, imported when asked for, or the object itself)
    and its model spec class ("module:Class", torch-free, or the class itself)."""

    family: Any
    spec: Any


FAMILIES: dict[str, Entry] = {
    "openflamingo": Entry("unimp_core.model.openflamingo.family", "unimp_core.model.openflamingo.spec:ModelSpec"),
    "sasrec": Entry("unimp_core.model.sasrec.family", "unimp_core.model.sasrec.spec:SASRecSpec"),
}


def _entry(name: str) -> Entry:
    try:
        return FAMILIES[name]
    except KeyError:
        raise UnimpError(f"unknown model family {name!r} (known: {', '.join(FAMILIES)})") from None


def family(name: str) -> Family:
    """The module (or object) of model family `name` (an unknown one is a one-line error)."""
    found = _entry(name).family
    return importlib.import_module(found) if isinstance(found, str) else found


def spec_class(name: str) -> type:
    """The model spec class of family `name` (torch-free: specs validate with it)."""
    found = _entry(name).spec
    if isinstance(found, str):
        module, _, cls = found.partition(":")
        return getattr(importlib.import_module(module), cls)
    return found


def register(name: str, fam: Any, spec: type) -> None:
    """Add a family defined outside this table (a plugin, a test); `fam` provides `Family`."""
    if not isinstance(fam, Family):
        missing = [n for n in ("NAME", "build", "save", "load", "recipe", "rank_scores") if not hasattr(fam, n)]
        raise UnimpError(f"model family {name!r} lacks {', '.join(missing)}")
    FAMILIES[name] = Entry(fam, spec)


def unregister(name: str) -> None:
    FAMILIES.pop(name, None)


def capability(fam: Family, name: str) -> Any:
    """An optional capability of a family (see `Family`), or None."""
    return getattr(fam, name, None)
