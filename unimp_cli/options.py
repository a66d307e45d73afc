"""Command-line options made from spec fields: one `Flag` line gives the typer option (its name, type and --help
text, the field's description) and where its value goes in the spec.

    TRAIN = [Flag("optim.lr"), Flag("run.out", "--out", "-o"), "model", ...]

    @spec_options(TRAIN, TrainSpec)
    def train(model: Optional[str] = typer.Option(...), config=..., dry_run=..., **given): ...

Adding a flag for a spec field is one line in a command's table.

A string in the table places one of the command's own parameters (declared by hand) among the flags; the
command receives the flags' values in `given` and turns them into the spec's nested layout with
`spec_overrides(TRAIN, given)`.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from pathlib import Path
from typing import Any, Callable, List, Literal, Optional, Union

import typer
from pydantic import BaseModel


class Flag:
    """One option: the spec field at `path` (dotted: "optim.lr"); `decls` as typer takes them (default: `--` and
    the parameter's name with dashes).

    name: the parameter's name (default: the field's); spec: the spec class that describes the field (default:
    found from `path`); to_spec: False when the command reads the value itself (the model section);
    before / after: help text around the field's description; convert: the flag's value -> the spec's;
    type: the option's Python type (default: from the field); required: the option must be given;
    anything else goes to typer.Option (exists=True, ...).
    """

    def __init__(self, path: str, *decls: str, name: str | None = None, spec: type[BaseModel] | None = None,
                 to_spec: bool = True, before: str = "", after: str = "", convert: Callable[[Any], Any] | None = None,
                 type: Any = None, required: bool = False, **options: Any):
        self.path, self.decls, self.name, self.spec, self.to_spec = path, decls, name, spec, to_spec
        self.before, self.after, self.convert, self.type, self.required = before, after, convert, type, required
        self.options = options

    def but(self, **changes: Any) -> "Flag":
        """The same flag with some settings changed (another command's help, say)."""
        kw = {k: getattr(self, k) for k in ("name", "spec", "to_spec", "before", "after", "convert", "type", "required")}
        return Flag(self.path, *self.decls, **{**kw, **self.options, **changes})

    @property
    def param(self) -> str:
        return self.name or self.path.rsplit(".", 1)[-1]


def _field(root: type[BaseModel], flag: Flag):
    """(spec class, field) that `flag` names."""
    *sections, name = flag.path.split(".")
    spec = flag.spec
    if spec is None:
        spec = root
        for section in sections:
            spec = _specs(spec.model_fields[section].annotation)[0]
    return spec, spec.model_fields[name]


def _specs(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [s for arg in typing.get_args(annotation) for s in _specs(arg)]


def _cli_type(annotation):
    """The type typer parses a field's values as (Literal choices and constrained strings are str, checked by
    the spec; lists stay lists; anything else is given as text)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _cli_type(args[0])
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        return _cli_type(rest[0]) if len(rest) == 1 else str
    if origin is Literal:
        return type(args[0])
    if origin in (list, List):
        return List[_cli_type(args[0])]
    return annotation if annotation in (int, float, str, bool, Path) else str


def help_text(root: type[BaseModel], flag: Flag) -> str:
    return flag.before + (_field(root, flag)[1].description or "") + flag.after


def _parameter(root: type[BaseModel], flag: Flag) -> inspect.Parameter:
    _, info = _field(root, flag)
    kind = flag.type or _cli_type(info.annotation)
    option = typer.Option(... if flag.required else None, *flag.decls, help=help_text(root, flag), **flag.options)
    return inspect.Parameter(flag.param, inspect.Parameter.KEYWORD_ONLY, default=option,
                             annotation=kind if flag.required else Optional[kind])


def spec_options(table: list[Flag | str], root: type[BaseModel]):
    """Give the decorated command one option per `Flag` of `table` (in table order, its own parameters where the
    table names them, the rest last); their values reach it as keyword arguments (`**given`)."""

    def decorate(fn):
        own = {n: p for n, p in inspect.signature(fn).parameters.items() if p.kind is not p.VAR_KEYWORD}
        hints = typing.get_type_hints(fn)
        params = []
        for entry in table:
            if isinstance(entry, str):
                params.append(own.pop(entry))
            else:
                params.append(_parameter(root, entry))
        params += own.values()
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints.get(p.name, p.annotation))
                  for p in params]

        @functools.wraps(fn)
        def command(**kwargs):
            return fn(**kwargs)

        command.__signature__ = inspect.Signature(params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate


def spec_overrides(table: list[Flag | str], given: dict[str, Any]) -> dict[str, Any]:
    """The flags' values (None: not given) in the spec's nested layout."""
    out: dict[str, Any] = {}
    for flag in table:
        if isinstance(flag, str) or not flag.to_spec:
            continue
        value = given.get(flag.param)
        if value is not None and flag.convert is not None:
            value = flag.convert(value)
        *sections, name = flag.path.split(".")
        node = out
        for section in sections:
            node = node.setdefault(section, {})
        node[name] = value
    return out
