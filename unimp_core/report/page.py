"""The report as one self-contained HTML page: charts and pictures inlined as data URIs, no script, no
network; it opens from disk."""

from __future__ import annotations

import html
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import rank_metrics as RM
from ..tasks import TASKS, get_task
from . import charts
from .collect import (RunView, by_popularity, examples, numeric_leaves, ranking_names,
                      selection_metric, task_loss_series, training_series, valid_metric_series)

e = html.escape

CSS = """
body{font-family:system-ui,sans-serif;margin:24px;background:#fafafa;color:#222;max-width:1400px}
h1{font-size:24px;margin:0 0 4px} h2{font-size:19px;margin:28px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:16px;margin:18px 0 6px} .meta{color:#555;font-size:13px}
.synthetic{display:inline-block;background:#ffe08a;color:#5a4500;font-weight:bold;padding:2px 6px;border-radius:4px}
.charts{display:flex;flex-wrap:wrap;gap:12px} img.chart{width:640px;max-width:100%;background:#fff;border:1px solid #ddd}
table.metrics{border-collapse:collapse;background:#fff;font-size:13px;margin:6px 0}
table.metrics th,table.metrics td{border:1px solid #ddd;padding:3px 8px;text-align:right}
table.metrics th:first-child,table.metrics td:first-child{text-align:left} td.best{font-weight:bold}
.protocol{font-size:13px;color:#444;margin:4px 0 8px} .note{font-size:13px;color:#666}
.example{background:#fff;border:1px solid #ddd;border-radius:8px;padding:10px;margin:8px 0}
.row{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}
.card{width:120px;background:#fff;border:1px solid #ddd;border-radius:8px;padding:6px;font-size:11px}
.card img,.card .noimg{width:108px;height:108px;object-fit:contain;border-radius:4px;background:#eee;display:block}
.card .noimg{display:flex;align-items:center;justify-content:center;color:#999}
.card.target{border:2px solid #0a6} .title{font-weight:600;margin:4px 0 2px}
img.pair{image-rendering:pixelated;height:128px;border:1px solid #ddd}
"""


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    return e(str(value))


def _chart(uri: str, name: str, alt: str) -> str:
    return f'<img class="chart" data-chart="{e(name)}" alt="{e(alt)}" src="{uri}">'


def _table(head: list[str], rows: list[list[Any]], best_of_row: bool = False) -> str:
    """An HTML table; with `best_of_row` the largest number of each row (the model columns) is bold."""
    out = ["<table class='metrics'><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"]
    for row in rows:
        numbers = [v for v in row[1:] if isinstance(v, (int, float))]
        top = max(numbers) if best_of_row and numbers and min(numbers) < max(numbers) else None  # no bold for a tie
        cells = [f"<td>{e(str(row[0]))}</td>"]
        cells += [f"<td class='best'>{_fmt(v)}</td>" if top is not None and v == top else f"<td>{_fmt(v)}</td>"
                  for v in row[1:]]
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "".join(out) + "</table>"


# ------------------------------------------------------------------------------------------ training


def training_section(run: RunView, slug: str) -> str:
    """Loss per task (training and validation), learning rate, samples/s, and the validation metric
    over steps with the step best/ was kept at marked."""
    records = run.records
    parts = [f"<h3>{e(run.name)}</h3>"]
    if not records:
        return parts[0] + "<p class='note'>no metrics.jsonl lines: the run logged no step yet</p>"
    total = training_series(records, "loss")
    total.label = "train objective"  # the weighted loss the optimizer minimised
    losses = [total, *task_loss_series(records)]
    shown = [_chart(charts.line_chart("loss per task", [s for s in losses if s.steps], "loss"),
                    f"{slug}-loss", f"{run.name}: loss per task")]
    for key, title in (("lr", "learning rate"), ("samples_per_s", "training samples/s")):
        line = training_series(records, key)
        if line.steps:
            shown.append(_chart(charts.line_chart(title, [line], title), f"{slug}-{key}", f"{run.name}: {title}"))
    metric = selection_metric(run)
    note = ""
    if metric is not None:
        line = valid_metric_series(records, metric)
        best = run.best
        mark = None
        if best and best.get("step") is not None and best.get("value") is not None:
            mark = (int(best["step"]), float(best["value"]), f"best/ kept: step {best['step']}")
            note = (f"best/ holds the weights of step {best['step']}: valid {e(metric)} {float(best['value']):.4f} "
                    f"({best.get('users', '?')} users, history items {'excluded' if best.get('exclude_history') else 'kept'})")
        if line.steps:
            shown.append(_chart(charts.line_chart(f"validation {metric}", [line], metric, mark=mark),
                                f"{slug}-valid", f"{run.name}: validation {metric}"))
    else:
        note = "no rank validation in this run (select_users 0 or no rec task): no best/ kept"
    parts.append(f"<div class='charts'>{''.join(shown)}</div>")
    if note:
        parts.append(f"<p class='note'>{note}</p>")
    return "".join(parts)


# -------------------------------------------------------------------------------------- evaluations


def _protocol(report: dict[str, Any], res: dict[str, Any]) -> str:
    from ..evaluation.compare import protocol, protocol_line

    return f"<p class='protocol'>{e(protocol_line(protocol(report, res)))}</p>"


def ranking_section(task: str, entries: list[tuple[RunView, dict, dict]], slug: str) -> str:
    """One ranking task of one evaluation: every run beside popularity, as a table and a bar chart; then
    the rank metrics by target-item popularity when the evaluation measured them."""
    first_report, first = entries[0][1], entries[0][2]
    names = ranking_names(first["metrics"])
    heads = [run.name for run, _, _ in entries]
    rows = [[n, *[res["metrics"].get(n) for _, _, res in entries], first.get("popularity", {}).get(n)] for n in names]
    parts = [f"<h4>{e(task)}</h4>", _protocol(first_report, first), _table(["metric", *heads, "popularity"], rows, True)]
    shown = RM.brief(names)
    bars = [(run.name, [res["metrics"].get(n) for n in shown]) for run, _, res in entries]
    bars.append(("popularity", [first.get("popularity", {}).get(n) for n in shown]))
    parts.append(_chart(charts.bar_chart(f"{task}: test metrics", shown, bars, "value"), f"{slug}-bars",
                        f"{task}: every run beside popularity"))
    parts.append(popularity_section(task, entries, slug))
    return "".join(parts)


def popularity_section(task: str, entries: list[tuple[RunView, dict, dict]], slug: str) -> str:
    """The entries' `by_popularity` breakdowns (buckets of target-item popularity) as a table and a chart;
    nothing when no entry has one."""
    tables = [(run, by_popularity(res)) for run, _, res in entries]
    tables = [(run, t) for run, t in tables if t]
    if not tables:
        return ""
    buckets = list(tables[0][1])
    # an empty bucket (no user's target that rare) has no numbers: take the names from one that has
    metrics = next((list(ranking_names(row)) for row in tables[0][1].values() if ranking_names(row)), [])
    chosen = "NDCG@10" if "NDCG@10" in metrics else (metrics[0] if metrics else None)
    head = ["target popularity", "users", *[f"{run.name} {m}" for run, _ in tables for m in metrics]]
    rows = [[b, tables[0][1][b].get("users"), *[t.get(b, {}).get(m) for _, t in tables for m in metrics]]
            for b in buckets]
    parts = [f"<h4>{e(task)} by target-item popularity</h4>", _table(head, rows)]
    if chosen is not None:
        bars = [(run.name, [t.get(b, {}).get(chosen) for b in buckets]) for run, t in tables]
        parts.append(_chart(charts.bar_chart(f"{task}: {chosen} by target-item popularity", buckets, bars, chosen),
                            f"{slug}-popularity", f"{task}: {chosen} by target popularity"))
    return "".join(parts)


def other_section(task: str, entries: list[tuple[RunView, dict, dict]]) -> str:
    """A task scored otherwise (exp, img_sel, img_gen): its numbers, a column per run."""
    leaves = [numeric_leaves(res) for _, _, res in entries]
    names = list(dict.fromkeys(n for leaf in leaves for n in leaf))
    rows = [[n, *[leaf.get(n) for leaf in leaves]] for n in names]
    users = ", ".join(f"{run.name}: {res.get('users', 0):,} users" for run, _, res in entries)
    return f"<h4>{e(task)}</h4><p class='protocol'>{e(users)}</p>" + _table(["metric", *[r.name for r, _, _ in entries]], rows)


def examples_section(run: RunView, report: dict[str, Any], task: str) -> str:
    from ..generation import item_card

    ds, shown = examples(report, task)
    if not shown:
        return ""
    parts = [f"<h4>{e(task)} examples ({e(run.name)})</h4>"]
    if ds is None:
        parts.append(f"<p class='note'>the dataset {e(str(report.get('dataset')))} is not there: no histories</p>")
    for ex in shown:
        rec = ex["record"]
        cards = "".join(item_card(ds, row) for row in ex["history"]) if ds is not None else ""
        if ds is not None and ex["target"] is not None:
            cards += item_card(ds, ex["target"], "<div>target</div>", "card target")
        answer = get_task(task).step("example")(rec, ex["pair"])
        parts.append(f"<div class='example'><div class='meta'>user {e(str(ex['user_id']))}: history (oldest first), "
                     f"then the target</div><div class='row'>{cards}</div>{answer}</div>")
    return "".join(parts)


def exp_example(rec: dict[str, Any], pair: Path | None) -> str:
    """exp's generated rating and explanation beside the true ones."""
    def rating(value: Any) -> str:
        return "none parsed" if value is None else f"{float(value):g}"

    return (f"<div><b>generated:</b> rating {rating(rec.get('rating'))}, {e(str(rec.get('explanation') or ''))}</div>"
            f"<div><b>true:</b> rating {rating(rec.get('true_rating'))}, {e(str(rec.get('true_explanation') or ''))}</div>")


def image_example(rec: dict[str, Any], pair: Path | None) -> str:
    """img_gen's query and code accuracy, and the generated|true picture when it was written."""
    answer = f"<div><b>query:</b> {e(str(rec.get('query', '')))} · code accuracy {_fmt(rec.get('code_accuracy'))}</div>"
    if pair is not None:
        import base64

        uri = "data:image/png;base64," + base64.b64encode(pair.read_bytes()).decode("ascii")
        answer += f"<div>generated | true</div><img class='pair' alt='generated and true image' src='{uri}'>"
    return answer


def evaluation_sections(runs: list[RunView]) -> str:
    """One section per evaluation folder name (a checkpoint, split and protocol), the runs that have it side by side."""
    names = list(dict.fromkeys(n for run in runs for n in run.evaluations))
    if not names:
        return "<p class='note'>no evaluation yet: run <code>unimp evaluate --run RUN</code></p>"
    parts = []
    for k, name in enumerate(names):
        having = [(run, run.evaluations[name]) for run in runs if name in run.evaluations]
        parts.append(f"<h3>evaluation {e(name)}</h3>")
        tasks = list(dict.fromkeys(t for _, rep in having for t in rep["tasks"]))
        for j, task in enumerate(tasks):
            entries = [(run, rep, rep["tasks"][task]) for run, rep in having
                       if task in rep["tasks"] and rep["tasks"][task].get("users")]
            if not entries:
                parts.append(f"<h4>{e(task)}</h4><p class='note'>no instances</p>")
                continue
            if isinstance(entries[0][2].get("metrics"), dict) and "popularity" in entries[0][2]:
                parts.append(ranking_section(task, entries, f"eval{k}-{task}"))
            else:
                parts.append(other_section(task, entries))
        for run, rep in having:
            for task, t in TASKS.items():
                if t.example is not None and task in rep["tasks"]:
                    parts.append(examples_section(run, rep, task))
    return "".join(parts)


def render(runs: list[RunView]) -> str:
    """The whole page."""
    synthetic = any(rep.get("synthetic") for run in runs for rep in run.evaluations.values())
    rows = [[run.name, run.family, ", ".join(run.tasks), run.dataset, str(run.path)] for run in runs]
    parts = ["<!doctype html><html><head><meta charset='utf-8'>",
             f"<title>unimp report: {e(', '.join(run.name for run in runs))}</title>",
             f"<style>{CSS}</style></head><body>",
             "<h1>unimp report</h1>",
             f"<p class='meta'>written {datetime.now(timezone.utc).isoformat(timespec='seconds')}</p>"]
    if synthetic:
        parts.append("<p><span class='synthetic'>SYNTHETIC sample data</span></p>")
    parts.append(_table(["run", "model", "tasks", "dataset", "folder"], rows))
    parts.append("<h2>Training</h2>")
    parts += [training_section(run, f"run{i}") for i, run in enumerate(runs)]
    parts.append("<h2>Test results</h2>")
    parts.append(evaluation_sections(runs))
    parts.append("</body></html>\n")
    return "\n".join(parts)
