"""Spec of `unimp serve` (no torch import: `--dry-run` is instant)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field, SecretStr, field_validator

from .base import Spec
from .evaluate import _check_checkpoint

LOOPBACK_NAMES = ("localhost",)
MIN_API_KEY = 8  # characters


def is_loopback(host: str) -> bool:
    """True when `host` only accepts connections from this machine."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ServeSpec(Spec):
    """Everything `unimp serve` needs: which run, where to listen, how to batch, what to refuse."""

    run: Path = Field(description="Run folder written by `unimp train`.")
    checkpoint: str | None = Field(
        default=None, description="Weights to serve: best (the best validation metric during training), final, or step-N "
        "(a saved checkpoint). Default: best when the run kept one, else final (as evaluate and generate).",
    )
    data: Path | None = Field(default=None, description="Dataset folder (default: the one the run was trained on).")
    host: str = Field(default="127.0.0.1", description="Interface to listen on (127.0.0.1: this machine only; "
                      "0.0.0.0 or a public address is an explicit choice, best with --api-key).")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port (0: any free port, printed at start).")
    api_key: SecretStr | None = Field(default=None, description="If set, every /v1 and /metrics request must send "
                                "it as `Authorization: Bearer KEY` or `X-API-Key: KEY` (also read from UNIMP_API_KEY).")
    max_batch: int = Field(default=64, ge=1, le=1024, description="Most requests answered by one forward pass.")
    max_wait_ms: float = Field(default=10.0, ge=0, le=1000, description="Longest a request waits for others to join its batch.")
    max_pending: int = Field(default=512, ge=1, le=100_000, description="Model requests queued or running at once; "
                             "beyond it the server answers 503 with Retry-After.")
    timeout_s: float = Field(default=30.0, gt=0, le=3600, description="A request not answered by then gets 503 "
                             "(it is dropped from the queue).")
    max_body_kb: int = Field(default=64, ge=1, le=10_240, description="Largest request body in KiB (larger: 413).")
    max_history: int = Field(default=1000, ge=1, le=100_000, description="Most items a request's history may hold.")
    max_new_tokens: int = Field(default=48, ge=1, le=1024, description="explain / select: longest generated answer, in tokens.")
    shutdown_timeout_s: float = Field(default=30.0, ge=0, le=3600, description="On SIGTERM/SIGINT: how long in-flight "
                                      "requests may take to finish.")
    read_timeout_s: float = Field(default=5.0, gt=0, le=3600, description="A client must send its request line and "
                                  "headers within this many seconds of connecting (or of its previous answer: idle "
                                  "connections close then), and its body within as many again (else 408), so a stalled "
                                  "client cannot hold a connection or delay shutdown.")
    history_len: int | None = Field(default=None, ge=1, le=50, description="History items in the prompt (default: the run's).")
    max_tokens: int | None = Field(default=None, ge=32, description="Longest prompt in tokens (default: the run's).")
    device: str | None = Field(default=None, description="Torch device of the model (default: cuda if available, else cpu).")

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint_name(cls, value: str | None) -> str | None:
        return None if value is None else _check_checkpoint(value)

    @field_validator("api_key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_API_KEY:
            raise ValueError(f"an API key needs at least {MIN_API_KEY} characters "
                             f"(this one has {len(value.get_secret_value())})")
        return value
