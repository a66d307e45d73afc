"""What every command shares: error handling, --config/--dry-run, spec printing, multi-value flags."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any, Callable, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])

# Options that take several values after one flag (`--datasets beauty sports`); click options take one
# value each, so argv is rewritten to `--datasets beauty --datasets sports` before parsing.
MULTI_VALUE = {"--datasets", "--tasks"}

CONFIG_HELP = "Spec file (YAML, TOML or JSON); command-line flags override it."
DRY_RUN_HELP = "Print the resolved spec as JSON and exit without running."


def expand_multi(argv: list[str]) -> list[str]:
    out: list[str] = []
    current: str | None = None
    for arg in argv:
        if arg.startswith("-"):
            current = arg if arg in MULTI_VALUE else None
            if current is None or "=" in arg:
                out.append(arg)
            continue
        if current is not None:
            for value in filter(None, arg.split(",")):
                out += [current, value]
        else:
            out.append(arg)
    return out


def fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def handle_errors(fn: F) -> F:
    """Expected failures (UnimpError) become one line on stderr and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from unimp_core.errors import UnimpError

        try:
            return fn(*args, **kwargs)
        except UnimpError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            fail("interrupted; rerun the same command to resume")

    return wrapper  # type: ignore[return-value]


def resolve(spec_cls: type, config: Path | None, overrides: dict[str, Any], dry_run: bool):
    """Build the spec (config < flags); with --dry-run print it and exit 0."""
    from unimp_core.specs import resolve_spec

    spec = resolve_spec(spec_cls, config, overrides)
    if dry_run:
        typer.echo(json.dumps(spec.model_dump(mode="json"), indent=2))
        raise typer.Exit(0)
    return spec


def console():
    from rich.console import Console

    return Console(stderr=not sys.stdout.isatty())
