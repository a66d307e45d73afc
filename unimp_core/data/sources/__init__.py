"""Data sources. Each module exposes `load(spec, progress) -> RawData`; nothing here branches on
dataset names outside its own source."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ...progress import Progress
    from ...specs.data import PrepareSpec
    from ..raw import RawData

_MODULES = {
    "amazon2014": "amazon",
    "amazon2018": "amazon",
    "amazon2023": "amazon2023",
    "hm": "hm",
    "netflix": "netflix",
    "files": "files",
    "recbole": "recbole",
    "sample": "sample",
}


def load_source(spec: "PrepareSpec", progress: "Progress") -> "RawData":
    """Dispatch to the source module named by `spec.source`."""
    module = import_module(f".{_MODULES[spec.source]}", __name__)
    return module.load(spec, progress)
