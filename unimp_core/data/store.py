"""The dataset folder: the one contract between `prepare` and everything that reads data.

Layout (names other steps rely on):
    manifest.json          schema version, sources, parameters, counts, image counts, skips
    prepare_spec.json      the resolved spec that produced the folder
    items.parquet          item_id, source_id, domain, title, brand, category, price, description, image_url, image,
                           attributes (list of tokens, null when none; `attributes.item_attributes` reads them)
    interactions.parquet   user_id, user_key, item_id, timestamp, rating, review, summary, explanation (time order per user)
    users.parquet          user_id, user_key, domain, length, split
    eval/<task>.parquet    evaluation instances drawn once (rec, search, exp, img_sel)
    images/<item_id>.jpg

A folder is complete only when manifest.json exists; it is written last, into a staging folder
that is renamed into place, so an interrupted run never leaves a folder that looks finished.
A command replaces a folder only when it is absent, empty, or a dataset folder holding nothing but
what unimp writes (`writing_dataset`); anything else is refused before any work.
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import polars as pl

from .. import __version__
from ..errors import UnimpError
from ..io import atomic_path, folder_lock, replacing_folder

log = logging.getLogger("unimp.data")

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
# the manifest's records of `unimp tokenize-images` and `unimp tokenize-items` (unimp_core.imagegen.codes,
# unimp_core.itemcodes.codes): adding codes does not make the folder another dataset (`dataset_identity`)
CODES_KEY = "image_tokens"
ITEM_CODES_KEY = "item_codes"
TABLES = ("items.parquet", "interactions.parquet", "users.parquet")
# Everything unimp writes into a dataset folder (prepare, filter-images, tokenize-images, tokenize-items); --overwrite
# replaces a folder only when it holds nothing else. Hidden `.NAME.*.tmp` and `.NAME.unimp-*` files are
# unimp's temporary names for these.
DATASET_ENTRIES = frozenset({
    MANIFEST, *TABLES, "eval", "images", "prepare_spec.json", "filter_images_spec.json",
    "vq", "image_codes.parquet", ".vq_train.pt", ".image_codes.parts",
    "item_codes.parquet", "tokenize_items_spec.json",
})

ITEMS_SCHEMA = {
    "item_id": pl.Int64, "source_id": pl.Utf8, "domain": pl.Utf8, "title": pl.Utf8, "brand": pl.Utf8,
    "category": pl.Utf8, "price": pl.Float64, "description": pl.Utf8, "image_url": pl.Utf8, "image": pl.Utf8,
    "attributes": pl.List(pl.Utf8),
}
INTERACTIONS_SCHEMA = {
    "user_id": pl.Int64, "user_key": pl.Utf8, "item_id": pl.Int64, "timestamp": pl.Int64, "rating": pl.Float64,
    "review": pl.Utf8, "summary": pl.Utf8, "explanation": pl.Utf8,
}
USERS_SCHEMA = {"user_id": pl.Int64, "user_key": pl.Utf8, "domain": pl.Utf8, "length": pl.Int64, "split": pl.Utf8}


@dataclass
class Dataset:
    """A dataset folder in memory."""

    items: pl.DataFrame
    interactions: pl.DataFrame
    users: pl.DataFrame
    instances: dict[str, pl.DataFrame]
    manifest: dict[str, Any] = field(default_factory=dict)
    root: Path | None = None


def _select(df: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return df.select([pl.col(c).cast(t) if c in df.columns else pl.lit(None, dtype=t).alias(c) for c, t in schema.items()])


def _write_parquet(df: pl.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.write_parquet(tmp)


def write_tables(root: Path, ds: Dataset) -> None:
    """Write the tables of `ds` under `root` (no manifest: the caller writes it last)."""
    root.mkdir(parents=True, exist_ok=True)
    _write_parquet(_select(ds.items, ITEMS_SCHEMA), root / "items.parquet")
    _write_parquet(_select(ds.interactions, INTERACTIONS_SCHEMA), root / "interactions.parquet")
    _write_parquet(_select(ds.users, USERS_SCHEMA), root / "users.parquet")
    (root / "eval").mkdir(exist_ok=True)
    for task, df in ds.instances.items():
        _write_parquet(df, root / "eval" / f"{task}.parquet")


def new_manifest(**fields: Any) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "unimp_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **fields,
    }


def _written_by_unimp(name: str) -> bool:
    if name in DATASET_ENTRIES:
        return True
    base = name[1:].split(".unimp-")[0] if ".unimp-" in name else name[1:].rsplit(".", 2)[0]
    return name.startswith(".") and base in DATASET_ENTRIES


def check_replaceable(out: Path, *, overwrite: bool, flag: str = "--out") -> None:
    """Refuse (one line, nothing touched) unless `out` is absent, an empty folder, or, with `overwrite`,
    a dataset folder that holds only what unimp writes. A symbolic link, a file, and the current folder
    (or one that contains it) are always refused."""
    if out.is_symlink():
        raise UnimpError(f"{flag} {out}: is a symbolic link; name the folder itself ({out.resolve()})")
    if out.exists() and not out.is_dir():
        raise UnimpError(f"{flag} {out}: is a file, not a folder")
    cwd = Path.cwd().resolve()
    if out.resolve() == cwd or out.resolve() in cwd.parents:
        raise UnimpError(f"{flag} {out}: is the current folder or contains it; name a folder outside it")
    if not out.exists():
        return
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return
    if not is_complete(out):
        raise UnimpError(f"{flag} {out}: folder is not empty and is not a unimp dataset folder (it holds "
                         f"{entries[0]!r}); name a new or empty folder")
    if not overwrite:
        raise UnimpError(f"{out}: a dataset is already there; pass --overwrite to rebuild it")
    foreign = [e for e in entries if not _written_by_unimp(e)]
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise UnimpError(f"{out}: holds {foreign[0]!r}{more}, which unimp did not write; move it out first "
                         "(replacing the folder would delete it)")


def check_outside(out: Path, inputs: dict[str, Any], flag: str = "--out") -> None:
    """Refuse an output folder equal to or inside one of the named input folders."""
    target = out.resolve()
    for name, folder in inputs.items():
        if folder is None:
            continue
        inside = Path(folder).resolve()
        if target == inside or inside in target.parents:
            raise UnimpError(f"{flag} {out}: is inside {name} {folder}; name a folder outside it")


@contextmanager
def writing_dataset(out: Path, *, overwrite: bool, flag: str = "--out") -> Iterator[Path]:
    """Check `out` may be replaced, lock it, and yield an empty staging folder that replaces `out` when the
    block ends normally (the block writes MANIFEST last). On any other exit, Ctrl-C included, nothing
    is left behind and `out` is untouched."""
    check_replaceable(out, overwrite=overwrite, flag=flag)
    with folder_lock(out), replacing_folder(out) as staging:
        check_replaceable(out, overwrite=overwrite, flag=flag)  # again: another run may have just published
        yield staging
        if not (staging / MANIFEST).is_file():
            raise RuntimeError(f"{staging}: no {MANIFEST} written; refusing to publish an incomplete folder")


def is_complete(path: Path) -> bool:
    """A unimp dataset folder: its manifest is there and carries a schema version."""
    try:
        return "schema_version" in json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError, TypeError):
        return False


def dataset_identity(manifest: dict[str, Any]) -> str:
    """A short hash of the manifest: changes whenever prepare or filter-images rewrites the folder (new
    items, ids, splits), not when tokenize-images or tokenize-items adds image or item codes."""
    import hashlib

    kept = {k: v for k, v in manifest.items() if k not in (CODES_KEY, ITEM_CODES_KEY)}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_manifest(root: str | os.PathLike) -> dict[str, Any]:
    root = Path(root)
    if not root.is_dir():
        raise UnimpError(f"{root}: dataset folder not found (run `unimp prepare` first)")
    path = root / MANIFEST
    if not path.is_file():
        raise UnimpError(f"{root}: not a complete dataset folder (no {MANIFEST}; rerun `unimp prepare`)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UnimpError(f"{path}: unreadable manifest: {exc}") from exc
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise UnimpError(
            f"{path}: dataset schema version {version}, this unimp reads {SCHEMA_VERSION}; rerun `unimp prepare`"
        )
    return manifest


def protocol_of(ds: Dataset) -> str:
    """The manifest's protocol (user-split or leave-one-out)."""
    protocol = ds.manifest.get("protocol")
    if protocol is None:
        where = ds.root / MANIFEST if ds.root is not None else MANIFEST
        raise UnimpError(f"{where}: no protocol: a dataset folder of unimp {ds.manifest.get('unimp_version', '?')} "
                         f"(schema version {ds.manifest.get('schema_version', '?')}); unimp {__version__} reads schema "
                         f"version {SCHEMA_VERSION} folders that record it; rerun `unimp prepare`")
    if protocol not in ("user-split", "leave-one-out"):
        raise UnimpError(f"manifest.json: unknown protocol {protocol!r} (expected user-split or leave-one-out)")
    return protocol


def training_lengths(ds: Dataset) -> dict[int, int]:
    """What counts as training data, the one rule every reader follows: user_id -> how many of the user's
    first interactions (time order) training may see, for the users with at least one, by user_id.

    Leave-one-out: each history minus its last two items (the validation and test targets). User-split:
    the whole history of every user whose split is "train"; the valid and test users' are never seen.
    """
    lengths = ds.interactions.group_by("user_id").len()
    if protocol_of(ds) == "leave-one-out":
        lengths = lengths.with_columns(pl.col("len") - 2)
    else:
        train = ds.users.filter(pl.col("split") == "train")["user_id"]
        lengths = lengths.filter(pl.col("user_id").is_in(train.implode()))
    lengths = lengths.filter(pl.col("len") > 0).sort("user_id")
    return dict(zip(lengths["user_id"].to_list(), lengths["len"].to_list()))


def _read_table(path: Path, schema: dict[str, pl.DataType] | None = None) -> pl.DataFrame:
    """One parquet table of the folder; a missing, corrupt or incomplete one is a one-line error naming it."""
    try:
        df = pl.read_parquet(path)
    except FileNotFoundError:
        raise UnimpError(f"{path}: missing from the dataset folder; rerun `unimp prepare`") from None
    except Exception as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnimpError(f"{path}: unreadable ({detail}); rerun `unimp prepare`") from None
    missing = [c for c in (schema or {}) if c not in df.columns]
    if missing:
        raise UnimpError(f"{path}: column(s) {', '.join(missing)} missing; rerun `unimp prepare`")
    return df


def _images_inside(items: pl.DataFrame, root: Path) -> pl.DataFrame:
    """`items` with every image path that leaves the folder (`../x`, `/etc/x`: a tampered items.parquet)
    read as no image, so that training, generating and serving all treat the item alike: shown and
    modelled without a picture, never reading outside the folder (one warning names the first)."""
    rels = items["image"]
    suspect = rels.str.starts_with("/") | rels.str.contains(r"(^|/)\.\.(/|$)")  # cheap: most folders have none
    outside = [(i, rel) for i, rel in zip(items["item_id"].filter(suspect), rels.filter(suspect))
               if os.path.isabs(rel) or os.path.normpath(rel).split(os.sep)[0] == os.pardir]
    if not outside:
        return items
    log.warning("%s: %d item(s) name an image outside the folder (item %d: %r); read without an image",
                root / "items.parquet", len(outside), *outside[0])
    outside_ids = [i for i, _ in outside]
    return items.with_columns(pl.when(pl.col("item_id").is_in(outside_ids)).then(None).otherwise(pl.col("image"))
                              .alias("image"))


def load_dataset(root: str | os.PathLike) -> Dataset:
    """Read a complete dataset folder (checks the schema version, the tables' columns and that item ids
    are 0..N-1 in order, which everything downstream indexes by; an image path that leaves the folder
    is read as no image)."""
    root = Path(root)
    manifest = read_manifest(root)
    instances = {p.stem: _read_table(p) for p in sorted((root / "eval").glob("*.parquet"))}
    items = _read_table(root / "items.parquet", ITEMS_SCHEMA)
    interactions = _read_table(root / "interactions.parquet", INTERACTIONS_SCHEMA)
    n, used = items.height, interactions["item_id"].cast(pl.Int64, strict=False)
    if items["item_id"].cast(pl.Int64, strict=False).to_list() != list(range(n)) or (
            used.null_count() or (used.len() and not 0 <= used.min() <= used.max() < n)):
        raise UnimpError(f"{root}: item ids are not 0..{n - 1} throughout items.parquet and interactions.parquet; "
                         "rerun `unimp prepare`")
    return Dataset(
        items=_images_inside(items, root),
        interactions=interactions,
        users=_read_table(root / "users.parquet", USERS_SCHEMA),
        instances=instances,
        manifest=manifest,
        root=root,
    )

