"""Spec machinery shared by every command: strict models, config files, CLI overrides.

A spec never imports torch: `unimp <cmd> --dry-run` resolves and prints it instantly.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import UnimpError
from ..io import write_json_atomic

S = TypeVar("S", bound="Spec")


class Spec(BaseModel):
    """Base of every run spec: unknown keys are rejected, assignments re-validated, and every number is
    finite (no setting means NaN or infinity; `--lr inf` is refused, not trained on)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False, allow_inf_nan=False)

    def save(self, path: str | Path) -> None:
        """Write the resolved spec as JSON (atomically)."""
        write_json_atomic(path, self.model_dump(mode="json"))


def describe(spec: type[Spec], field: str) -> str:
    """The field's description, reused as the CLI option's --help text."""
    return spec.model_fields[field].description or ""


def field_descriptions(spec: type[Spec], prefix: str = "") -> list[tuple[str, str]]:
    """Every leaf field of a spec as (dotted name, description), nested specs expanded (`model.tiny.layers`)."""
    import typing

    def specs_in(annotation) -> list[type[BaseModel]]:  # through Optional, Union and Annotated
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return list(getattr(annotation, "variants", lambda: [annotation])())  # a family spec: each family's
        return [s for arg in typing.get_args(annotation) for s in specs_in(arg)]

    out: list[tuple[str, str]] = []
    for name, field in spec.model_fields.items():
        nested = specs_in(field.annotation)
        if not nested:
            out.append((prefix + name, field.description or ""))
        for sub in nested:  # a union of specs (model families): the fields of each, once
            out += [f for f in field_descriptions(sub, f"{prefix}{name}.") if f not in out]
    return out


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a spec file (YAML, TOML or JSON, by extension) into a dict."""
    path = Path(path)
    if not path.is_file():
        raise UnimpError(f"{path}: config file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UnimpError(f"{path}: not UTF-8 text (byte {exc.start}); save the config as UTF-8") from None
    suffix = path.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        elif suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise UnimpError(f"{path}: unknown config format {suffix!r} (use .yaml, .toml or .json)")
    except UnimpError:
        raise
    except Exception as exc:  # the parsers' own errors carry line/column
        raise UnimpError(f"{path}: cannot parse: {exc}".splitlines()[0]) from exc
    if not isinstance(data, dict):
        raise UnimpError(f"{path}: a config file must hold a mapping of fields")
    return data


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            v = _drop_none(v)
            if not v:
                continue
        if v is None or (isinstance(v, (list, tuple)) and len(v) == 0):
            continue
        out[k] = v
    return out


def format_validation_error(exc: ValidationError, origin: str) -> str:
    """One line naming the field(s) at fault."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(spec)"
        parts.append(f"{loc}: {err['msg']}")
    return f"{origin}: invalid spec: " + "; ".join(parts)


def merge_spec(spec_cls: type[S], base: dict[str, Any], overrides: dict[str, Any], origin: str) -> S:
    """`base` < `overrides` (None / empty values mean 'not given'), validated; errors name `origin`."""
    data = deep_merge(base, _drop_none(overrides))
    try:
        return spec_cls.model_validate(data)
    except ValidationError as exc:
        raise UnimpError(format_validation_error(exc, origin)) from exc


def resolve_spec(spec_cls: type[S], config: str | Path | None, overrides: dict[str, Any]) -> S:
    """Config file (if any) < command-line overrides (None / empty values mean 'not given')."""
    return merge_spec(spec_cls, load_config(config) if config else {}, overrides,
                      str(config) if config else "options")
