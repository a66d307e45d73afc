"""Loading pickles from other projects' dumps without running their code.

A pickle can name any importable callable (`os.system`, `builtins.eval`, ...) and the standard
loader calls it. Here `find_class` only hands out plain container/number types and the few numpy
functions that rebuild arrays and scalars from raw bytes; anything else stops the load before a
single foreign callable has run.
"""

from __future__ import annotations

import _compat_pickle
import io
import os
import pickle
from pathlib import Path
from typing import Any, Callable

from ..errors import UnimpError

_BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "bytearray", "complex", "int", "float", "str", "bool"}
_COLLECTIONS = {"OrderedDict"}
# numpy's own reduce functions: each rebuilds an array/scalar from a dtype, a shape and raw bytes.
# Object arrays are safe too: their elements come through this same restricted unpickler.
_NUMPY = {
    ("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"),
}


def _numpy_global(module: str, name: str) -> Callable | type | None:
    """The allowed numpy global, or None (also when numpy is not installed)."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency, but stay importable without it
        return None
    if module == "numpy" and name in ("ndarray", "dtype"):
        return getattr(np, name)
    parts = module.split(".")
    # numpy 1 pickles say numpy.core.*, numpy 2 says numpy._core.*; either loads on either.
    if len(parts) != 3 or parts[0] != "numpy" or parts[1] not in ("core", "_core"):
        return None
    if (parts[2], name) not in _NUMPY:
        return None
    try:
        from numpy import _core as core  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1
        from numpy import core  # type: ignore[no-redef]
    return getattr(getattr(core, parts[2]), name)


def _latin1_encode(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """Stand-in for `_codecs.encode`, which protocol-2 pickles use to spell bytes; Latin-1 text only."""
    if not isinstance(text, str) or encoding.lower().replace("-", "") != "latin1":
        raise pickle.UnpicklingError(f"_codecs.encode is only allowed for Latin-1 text, not {encoding!r}")
    return text.encode("latin-1", errors)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, origin: str) -> None:
        super().__init__(file)
        self._origin = origin

    def find_class(self, module: str, name: str) -> Any:
        # Protocol 0-2 pickles from Python 2 say __builtin__ / copy_reg; map them like pickle does.
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if module == "builtins" and name in _BUILTINS:
            return getattr(__import__("builtins"), name)
        if module == "collections" and name in _COLLECTIONS:
            import collections

            return getattr(collections, name)
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        if module.startswith("numpy"):
            found = _numpy_global(module, name)
            if found is not None:
                return found
        raise UnimpError(f"{self._origin}: refusing to load global {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise UnimpError(f"{self._origin}: refusing to load a persistent id")


def loads(data: bytes, origin: str = "pickle") -> Any:
    """Unpickle `data` allowing only plain containers, numbers, strings and numpy arrays/scalars.

    `origin` names the data in error messages. Raises UnimpError for a forbidden global or a
    damaged pickle; nothing named by the pickle is called before the check.
    """
    try:
        return _RestrictedUnpickler(io.BytesIO(data), origin).load()
    except UnimpError:
        raise
    except RecursionError as exc:
        raise UnimpError(f"{origin}: pickle nests too deeply") from exc
    except Exception as exc:  # truncated or corrupt data: UnpicklingError, EOFError, ValueError, ...
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnimpError(f"{origin}: not a readable pickle: {detail}") from exc


def load(path: str | os.PathLike) -> Any:
    """Read and safely unpickle the file at `path` (see `loads`)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UnimpError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return loads(data, str(path))
