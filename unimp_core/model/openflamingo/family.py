"""The OpenFlamingo model family (the paper's): a frozen vision tower and language model, a trained
Perceiver, gated cross-attention and embeddings; prompts are text with `<image>` markers.

The family interface is described in `unimp_core.model.families`; the model itself is built by
`unimp_core.model.openflamingo.factory`.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Mapping

from ...data.store import Dataset
from ...progress import Progress
from ...specs.train import TrainSpec
from ...tokens import ADDED_TOKEN_RE
from . import decode as decoder  # the tasks' decoders read logits, beams and generated text through it
from .factory import ModelBundle, build_model, load_bundle, save_bundle
from .mixins import reads_images
from ..packing import pack_right_padded

NAME = "openflamingo"


def tokenizer_texts(ds: Dataset, seed: int) -> Iterator[str]:
    """What the tiny BPE tokenizer learns from: the catalogue and reviews, and the prompt phrases
    (without the added tokens, which are whole tokens anyway)."""
    from ...tasks import BUILTIN_TASKS, build_training_samples
    from ..tokenizer import dataset_texts

    prompts = build_training_samples(ds, list(BUILTIN_TASKS), 5, seed, 0)[:2000]
    return itertools.chain(dataset_texts(ds), (ADDED_TOKEN_RE.sub(" ", s.text) for s in prompts))


def build(spec: TrainSpec, ds: Dataset, progress: Progress) -> ModelBundle:
    from ..item_ids import choose_item_ids, dataset_codes

    model = spec.model
    if model.item_ids == "auto":  # the recipe has resolved it; a spec built by hand (benchmarks) gets it here
        model = choose_item_ids(model, ds, progress.log)
        spec = spec.model_copy(update={"model": model})
    codes = dataset_codes(model, ds) if model.item_ids == "semantic" else None
    from ...data.attributes import item_attributes

    # semantic ids carry content in their codes (`tokenize-items`); attribute embeddings go on atomic ids
    attributes = item_attributes(ds) if model.item_attributes and model.item_ids == "atomic" else None
    if attributes is not None and not attributes[0]:
        attributes = None  # no item has any
    if attributes is not None:
        progress.log(f"item attributes: {len(attributes[0]):,} shared embeddings added to the item tokens")
    return build_model(spec.model, items_text=tokenizer_texts(ds, spec.run.seed), n_items=ds.items.height,
                       progress=progress, item_codes=codes, item_attributes=attributes)


def save(bundle: ModelBundle, run_dir: Path) -> None:
    save_bundle(bundle, run_dir)


def load(run_dir: Path, meta: dict[str, Any], progress: Progress) -> ModelBundle:
    return load_bundle(run_dir, progress=progress)


def inputs(bundle: ModelBundle, spec: TrainSpec, ds: Dataset, run_dir: Path,
           progress: Progress) -> tuple[Callable, tuple[int, ...]]:
    """item_id -> pixels (C, H, W); with `run.cache_vision_features` -> cached vision features (v, d),
    computed into the run folder once, and the model switched to take them (not for a model without
    cross-attention: nothing would read them)."""
    from ...run_folder import FEATURES
    from ..vision_cache import ItemImages, build_feature_cache, use_cached_features

    images = ItemImages(ds, bundle.image_transform)
    if not spec.run.cache_vision_features or not reads_images(bundle.model):
        return images, (3, bundle.image_size, bundle.image_size)
    features = build_feature_cache(bundle.model, ds, images, Path(run_dir) / FEATURES, progress=progress)
    use_cached_features(bundle.model)
    return features, features.shape


def collator(bundle: ModelBundle, images: Callable, image_shape: tuple[int, ...], max_length: int,
             padding_side: Literal["right", "left"] = "right", task_weights: Mapping[str, float] | None = None):
    from ...training.collate import make_collator

    return make_collator(bundle.tokenizer, max_length=max_length, padding_side=padding_side, images=images,
                         image_shape=image_shape, task_weights=task_weights)


def forward(model, batch: dict[str, Any], item_range: tuple[int, int] | None = None):
    """The logits the loss reads: at the label positions of a batch with labels (the head runs there only,
    `training.loss.label_positions` order), else (B, T, V). At the label positions: (N, V), or with
    `item_range` a `SplitLogits` whose item labels' rows are computed over the item tokens alone. A batch
    with labels is packed (`model.packing`) when the model can take it: the same logits for a fraction
    of the work."""
    from ...training.collate import IGNORE_INDEX
    from ...training.loss import SplitLogits, item_rows, label_positions

    labels = batch.get("labels")
    if labels is None:
        return model(vision_x=batch["vision_x"], lang_x=batch["input_ids"],
                     attention_mask=batch["attention_mask"]).logits
    at = label_positions(labels)  # (B, T)
    split = {}
    if item_range is not None:
        split = {"item_rows": item_rows(labels[:, 1:][labels[:, 1:] != IGNORE_INDEX], item_range),
                 "item_columns": item_range}
    if packs(model):
        packed = pack_right_padded(batch["input_ids"], batch["attention_mask"], pad=0)  # pad: its own segment, no label
        R = packed.input_ids.shape[0]
        logits = model(vision_x=batch["vision_x"][:R], lang_x=packed.input_ids, attention_mask=None,
                       position_ids=packed.position_ids, logits_at=packed.index[at], **split).logits
    else:
        logits = model(vision_x=batch["vision_x"], lang_x=batch["input_ids"], attention_mask=batch["attention_mask"],
                       logits_at=at, **split).logits
    return SplitLogits(*logits) if split else logits


def packs(model) -> bool:
    """Whether training batches can be packed: the model reads no images (packed rows would let a sample's
    text see the previous sample's image through cross-attention) and its LM is one of transformers' own
    (they take packed sequences as position_ids that restart; remote code may not)."""
    net = getattr(model, "module", model)  # DDP / DeepSpeed wrap the model
    if not hasattr(net, "_unimp_packs"):
        lm_classes = type(net.lang_encoder).__mro__
        net._unimp_packs = (not reads_images(net)
                            and any(c.__module__.startswith("transformers.models.") for c in lm_classes))
    return net._unimp_packs


def rank_scores(setup, model, samples, *, device, max_tokens: int, precision: str = "fp32"):
    """(B, N) CPU scores of every catalogue item for rec/search samples (see `batch_scores`)."""
    batch = decoder.to_device(setup.collator(max_tokens, padding_side="left")(list(samples)), device)
    return collated_scores(setup, model, batch, precision)


def collated_scores(setup, model, batch: dict[str, Any], precision: str = "fp32"):
    """(B, N) CPU scores of every catalogue item for an already collated, left-padded batch."""
    return batch_scores(setup.bundle, model, batch, precision, cold_items(setup))


def batch_scores(bundle: ModelBundle, model, batch: dict[str, Any], precision: str = "fp32", cold=None):
    """(B, N) CPU scores of every item for a left-padded batch of prompts ending at `<answer>`: the item
    tokens' logits (atomic ids), or each item's code-path log-probability (semantic ids, `tree.path_scores`;
    `cold`: the items never trained, `cold_items`, scored by their trained prefix)."""
    from . import tree

    ids = bundle.ids
    if ids.semantic:
        return tree.checked_path_scores(model, batch, tree.code_tree(ids.item_tokens), ids.item_tokens, precision,
                                        cold).cpu()
    return decoder.item_scores(decoder.answer_logits(model, batch, precision), ids.items).cpu()


def cold_items(setup):
    """Semantic ids: the dataset's items that no training history holds (`tree.ColdItems`), computed once
    per setup; None for atomic ids (an untrained item token cannot be helped) or when every item trained."""
    ids = setup.bundle.ids
    if not ids.semantic:
        return None
    if not hasattr(setup, "_cold_items"):
        import numpy as np

        from .tree import ColdItems
        from ...itemcodes.embed import training_histories

        trained = np.zeros(len(ids.item_tokens), dtype=bool)
        trained[training_histories(setup.dataset)[0]] = True
        setup._cold_items = ColdItems.build(ids.item_tokens.cpu().numpy(), trained)
    return setup._cold_items


def recipe(spec: TrainSpec, progress: Progress | None = None) -> Path:
    """Train (or resume, or finetune) the run `spec` describes; returns the run folder."""
    from .recipe import run_train_openflamingo

    return run_train_openflamingo(spec, progress)
