"""Model families: which kind of model a run is, and the module that builds, saves and loads it.

A run folder records its family in model.json (`unimp_core.run_folder.read_model_meta`); a new run
takes it from `spec.model.family`. Everything that turns a run into a model asks `family(name)`, so a
new family is one module plus one line in FAMILIES (and its spec class in `specs.model.MODEL_SPECS`).

A family module provides (see `unimp_core.model.openflamingo.family`, the reference):
    NAME                                        the family's name, as in FAMILIES and model.json
    build(spec: TrainSpec, ds, progress)        -> bundle: a fresh model for `ds`'s catalogue
    save(bundle, run_dir)                       writes model.json (run_folder.write_model_meta) and its own files
    load(run_dir, meta, progress)               -> bundle: the model rebuilt from the folder (weights: the caller's)
    inputs(bundle, spec, ds, run_dir, progress) -> (images, image_shape): what feeds items' pictures (None, () if none)
    collator(bundle, images, image_shape, max_length, padding_side, task_weights)
                                                -> collate_fn: a list of task Samples -> a batch dict of tensors
    forward(model, batch)                       -> the logits the loss reads: (B, T, V), or (N, V) at the
                                                   label positions only (training.loss.label_positions order)
    rank_scores(setup, model, samples, device=, max_tokens=, precision=)
                                                -> (B, N) CPU scores of every catalogue item for rec/search samples
    TASKS (optional)                            the tasks a run of the family can evaluate and generate (default: all)
A bundle has at least `.model` (an nn.Module whose trainable parameters are what checkpoints hold),
`.n_items` and `.spec`; a token-based family also `.tokenizer` and `.ids` (unimp_core.model.vocab.VocabIds).

No torch import here: the family modules are imported when asked for.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import UnimpError

FAMILIES: dict[str, str] = {
    "openflamingo": "unimp_core.model.openflamingo.family",
    "sasrec": "unimp_core.model.sasrec.family",
}


def family(name: str) -> ModuleType:
    """The module of model family `name` (an unknown one is a one-line error)."""
    try:
        path = FAMILIES[name]
    except KeyError:
        raise UnimpError(f"unknown model family {name!r} (known: {', '.join(FAMILIES)})") from None
    return importlib.import_module(path)
