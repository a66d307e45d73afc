"""Small file helpers: every write in unimp goes through a temporary name and a rename."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from . import __version__

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | os.PathLike, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`.

    On an exception the temporary file is removed and `path` is untouched. With `replace=False` a file
    that appeared at `path` meanwhile is never replaced (the temporary file is linked, not renamed, into
    place) and `FileExistsError` is raised.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual permissions
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if replace:
            os.replace(tmp_path, path)
        else:
            os.link(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes, replace: bool = True) -> None:
    with atomic_path(path, replace=replace) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode())


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_writable(path: str | os.PathLike | None, flag: str, force: bool = False) -> None:
    """Refuse, before any work, an output file that could not be written (its folder cannot be made or
    written to, or the path is a folder) or, without `force`, one that already exists: a file the user
    names is never replaced unless they say so."""
    from .errors import UnimpError

    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise UnimpError(f"{flag} {path}: is a folder; name a file")
    if not force and (path.exists() or path.is_symlink()):
        raise UnimpError(f"{flag} {path}: the file exists; add --force to replace it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UnimpError(f"{flag} {path}: cannot create its folder ({exc.strerror})") from None
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise UnimpError(f"{flag} {path}: its folder is not writable")


def write_checksums(folder: str | os.PathLike, name: str) -> None:
    """Record the size and sha256 of every file under `folder` (recursively) in `folder/name`."""
    folder = Path(folder)
    record = {str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
              for p in sorted(folder.rglob("*")) if p.is_file() and p != folder / name}
    write_json_atomic(folder / name, record)


def verify_checksums(folder: str | os.PathLike, name: str) -> str | None:
    """What is wrong with `folder` against its `name` record (the record or a file missing, a size or hash
    changed), or None when all is as written."""
    folder = Path(folder)
    try:
        record = json.loads((folder / name).read_text())
    except FileNotFoundError:
        return f"no {name} (unimp {__version__} writes one with every checkpoint; an older unimp did not)"
    except (OSError, ValueError) as exc:
        return f"{name} unreadable ({exc})".splitlines()[0]
    if not isinstance(record, dict):
        return f"{name} unreadable"
    for rel, want in record.items():  # sizes first: cheap, and what a cut-off copy shows
        f = folder / rel
        if not f.is_file():
            return f"{rel} is missing"
        if f.stat().st_size != want.get("bytes"):
            return f"{rel} has {f.stat().st_size} bytes, {want.get('bytes')} were written"
    for rel, want in record.items():
        if sha256_file(folder / rel) != want.get("sha256"):
            return f"{rel} does not match the sha256 recorded when it was written"
    return None


def safe_join(root: str | os.PathLike, relative: str) -> Path:
    """Join `relative` under `root`, refusing anything that would land outside it (`../x`, `/etc`)."""
    from .errors import UnimpError

    root_path = Path(root).resolve()
    candidate = (root_path / relative).resolve()
    if candidate != root_path and root_path not in candidate.parents:
        raise UnimpError(f"path {relative!r} escapes {root}")
    return candidate


def _beside(path: Path, tag: str) -> Path:
    """A hidden sibling of `path` that unimp names (and so may remove): `.NAME.unimp-TAG`."""
    return path.parent / f".{path.name}.unimp-{tag}"


def lock_file(path: str | os.PathLike) -> Path:
    """The lock file for writing `path`: in a per-user folder of the temporary directory, so no lock file
    ever appears beside the user's own files."""
    resolved = str(Path(path).resolve())
    folder = Path(tempfile.gettempdir()) / f"unimp-locks-{os.getuid() if hasattr(os, 'getuid') else 0}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder / (hashlib.sha256(resolved.encode()).hexdigest()[:24] + ".lock")


@contextmanager
def folder_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold the exclusive right to write folder `path`; a second writer fails at once with one line that
    names the first (waiting could mean hours behind a download or a training run)."""
    import shlex
    import sys
    import time

    from filelock import FileLock, Timeout

    from .errors import UnimpError

    lock_path = lock_file(path)
    holder = lock_path.with_suffix(".holder")  # the lock file itself is truncated by every try to take it
    lock = FileLock(lock_path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        try:
            first = " (" + holder.read_text().strip() + ")"
        except OSError:
            first = ""
        raise UnimpError(f"{path}: another unimp command is writing this folder{first}; wait for it to finish "
                         "or choose another folder") from None
    try:
        command = " ".join(shlex.quote(a) for a in ["unimp", *sys.argv[1:]])
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        holder.write_text(f"pid {os.getpid()}, since {started}: {command[:200]}\n")
        yield
    finally:
        holder.unlink(missing_ok=True)
        lock.release()


def _settle(target: Path) -> None:
    """Undo what an interrupted `replacing_folder` left: a staging folder is removed; a moved-aside old
    folder is put back when nothing replaced it, else removed."""
    staging, old = _beside(target, "staging"), _beside(target, "old")
    if staging.exists():
        shutil.rmtree(staging, ignore_errors=True)
    if old.exists():
        if target.exists() or target.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, target)


@contextmanager
def replacing_folder(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging folder beside `target`; when the block ends normally it replaces `target`
    (atomically when `target` is absent; otherwise the old folder is moved aside first and removed after).

    On every way out (an exception, Ctrl-C) the staging folder is removed and `target` is what it was. The
    caller holds `folder_lock(target)` and has checked that `target` may be replaced. Creating the staging
    folder first also proves the location writable before any work is done.
    """
    from .errors import UnimpError

    target = Path(target)
    staging, old = _beside(target, "staging"), _beside(target, "old")
    _settle(target)
    try:
        staging.mkdir(parents=True)
    except OSError as exc:
        raise UnimpError(f"{target}: cannot write in {target.parent} ({exc.strerror})") from None
    try:
        yield staging
        if target.exists():
            os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        _settle(target)
