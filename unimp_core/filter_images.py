"""`unimp filter-images`: verify every item image, drop (or keep) items without a valid one,
re-run the k-core, re-index, and rewrite the dataset folder consistently."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import polars as pl

from .data import images as image_io
from .data.raw import RawData
from .data.store import (ITEM_CODES_KEY, CODES_KEY, MANIFEST, load_dataset, new_manifest, read_manifest, write_tables,
                         writing_dataset)
from .errors import UnimpError
from .io import write_json_atomic
from .prepare import build_dataset, draw_instances
from .progress import Progress
from .specs.data import FilterImagesSpec, ImageDownloadSpec, PrepareSpec


def run_filter_images(spec: FilterImagesSpec, progress: Progress | None = None) -> dict:
    """Rewrite `spec.data` without items whose image is unusable; returns the report (also in the manifest)."""
    progress = progress or Progress()
    root = Path(spec.data)
    read_manifest(root)  # "not a dataset folder" before anything else
    with writing_dataset(root, overwrite=True, flag="--data") as staging:
        ds = load_dataset(root)
        prep = PrepareSpec.model_validate(ds.manifest["parameters"])
        prep = prep.model_copy(update={
            "user_core": spec.user_core or prep.user_core,
            "item_core": spec.item_core or prep.item_core,
            "images": ImageDownloadSpec(enabled=False),
        })
        ids, rels = ds.items["item_id"].to_list(), ds.items["image"].to_list()
        verdicts = image_io.verify_images([root / r if r else None for r in rels], spec.min_side, progress)
        reasons = Counter(v for v in verdicts if v)
        bad = {i for i, v in zip(ids, verdicts) if v}

        items = ds.items.with_columns(
            pl.when(pl.col("item_id").is_in(list(bad))).then(None)
            .otherwise(pl.col("image").map_elements(lambda r: str((root / r).resolve()), return_dtype=pl.Utf8))
            .alias("image_path")
        )
        inter = ds.interactions.join(items.select("item_id", "source_id"), on="item_id")
        if spec.missing == "drop":
            inter = inter.filter(~pl.col("item_id").is_in(list(bad)))
        raw = RawData(interactions=inter, items=items.drop("item_id"))
        try:
            new, info = build_dataset(raw, prep, keep_splits=ds.users.select("user_key", "split"))
        except UnimpError as exc:
            raise UnimpError(f"{root}: after dropping {len(bad)} items without a valid image: {exc}") from exc

        jobs = list(new.items.select("item_id", "image_url", "image_path").iter_rows())
        placed, image_counts = image_io.materialize(jobs, staging, prep.cache_dir, prep.images, progress,
                                                   verified=True)
        new.items = new.items.with_columns(
            pl.col("item_id").replace_strict(placed, default=None, return_dtype=pl.Utf8).alias("image")
        )
        draw_instances(new, prep, info)
        write_tables(staging, new)
        before = {"items": ds.items.height, "users": ds.users.height, "interactions": ds.interactions.height}
        after = {"items": new.items.height, "users": new.users.height, "interactions": new.interactions.height}
        report = {"missing": spec.missing, "invalid_images": dict(sorted(reasons.items())), "before": before,
                  "after": after, "user_core": prep.user_core, "item_core": prep.item_core,
                  "image_codes_dropped": CODES_KEY in ds.manifest,
                  "item_codes_dropped": ITEM_CODES_KEY in ds.manifest}
        manifest = {
            **ds.manifest,
            **new_manifest(),
            "counts": {**ds.manifest["counts"], **info["counts"]},
            "images": {**image_counts, "downloaded": ds.manifest["images"].get("downloaded")},
            "tasks_skipped": info["tasks_skipped"],
            "filter_images": report,
        }
        manifest.pop(CODES_KEY, None)  # item ids change: image codes must be made again (tokenize-images)
        manifest.pop(ITEM_CODES_KEY, None)  # and so must item codes (tokenize-items)
        spec.save(staging / "filter_images_spec.json")
        for extra in ("prepare_spec.json",):
            if (root / extra).is_file():
                image_io.place(root / extra, staging / extra)
        write_json_atomic(staging / MANIFEST, manifest)
    return report
