"""Terminal views (rich) of one task's result: what `unimp evaluate` and `unimp generate` print.

Each task names its views (`Task.report`, `Task.show`); the commands print the common frame.
rich is imported inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations

from typing import Any

from . import rank_metrics as RM


def fmt(value: Any) -> str:
    return "—" if value is None else f"{value:.4f}"


def _price(value: Any) -> str:
    return "" if value is None else f"{value:.2f}"


def items_table(title: str, rows: list[dict], extra: list[tuple[str, str]] | None = None):
    """Items (id, source id, title, category, price) with `extra` (column, key) columns first."""
    from rich.table import Table

    cols = [name for name, _ in extra or []]
    table = Table(*cols, "item", "source id", "title", "category", "price", title=title)
    for r in rows:
        table.add_row(*[str(r[key]) if not isinstance(r[key], float) else f"{r[key]:.4f}" for _, key in extra or []],
                      str(r["item_id"]), str(r["source_id"]), r["title"], r["category"], _price(r["price"]))
    return table


# ------------------------------------------------------------------------------- unimp evaluate


def ranking_report(res: dict[str, Any], report: dict[str, Any]) -> tuple[Any, list[str]]:
    """rec / search: HR/NDCG/MRR@k, each beside the popularity baseline."""
    from rich.table import Table

    notes: list[str] = []
    ks = sorted({int(name.split("@")[1]) for name in res["metrics"]})
    table = Table("metric", *[f"@{k}" for k in ks])
    for metric in RM.METRICS:
        table.add_row(f"[bold]{metric}[/]", *[fmt(res["metrics"].get(f"{metric}@{k}")) for k in ks])
        table.add_row("  popularity", *[fmt(res["popularity"].get(f"{metric}@{k}")) for k in ks], style="dim")
    if "invalid_share" in res:
        notes.append(f"invalid outputs: {res['invalid_share']:.1%} of all beams, "
                     f"{res['invalid_top1_share']:.1%} of top-1 answers")
    if res.get("note"):
        notes.append(res["note"])
    from .evaluation.compare import protocol, protocol_line

    notes.append(protocol_line(protocol(report, res)))
    if not res.get("by_popularity"):
        return table, notes
    from rich.console import Group

    return Group(table, popularity_table(res["by_popularity"], res["popularity_by_popularity"], ks)), notes


def bucket_head(label: str, users: int) -> str:
    """A popularity bucket's name in a table: "<5 (1,234 users)"."""
    return f"{label} ({users:,} users)"


def popularity_table(by_model: dict[str, dict], by_baseline: dict[str, dict], ks: list[int]):
    """HR and NDCG@k over the users whose target falls in each popularity bucket (a column each), each
    beside the popularity baseline's."""
    from rich.table import Table

    table = Table("metric", *[bucket_head(label, b["users"]) for label, b in by_model.items()],
                  title="by the target's interactions in the training data")
    for metric in [m.name for m in RM.METRICS.values() if m.brief]:
        for k in ks:
            name = f"{metric}@{k}"
            table.add_row(f"[bold]{name}[/]", *[fmt(b.get(name)) for b in by_model.values()])
            table.add_row("  popularity", *[fmt(b.get(name)) for b in by_baseline.values()], style="dim")
    return table


def exp_report(res: dict[str, Any], report: dict[str, Any]) -> tuple[Any, list[str]]:
    """exp: RMSE/MAE beside the training-mean baseline, then the explanation metrics."""
    from rich.table import Table

    table = Table("metric", "model", "baseline")
    rating, base = res["rating"], res.get("rating_baseline", {})
    for name in ("RMSE", "MAE"):
        table.add_row(name, fmt(rating[name]), fmt(base.get(name)))
    expl = res["explanation"]
    for name in ("BLEU-1", "BLEU-4", "ROUGE-1", "ROUGE-2", "ROUGE-L", "METEOR"):
        table.add_row(name, fmt(expl[name]) if expl[name] is not None else "unavailable", "")
    notes = [f"{rating['unparsable']} of {rating['scored'] + rating['unparsable']} outputs had no parsable "
             f"rating (policy: {rating['unparsable_policy']})"]
    if base:
        notes.append(f"rating baseline: {base['predict']}")
    notes += [f"{name}: {why}" for name, why in expl.get("unavailable", {}).items()]
    return table, notes


def image_report(res: dict[str, Any], report: dict[str, Any]) -> tuple[Any, list[str]]:
    """img_gen: code accuracy, PSNR, SSIM beside the VQ reconstruction (the ceiling), and FID."""
    from rich.table import Table

    notes: list[str] = []
    table = Table("metric", "model", "VQ reconstruction")
    for name in ("code_accuracy", "psnr", "ssim"):
        table.add_row(name, fmt(res["metrics"][name]), fmt(res["vq_reconstruction"].get(name)))
    fid = res["fid"]
    table.add_row("FID", fmt(fid["value"]) if fid["available"] else "unavailable", "")
    if not fid["available"]:
        notes.append(fid["message"])
    notes.append(f"{res['grid']}x{res['grid']} codes at {res['resolution']} px; PSNR/SSIM on "
                 f"{res['scored_images']} images; VQ reconstruction = the true codes decoded (the ceiling)")
    if res.get("pairs"):
        notes.append(f"generated|true pairs: {report['folder']}/{res['pairs']}")
    return table, notes


def metrics_report(res: dict[str, Any], report: dict[str, Any]) -> tuple[Any, list[str]]:
    """Any task: its `metrics` as name / value rows."""
    from rich.table import Table

    table = Table("metric", "model")
    for name, value in res["metrics"].items():
        table.add_row(name, fmt(value))
    return table, []


# ------------------------------------------------------------------------------- unimp generate


def show_ranking(result: dict[str, Any]) -> list:
    title = f"results for “{result['query']}”" if result.get("query") else "recommended next"
    history = ("the user's history items left out (--keep-history lists them)" if result.get("exclude_history")
               else "the user's history items may be listed (--keep-history)")
    return [items_table(f"{title} (score: {result['score']})", result["recommendations"],
                        [("#", "rank"), ("score", "score")]), history] + ([result["k_note"]] if result.get("k_note") else [])


def show_image(result: dict[str, Any]) -> list:
    img = result["image"]
    where = f" -> {img['path']}" if img["path"] else " (give --out FILE.png to save it)"
    return [f"generated a {img['resolution']}x{img['resolution']} image for “{result['query']}” "
            f"from {len(img['codes'])} codes{where}"]


def show_exp(result: dict[str, Any]) -> list:
    rating = result["rating"] if result["rating"] is not None else "no parsable rating"
    return [items_table("item", [result["item"]]),
            f"[bold]rating:[/] {rating}\n[bold]explanation:[/] {result['explanation']}"]


def show_selection(result: dict[str, Any]) -> list:
    rows = [{**c, "pick": "✓" if c["selected"] else ""} for c in result["candidates"]]
    return [items_table("candidates", rows, [("slot", "slot"), ("selected", "pick")]),
            f"generated: {result['generated']}"]
