"""Which item ids a run uses, atomic or semantic, and the semantic ids it keeps in its folder.

    choose_item_ids(model, ds, log)     a new run: `model.item_ids` auto -> atomic or semantic, codes recorded
    save_run_codes / load_run_codes     RUN/item_codes.npy: the code tuples the run was trained with

A semantic run keeps its own copy of the code tuples (its tokenizer's meaning), so evaluate, generate, serve
and finetune read them from the run folder: re-running `unimp tokenize-items` on the dataset later changes
nothing for runs trained before.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from .. import run_folder as RF
from ..errors import UnimpError
from ..io import write_bytes_atomic
from ..itemcodes.codes import CODES_FILE, MANIFEST_KEY, ItemCodes, has_item_codes, load_item_codes
from ..specs.model import AUTO_SEMANTIC_ITEMS, ItemCodesRecord

if TYPE_CHECKING:
    from ..data.store import Dataset
    from .openflamingo.spec import ModelSpec


def choose_item_ids(model: "ModelSpec", ds: "Dataset", log: Callable[[str], None]) -> "ModelSpec":
    """`model` with its `item_ids` resolved for a run on `ds` (its spec saves the result).

    auto is semantic only when the dataset has item codes and more than AUTO_SEMANTIC_ITEMS items (said in
    one line); an explicit semantic on a folder without codes is an error naming `unimp tokenize-items`.
    Semantic ids get `model.item_codes` from the dataset's manifest record, unless the spec has it already
    (a resumed or finetuned run, whose codes are in its run folder).
    """
    n_items, item_ids = ds.items.height, model.item_ids
    if item_ids == "auto":
        if n_items > AUTO_SEMANTIC_ITEMS and has_item_codes(ds):
            log(f"item ids: semantic ({n_items:,} items > {AUTO_SEMANTIC_ITEMS:,} and {ds.root} has item codes; "
                "--item-ids atomic for one token per item)")
            item_ids = "semantic"
        else:
            if n_items > AUTO_SEMANTIC_ITEMS:
                log(f"item ids: atomic, one token per item for {n_items:,} items (`unimp tokenize-items --data "
                    f"{ds.root}` makes semantic ids possible: the vocabulary then grows by codes, not items)")
            item_ids = "atomic"
    if item_ids == "atomic" or model.item_codes is not None:
        return model.model_copy(update={"item_ids": item_ids})
    if not has_item_codes(ds):
        raise UnimpError(f"--item-ids semantic: {ds.root} has no item codes; run `unimp tokenize-items --data "
                         f"{ds.root}` first")
    return model.model_copy(update={"item_ids": item_ids, "item_codes": _record(ds)})


def _record(ds: "Dataset") -> ItemCodesRecord:
    record = ds.manifest[MANIFEST_KEY]
    try:
        return ItemCodesRecord(levels=int(record["levels"]), codes=int(record["codes"]),
                               collision_codes=int(record["collision_codes"]), sha256=record.get("sha256"))
    except (KeyError, TypeError, ValueError) as exc:
        raise UnimpError(f"{ds.root}: unreadable item_codes record in manifest.json ({exc}); rerun "
                         f"`unimp tokenize-items --data {ds.root}`") from None


def dataset_codes(model: "ModelSpec", ds: "Dataset") -> ItemCodes:
    """The dataset's code tuples for a semantic model built fresh, checked against `model.item_codes`."""
    codes = load_item_codes(ds.root)
    if codes.n_items != ds.items.height:
        raise UnimpError(f"{ds.root / CODES_FILE}: codes for {codes.n_items} items, the catalogue has "
                         f"{ds.items.height}; rerun `unimp tokenize-items --data {ds.root}`")
    if model.item_codes is not None and model.item_codes != _record(ds):
        raise UnimpError(f"{ds.root}: its item codes are not the ones model.item_codes names (re-tokenized since "
                         "the spec was written?); leave model.item_codes out")
    return codes


def save_run_codes(run_dir: Path, codes: ItemCodes) -> None:
    """RUN/item_codes.npy: (N, levels + 1) int32, row i = item i's code tuple."""
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.asarray(codes.tuples, dtype=np.int32).reshape(codes.n_items, codes.levels + 1))
    write_bytes_atomic(Path(run_dir) / RF.ITEM_CODES, buffer.getvalue())


def load_run_codes(run_dir: Path, record: ItemCodesRecord, n_items: int) -> ItemCodes:
    """The code tuples a semantic run was trained with, checked against its model spec."""
    path = Path(run_dir) / RF.ITEM_CODES
    try:
        table = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UnimpError(f"{path}: missing or unreadable ({exc}); the run's semantic item ids are lost") from None
    limits = np.array([record.codes] * record.levels + [record.collision_codes])
    if (table.ndim != 2 or table.shape != (n_items, record.levels + 1) or (table < 0).any()
            or (table >= limits).any() or len(np.unique(table, axis=0)) != n_items):
        raise UnimpError(f"{path}: does not hold {n_items} distinct code tuples of {record.levels} levels of "
                         f"{record.codes} codes + {record.collision_codes} collision codes (damaged?)")
    return ItemCodes(record.levels, record.codes, record.collision_codes, tuple(map(tuple, table.tolist())))

