"""`unimp serve`: a trained run answering over HTTP (JSON API, web page, metrics), batched."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from unimp_core.specs.base import describe as d
from unimp_core.specs.serve import ServeSpec as SS

from .common import CONFIG_HELP, DRY_RUN_HELP, handle_errors, resolve


@handle_errors
def serve(
    run: Optional[Path] = typer.Option(None, "--run", exists=True, file_okay=False, help=d(SS, "run")),
    host: Optional[str] = typer.Option(None, "--host", help=d(SS, "host")),
    port: Optional[int] = typer.Option(None, "--port", help=d(SS, "port")),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", help=d(SS, "checkpoint")),
    max_batch: Optional[int] = typer.Option(None, "--max-batch", help=d(SS, "max_batch")),
    max_wait_ms: Optional[float] = typer.Option(None, "--max-wait-ms", help=d(SS, "max_wait_ms")),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="UNIMP_API_KEY", show_envvar=False,
                                          help=d(SS, "api_key")),
    max_pending: Optional[int] = typer.Option(None, "--max-pending", help=d(SS, "max_pending")),
    timeout_s: Optional[float] = typer.Option(None, "--timeout-s", help=d(SS, "timeout_s")),
    max_body_kb: Optional[int] = typer.Option(None, "--max-body-kb", help=d(SS, "max_body_kb")),
    max_history: Optional[int] = typer.Option(None, "--max-history", help=d(SS, "max_history")),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help=d(SS, "max_new_tokens")),
    shutdown_timeout_s: Optional[float] = typer.Option(None, "--shutdown-timeout-s", help=d(SS, "shutdown_timeout_s")),
    read_timeout_s: Optional[float] = typer.Option(None, "--read-timeout-s", help=d(SS, "read_timeout_s")),
    data: Optional[Path] = typer.Option(None, "--data", exists=True, file_okay=False, help=d(SS, "data")),
    history_len: Optional[int] = typer.Option(None, "--history-len", help=d(SS, "history_len")),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help=d(SS, "max_tokens")),
    device: Optional[str] = typer.Option(None, "--device", help=d(SS, "device")),
    config: Optional[Path] = typer.Option(None, "--config", exists=True, dir_okay=False, help=CONFIG_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help=DRY_RUN_HELP),
) -> None:
    """Serve a trained run over HTTP: JSON API (/v1/recommend, /v1/search, /v1/explain, /v1/select, /v1/image),
    a web page at /, /healthz and /metrics; concurrent requests share forward passes. Recommendations leave out the
    user's history items unless a request sends "exclude_history": false. Stop with Ctrl-C or SIGTERM."""
    overrides = {"run": run, "host": host, "port": port, "checkpoint": checkpoint, "max_batch": max_batch,
                 "max_wait_ms": max_wait_ms, "api_key": api_key, "max_pending": max_pending, "timeout_s": timeout_s,
                 "max_body_kb": max_body_kb, "max_history": max_history, "max_new_tokens": max_new_tokens,
                 "shutdown_timeout_s": shutdown_timeout_s, "read_timeout_s": read_timeout_s, "data": data, "history_len": history_len,
                 "max_tokens": max_tokens, "device": device}
    spec = resolve(SS, config, overrides, dry_run)

    from unimp_core.serve.app import run_serve

    run_serve(spec)
