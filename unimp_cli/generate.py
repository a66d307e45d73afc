"""`unimp generate`: what a trained run recommends (or says) for one user, on the terminal or as HTML."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from unimp_core.specs.base import describe as d
from unimp_core.specs.evaluate import GenerateSpec as GS

from .common import CONFIG_HELP, DRY_RUN_HELP, handle_errors, resolve
from .options import Flag, spec_options, spec_overrides


def _ids(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


# The flags of `unimp generate`, each a field of GenerateSpec (its --help is the field's description).
GENERATE: list[Flag | str] = [
    Flag("run", "--run", exists=True, file_okay=False),
    Flag("user", "--user"),
    Flag("history", "--history", type=str, convert=_ids, after=" Comma-separated."),
    "list_users",
    Flag("task", "--task"),
    Flag("query", "--query"),
    Flag("item", "--item"),
    Flag("candidates", "--candidates", type=str, convert=_ids, after=" Comma-separated."),
    Flag("k", "-k", "--k"),
    Flag("exclude_history", "--exclude-history/--keep-history"),
    Flag("num_beams"),
    Flag("max_new_tokens"),
    Flag("checkpoint"),
    Flag("data", "--data", exists=True, file_okay=False),
    Flag("history_len"),
    Flag("max_tokens"),
    Flag("html", "--html", dir_okay=False),
    Flag("out", "--out", dir_okay=False),
    Flag("force", "--force"),
]


@handle_errors
@spec_options(GENERATE, GS)
def generate(
    list_users: bool = typer.Option(False, "--list-users", help=d(GS, "list_users")),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
    config: Optional[Path] = typer.Option(None, "--config", exists=True, dir_okay=False, help=CONFIG_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help=DRY_RUN_HELP),
    **given,
) -> None:
    """Recommend for a user (by id, key, or a given history), answer a search query, explain a rating,
    pick among candidates or generate an image (--task img_gen --out img.png); --html writes a page with the pictures."""
    overrides = {**spec_overrides(GENERATE, given), "list_users": list_users or None}
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
