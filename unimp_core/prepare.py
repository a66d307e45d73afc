"""`unimp prepare`: source → order → k-core → re-index → split → eval instances → images → folder."""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Collection

import numpy as np
import polars as pl

from .data import images as image_io
from .data import process
from .data.attributes import attribute_counts
from .data.fetch import mirror_folder
from .data.raw import RawData
from .data.sources import load_source
from .data.store import MANIFEST, Dataset, check_outside, check_replaceable, new_manifest, write_tables, writing_dataset
from .errors import UnimpError
from .io import write_json_atomic
from .progress import Progress
from .specs.data import PrepareSpec
from .tasks import TASKS, unsupported_tasks

# The reason for the rows the k-core removes, in the manifest's `rows.skipped`.
KCORE = "below the k-core (--user-core/--item-core)"


def attach_explanations(inter: pl.DataFrame, spec: PrepareSpec) -> tuple[pl.DataFrame, str]:
    """Explanation targets: the given P5/Sentires file, else the review summary."""
    if spec.explanations is None:
        return inter.with_columns(pl.coalesce("explanation", "summary").alias("explanation")), "review summary"
    from .data.explanations import load_explanations

    exp = load_explanations(spec.explanations).unique(subset=["raw_user", "source_id"], keep="first")
    inter = inter.with_columns(pl.col("user_key").str.splitn(":", 2).struct.field("field_1").alias("raw_user"))
    inter = inter.drop("explanation").join(exp, on=["raw_user", "source_id"], how="left").drop("raw_user")
    return inter, f"explanation file {Path(spec.explanations).name}"


def build_dataset(raw: RawData, spec: PrepareSpec, keep_splits: pl.DataFrame | None = None) -> tuple[Dataset, dict]:
    """Everything between a source's raw tables and the folder, minus images and the evaluation instances
    (`draw_instances`, once the images are placed). Returns (dataset, counts).

    `keep_splits` (user_key, split) re-uses an existing split and order (filter-images).
    """
    before = {"interactions": raw.interactions.height, "items": raw.items.height}
    row_skips = Counter(raw.row_skips)
    inter = process.order_interactions(raw.interactions, spec.seed, row_skips, tie_break=keep_splits is None)
    if inter.height == 0:
        reasons = "; ".join(f"{k}: {v}" for k, v in row_skips.most_common())
        raise UnimpError(f"no interactions to prepare: all {raw.read} rows read were skipped ({reasons or 'empty'})")
    ordered = inter.height
    inter = process.kcore(inter, spec.user_core, spec.item_core)
    if inter.height == 0:
        raise UnimpError(
            f"no interactions left after the {spec.user_core}/{spec.item_core} k-core "
            f"(from {ordered}); lower --user-core/--item-core"
        )
    lines_skipped = raw.skipped + row_skips  # every line of every input file that was left out, by reason
    if inter.height < ordered:
        row_skips[KCORE] += ordered - inter.height
    if keep_splits is None:
        inter, explanation_source = attach_explanations(inter, spec)
    else:
        explanation_source = "kept"
    inter, items = process.reindex(inter, raw.items, spec.seed)
    users = inter.group_by("user_id", maintain_order=True).agg(
        pl.col("user_key").first(), pl.len().cast(pl.Int64).alias("length")
    ).with_columns(pl.col("user_key").str.splitn(":", 2).struct.field("field_0").alias("domain")).sort("user_id")
    users = process.assign_splits(users, spec.protocol, spec.split, spec.seed, keep=keep_splits)
    ds = Dataset(items=items, interactions=inter.sort(["user_id", "timestamp"], maintain_order=True),
                 users=users, instances={})
    rows = {"read": raw.read, "kept": inter.height, "skipped": dict(row_skips.most_common())}
    check_accounting(rows)
    counts = {
        "raw": before,
        "users": users.height,
        "items": items.height,
        "interactions": inter.height,
        "attributes": attribute_counts(items),
    }
    return ds, {"counts": counts, "explanation_source": explanation_source, "rows": rows,
                "skipped": dict(sorted(lines_skipped.items()))}


def check_accounting(rows: dict) -> None:
    """Every interaction row read is kept or counted once under a reason; anything else is a bug."""
    counted = rows["kept"] + sum(rows["skipped"].values())
    if counted != rows["read"]:
        raise AssertionError(f"interaction rows: {rows['read']} read but {counted} kept or skipped: {rows}")


def eval_instances(
    inter: pl.DataFrame, items: pl.DataFrame, users: pl.DataFrame, protocol: str, seed: int,
    skip: Collection[str] = (),
) -> dict[str, pl.DataFrame]:
    """Draw every evaluation instance once (seeded) so every evaluation sees the same ones.

    Each task that stores instances draws its table (`Task.draw_instances`) from the same positions
    (user_id, split, position: history = sequence[:position], and the user's item, rating and
    explanation lists), in registration order, from one generator; the tasks in `skip` draw none.
    """
    rng = np.random.default_rng(seed + 1)
    seqs = inter.group_by("user_id", maintain_order=True).agg(
        pl.col("item_id"), pl.col("rating"), pl.col("explanation")
    )
    pos = process.target_positions(users, protocol).join(seqs, on="user_id").sort(["split", "user_id"])
    return {name: task.draw_instances(pos, items, rng) for name, task in TASKS.items()
            if task.draw_instances is not None and name not in skip}


def draw_instances(ds: Dataset, spec: PrepareSpec, info: dict) -> None:
    """`ds.instances` for every task the data can support (its items' placed images decide img_sel, so
    this runs after the images); `info` gains the counts per split and `tasks_skipped` (task -> why)."""
    skipped = unsupported_tasks(ds.items, ds.interactions)
    ds.instances = eval_instances(ds.interactions, ds.items, ds.users, spec.protocol, spec.seed, skip=skipped)
    info["counts"]["per_split"] = process.split_counts(ds.users, ds.instances)
    info["tasks_skipped"] = skipped


def check_paths(spec: PrepareSpec) -> None:
    """Refuse an --out inside the inputs or not replaceable, and an unwritable --cache-dir, before any work."""
    out = spec.output_dir()
    files = spec.files
    check_outside(out, {"--input": spec.input, "--mirror": mirror_folder(spec.mirror),
                        "--images-dir": files.images if files else None, "--cache-dir": spec.cache_dir})
    check_replaceable(out, overwrite=spec.overwrite)  # (again under the lock) before anything is made
    cache = Path(spec.cache_dir)
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UnimpError(f"--cache-dir {cache}: cannot create it ({exc.strerror})") from None
    if not cache.is_dir() or not os.access(cache, os.W_OK | os.X_OK):
        raise UnimpError(f"--cache-dir {cache}: not a writable folder")


def run_prepare(spec: PrepareSpec, progress: Progress | None = None) -> Path:
    """Build the dataset folder described by `spec`; returns its path.

    `--out` must be absent, empty, or (with --overwrite) a dataset folder holding only what unimp
    writes; anything else is refused before any work. The folder is assembled in a hidden staging
    folder beside it and renamed into place last, so it appears complete or not at all; downloads live
    in `spec.cache_dir` and are reused by a rerun.
    """
    progress = progress or Progress()
    out = spec.output_dir()
    check_paths(spec)
    with writing_dataset(out, overwrite=spec.overwrite) as staging:
        started = time.time()
        raw = load_source(spec, progress)
        ds, info = build_dataset(raw, spec)
        jobs = list(ds.items.select("item_id", "image_url", "image_path").iter_rows())
        placed, image_counts = image_io.materialize(jobs, staging, spec.cache_dir, spec.images, progress)
        ds.items = ds.items.with_columns(
            pl.col("item_id").replace_strict(placed, default=None, return_dtype=pl.Utf8).alias("image")
        )
        draw_instances(ds, spec, info)
        write_tables(staging, ds)
        spec.save(staging / "prepare_spec.json")
        manifest = new_manifest(
            name=out.name,
            synthetic=raw.synthetic,
            source=spec.source,
            datasets=spec.datasets,
            protocol=spec.protocol,
            sources=raw.sources,
            parameters=spec.model_dump(mode="json"),
            **info,
            images=image_counts,
            notes=raw.notes,
            seconds=round(time.time() - started, 2),
        )
        write_json_atomic(staging / MANIFEST, manifest)
    return out
