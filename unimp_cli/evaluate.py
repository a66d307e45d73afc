"""`unimp evaluate`: metrics of a trained run on the dataset's stored evaluation instances."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer

from unimp_core.specs.evaluate import EvaluateSpec as ES

from .common import CONFIG_HELP, DRY_RUN_HELP, handle_errors, resolve
from .options import Flag, spec_options, spec_overrides


def _ks(values: list[str] | None) -> list[int] | None:
    if not values:
        return None
    try:
        return [int(v) for value in values for v in value.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"--k {','.join(values)}: expected whole numbers such as 1,5,10") from None


# The flags of `unimp evaluate`, each a field of EvaluateSpec (its --help is the field's description).
EVALUATE: list[Flag | str] = [
    Flag("run", "--run", exists=True, file_okay=False),
    Flag("checkpoint"),
    Flag("split"),
    Flag("tasks", "--tasks", after=" Several: --tasks rec exp."),
    Flag("data", "--data", exists=True, file_okay=False),
    Flag("compare", "--compare", exists=True, file_okay=False, after=" Several: --compare RUN2 RUN3."),
    Flag("batch_size"),
    Flag("ks", "--k", name="k", type=List[str], convert=_ks, after=" Comma-separated: --k 1,5,10."),
    Flag("decode"),
    Flag("num_beams"),
    Flag("exclude_history", "--exclude-history/--keep-history"),
    Flag("text_beams"),
    Flag("image_pairs"),
    Flag("max_new_tokens"),
    Flag("rating_policy"),
    Flag("save_top"),
    Flag("limit"),
    Flag("history_len"),
    Flag("max_tokens"),
    Flag("precision"),
]


@handle_errors
@spec_options(EVALUATE, ES)
def evaluate(
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON on stdout (no table)."),
    config: Optional[Path] = typer.Option(None, "--config", exists=True, dir_okay=False, help=CONFIG_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help=DRY_RUN_HELP),
    **given,
) -> None:
    """Evaluate a run: HR/NDCG/MRR over the whole catalogue (rec, search) against popularity, overall and by
    how often the target occurs in the training data (<5, 5-19, 20+), rating and
    explanation metrics (exp), selection precision/recall/F1 (img_sel), code accuracy, PSNR and SSIM of generated
    images (img_gen); metrics.json and a report.html with charts (`unimp report`). Runs under `accelerate launch` too."""
    overrides = spec_overrides(EVALUATE, given)
    spec = resolve(ES, config, overrides, dry_run)

    import json

    from accelerate import PartialState

    from unimp_core.evaluation.runner import run_evaluate
    from unimp_core.progress import Progress
    from unimp_core.report import report_beside

    if spec.compare:
        from unimp_core.evaluation.compare import run_compare

        with (Progress() if as_json else Progress.rich()) as progress:
            result = run_compare(spec, progress)
        for row in next((res["runs"] for res in result["tasks"].values() if res.get("runs")), []):
            report_beside(Path(row["run"]), Path(row["folder"]))
        if as_json:
            typer.echo(json.dumps(result, indent=2, default=str))
        else:
            from rich.console import Console

            print_compare(Console(), result)
        return
    with (Progress() if as_json else Progress.rich()) as progress:
        report = run_evaluate(spec, progress)
    if not PartialState().is_main_process:
        return
    report_beside(spec.run, Path(report["folder"]))
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
    else:
        from rich.console import Console

        print_report(Console(), report)


def print_compare(con, result: dict[str, Any]) -> None:
    """One table per ranking task: a column per run, then popularity; the protocol line under it."""
    from rich.table import Table

    from unimp_core.evaluation.compare import protocol_line
    from unimp_core.rank_metrics import brief, sort_key
    from unimp_core.terminal import fmt

    for task, res in result["tasks"].items():
        if not res.get("runs"):
            con.print(f"{task}: {res.get('note', 'no instances')}")
            continue
        names = sorted(brief(res["popularity"]), key=sort_key)
        heads = [f"{Path(r['run']).name}\n{r['model'] or ''} {r['checkpoint']}" for r in res["runs"]]
        table = Table("metric", *heads, "popularity", title=f"{task}, {result['dataset']}")
        for name in names:
            table.add_row(name, *[fmt(r["metrics"].get(name)) for r in res["runs"]], fmt(res["popularity"].get(name)))
        con.print(table)
        con.print(_compare_by_popularity(task, res, heads, names))
        con.print(f"  [dim]{protocol_line(res['protocol'])}[/]", soft_wrap=True)
        for row in res["runs"]:
            con.print(f"{row['run']}: {row['folder']}/metrics.json, report.html", soft_wrap=True)


def _compare_by_popularity(task: str, res: dict[str, Any], heads: list[str], names: list[str]):
    """The runs and popularity side by side again, a section per popularity bucket of the target."""
    from rich.table import Table

    from unimp_core.terminal import bucket_head, fmt

    table = Table("metric", *heads, "popularity", title=f"{task}, by the target's interactions in the training data")
    for label, baseline in res["popularity_by_popularity"].items():
        table.add_row(f"[bold]{bucket_head(label, baseline['users'])}[/]")
        for name in names:
            table.add_row(f"  {name}", *[fmt(r["by_popularity"][label].get(name)) for r in res["runs"]],
                          fmt(baseline.get(name)))
        table.add_section()
    return table


def print_report(con, report: dict[str, Any]) -> None:
    """The tasks evaluated now as rich tables (each task's own view), model metrics beside their baselines."""
    from unimp_core.tasks import get_task

    synthetic = "  [bold yellow](SYNTHETIC sample data)[/]" if report.get("synthetic") else ""
    from unimp_core.model.families import DEFAULT_FAMILY, spec_class

    reads = spec_class(report.get("model_family") or DEFAULT_FAMILY)().describe_inputs(report)
    con.print(f"[bold]{report['run']}[/] checkpoint {report.get('checkpoint_note') or report['checkpoint']}, "
              f"split {report['split']}, {report['protocol']}, {reads}, {report['processes']} process(es){synthetic}")
    for task in report.get("evaluated", list(report["tasks"])):
        res = report["tasks"][task]
        if not res.get("users"):
            con.print(f"{task}: {res.get('note', 'no instances')}")
            continue
        con.print(f"\n[bold]{task}[/] — {res['users']} users, {res.get('decode', '')}, "
                  f"{res.get('users_per_s', 0):.1f} users/s")
        table, notes = get_task(task).step("report")(res, report)
        con.print(table)
        for note in notes:
            con.print(f"  [dim]{note}[/]")
    # paths stay on one line, whatever the terminal's width (they are copied, not read)
    con.print(f"\nmetrics: {report['folder']}/metrics.json\npredictions: {report['folder']}/predictions/\n"
              f"report: {report['folder']}/report.html", soft_wrap=True)
