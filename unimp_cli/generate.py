"""`unimp generate`: what a trained run recommends (or says) for one user, on the terminal or as HTML."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from unimp_core.specs.base import describe as d
from unimp_core.specs.evaluate import GenerateSpec as GS

from .common import CONFIG_HELP, DRY_RUN_HELP, handle_errors, resolve


def _ids(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@handle_errors
def generate(
    run: Optional[Path] = typer.Option(None, "--run", exists=True, file_okay=False, help=d(GS, "run")),
    user: Optional[str] = typer.Option(None, "--user", help=d(GS, "user")),
    history: Optional[str] = typer.Option(None, "--history", help=d(GS, "history") + " Comma-separated."),
    list_users: bool = typer.Option(False, "--list-users", help=d(GS, "list_users")),
    task: Optional[str] = typer.Option(None, "--task", help=d(GS, "task")),
    query: Optional[str] = typer.Option(None, "--query", help=d(GS, "query")),
    item: Optional[str] = typer.Option(None, "--item", help=d(GS, "item")),
    candidates: Optional[str] = typer.Option(None, "--candidates", help=d(GS, "candidates") + " Comma-separated."),
    k: Optional[int] = typer.Option(None, "-k", "--k", help=d(GS, "k")),
    exclude_history: Optional[bool] = typer.Option(None, "--exclude-history/--keep-history", help=d(GS, "exclude_history")),
    num_beams: Optional[int] = typer.Option(None, help=d(GS, "num_beams")),
    max_new_tokens: Optional[int] = typer.Option(None, help=d(GS, "max_new_tokens")),
    checkpoint: Optional[str] = typer.Option(None, help=d(GS, "checkpoint")),
    data: Optional[Path] = typer.Option(None, "--data", exists=True, file_okay=False, help=d(GS, "data")),
    history_len: Optional[int] = typer.Option(None, help=d(GS, "history_len")),
    max_tokens: Optional[int] = typer.Option(None, help=d(GS, "max_tokens")),
    html: Optional[Path] = typer.Option(None, "--html", dir_okay=False, help=d(GS, "html")),
    out: Optional[Path] = typer.Option(None, "--out", dir_okay=False, help=d(GS, "out")),
    force: Optional[bool] = typer.Option(None, "--force", help=d(GS, "force")),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
    config: Optional[Path] = typer.Option(None, "--config", exists=True, dir_okay=False, help=CONFIG_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help=DRY_RUN_HELP),
) -> None:
    """Recommend for a user (by id, key, or a given history), answer a search query, explain a rating,
    pick among candidates or generate an image (--task img_gen --out img.png); --html writes a page with the pictures."""
    overrides = {"run": run, "user": user, "history": _ids(history), "list_users": list_users or None, "task": task,
                 "query": query, "item": item, "candidates": _ids(candidates), "k": k,
                 "exclude_history": exclude_history, "num_beams": num_beams, "max_new_tokens": max_new_tokens,
                 "checkpoint": checkpoint, "data": data, "history_len": history_len, "max_tokens": max_tokens,
                 "html": html, "out": out, "force": force}
    spec = resolve(GS, config, overrides, dry_run)

    import json

    from rich.console import Console

    if spec.list_users:
        from unimp_core.generation import list_users as users_of

        users = users_of(spec.run, spec.data)
        if as_json:
            typer.echo(json.dumps(users.to_dicts(), indent=1))
        else:
            typer.echo("user_id\tuser_key\tsplit\tlength")
            for row in users.iter_rows():
                typer.echo("\t".join(str(v) for v in row))
        return

    from unimp_core.generation import run_generate
    from unimp_core.progress import Progress

    with (Progress() if as_json else Progress.rich()) as progress:
        result = run_generate(spec, progress)
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
    else:
        print_result(Console(), result)


def print_result(con, result: dict[str, Any]) -> None:
    """The user's recent history and the model's answer (the task's own view) as rich tables."""
    from unimp_core.tasks import get_task
    from unimp_core.terminal import items_table

    user = result["user"]
    who = "an unseen user (given history)" if user["unseen"] else f"user {user['user_id']} ({user['user_key']}, {user['split']})"
    synthetic = "  [bold yellow](SYNTHETIC sample data)[/]" if result["synthetic"] else ""
    con.print(f"[bold]{result['task']}[/] for {who}{synthetic}")
    con.print(items_table(f"recent history ({len(result['history'])} of {result['history_total']}, oldest first)",
                          result["history"]))
    for part in get_task(result["task"]).step("show")(result):
        con.print(part, soft_wrap=isinstance(part, str))
    if result.get("html"):
        con.print(f"page: {result['html']}", soft_wrap=True)
