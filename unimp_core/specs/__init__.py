"""Pydantic run specs, one per command; no torch import here."""

from .base import Spec, describe, load_config, resolve_spec

__all__ = ["Spec", "describe", "load_config", "resolve_spec"]
