"""`unimp serve`: a trained run answering over HTTP (JSON API, web page, metrics), batched."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from unimp_core.specs.serve import ServeSpec as SS

from .common import CONFIG_HELP, DRY_RUN_HELP, handle_errors, resolve
from .options import Flag, spec_options, spec_overrides


# The flags of `unimp serve`, each a field of ServeSpec (its --help is the field's description).
SERVE: list[Flag | str] = [
    Flag("run", "--run", exists=True, file_okay=False),
    Flag("host"),
    Flag("port"),
    Flag("checkpoint"),
    Flag("max_batch"),
    Flag("max_wait_ms"),
    Flag("api_key", envvar="UNIMP_API_KEY", show_envvar=False),
    Flag("max_pending"),
    Flag("timeout_s"),
    Flag("max_body_kb"),
    Flag("max_history"),
    Flag("max_new_tokens"),
    Flag("shutdown_timeout_s"),
    Flag("read_timeout_s"),
    Flag("data", "--data", exists=True, file_okay=False),
    Flag("history_len"),
    Flag("max_tokens"),
    Flag("device"),
]


@handle_errors
@spec_options(SERVE, SS)
def serve(
    config: Optional[Path] = typer.Option(None, "--config", exists=True, dir_okay=False, help=CONFIG_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help=DRY_RUN_HELP),
    **given,
) -> None:
    """Serve a trained run over HTTP: JSON API (/v1/recommend, /v1/search, /v1/explain, /v1/select, /v1/image),
    a web page at /, /healthz and /metrics; concurrent requests share forward passes. Recommendations leave out the
    user's history items unless a request sends "exclude_history": false. Stop with Ctrl-C or SIGTERM."""
    overrides = spec_overrides(SERVE, given)
    spec = resolve(SS, config, overrides, dry_run)

    from unimp_core.serve.app import run_serve

    run_serve(spec)
