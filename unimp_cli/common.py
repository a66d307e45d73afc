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
# `tokenize-items --source text image` too (prepare's single `--source files` passes through unchanged);
# only names, never paths, are also split at commas (`--tasks rec,exp`).
MULTI_VALUE = {"--datasets", "--tasks", "--source"}
COMMA_SPLIT = {"--datasets", "--tasks"}

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
            for value in filter(None, arg.split(",") if current in COMMA_SPLIT else [arg]):
                out += [current, value]
        else:
            out.append(arg)
    return out


def config_only_help(spec_cls: type, command: Callable[..., Any]) -> str | None:
    """The --help epilog: each spec field that has no flag of its own (its description is no option's
    help), with its description, so --help names every field a --config file may set."""
    import inspect

    from rich.markup import escape

    from unimp_core.specs.base import field_descriptions

    helps = " ".join(getattr(p.default, "help", None) or "" for p in inspect.signature(command).parameters.values())
    rest = [f"{name}: {text}" for name, text in field_descriptions(spec_cls) if not text or text not in helps]
    if not rest:
        return None
    return "\n\n".join(["Also in a --config file (no flag):", *(escape(line) for line in rest)])


def fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def handle_errors(fn: F) -> F:
    """Expected failures (UnimpError, and OSError from the file system) become one line on stderr and
    exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from unimp_core.errors import UnimpError

        try:
            return fn(*args, **kwargs)
        except UnimpError as exc:
            fail(str(exc))
        except OSError as exc:  # a full disk, a permission, a folder that vanished: the path says which
            where = f"{exc.filename}: " if exc.filename else ""
            fail(f"{where}{exc.strerror or exc}")
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
