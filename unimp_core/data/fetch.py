"""Make raw dump files available locally: resumable HTTP downloads, or a local mirror used in place.

A download streams into `<name>.part` in the cache folder and is renamed to `<name>` only once it is
complete, so a file under its final name is always whole and is reused without any request. An
interrupted download resumes from the `.part` with a Range request. Each file's sha256 is recorded
for the dataset manifest and cached in `sha256.json` (keyed by path, size and mtime) so a rerun does
not rehash gigabytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import UnimpError
from ..io import sha256_file, write_json_atomic
from ..progress import Progress

SHA_INDEX = "sha256.json"
# The one retry policy of both downloaders (raw dumps here, item images in images.py): these answers
# are worth another try (timeouts, rate limits, server trouble); any other error status is final.
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def retry_delay(backoff: float, failures: int) -> float:
    """Seconds to wait before the next try after `failures` failed ones: backoff, doubling each time."""
    return backoff * 2 ** (failures - 1) if failures else 0.0

_CHUNK = 1 << 20


@dataclass(frozen=True)
class FetchJob:
    """One raw file: `relpath` under the official `base_url`, and under a mirror."""

    base_url: str
    relpath: str

    @property
    def name(self) -> str:
        return self.relpath.rsplit("/", 1)[-1]

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/" + self.relpath


@dataclass(frozen=True)
class FetchedFile:
    """A raw file ready to read."""

    path: Path
    url: str  # where it came from (a URL, or the local mirror path)
    bytes: int
    sha256: str

    def record(self) -> dict[str, Any]:
        """The manifest record: file, url, bytes, sha256."""
        return {"file": self.path.name, "url": self.url, "bytes": self.bytes, "sha256": self.sha256}


def is_url(mirror: str) -> bool:
    return mirror.startswith(("http://", "https://"))


def fetch_files(
    jobs: list[FetchJob],
    cache_dir: str | os.PathLike,
    mirror: str | None,
    progress: Progress,
    *,
    timeout: float = 60.0,
    retries: int = 5,
    backoff: float = 1.0,
) -> list[FetchedFile]:
    """Make every job's file available locally, in job order.

    Args:
        jobs: the files wanted.
        cache_dir: where downloads (and the sha256 index) are kept between runs.
        mirror: None for the official URLs, an http(s) base URL that replaces each job's base URL, or a
            local folder holding the files (same relative paths, or flat); local files are used in place.
        progress: byte progress bars for downloads and hashing.
        timeout: seconds without any data from the server before an attempt counts as timed out.
        retries: retries after timeouts, dropped connections and 5xx answers (never after a 4xx);
            the count starts again whenever an attempt made progress.
        backoff: first retry delay in seconds; doubles each retry.

    Returns one FetchedFile per job. Raises UnimpError (one line) when a file cannot be had.
    """
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    index = _ShaIndex(cache / SHA_INDEX)
    folder = mirror_folder(mirror)
    results: dict[int, FetchedFile] = {}
    pending: list[tuple[int, Path, list[str]]] = []
    for i, job in enumerate(jobs):
        urls = [job.url] if mirror is None else _mirror_urls(mirror, job)
        path = _local_file(folder, job) if folder is not None else cache / job.name
        if folder is not None or path.is_file():
            # A cached file keeps the URL it was downloaded from; a mirror file names itself.
            url = str(path) if folder is not None else index.url(path) or urls[0]
            results[i] = FetchedFile(path, url, path.stat().st_size, index.sha256(path, progress))
        else:
            pending.append((i, path, urls))
    if pending:
        downloader = _Downloader(progress, timeout=timeout, retries=retries, backoff=backoff)
        done = asyncio.run(downloader.run([(path, urls) for _, path, urls in pending]))
        for (i, path, _), (url, sha) in zip(pending, done):
            index.put(path, sha, url)
            results[i] = FetchedFile(path, url, path.stat().st_size, sha)
    index.save()
    return [results[i] for i in range(len(jobs))]


def mirror_folder(mirror: str | None) -> Path | None:
    """The local folder a --mirror names (a path or a file:// URL), or None for none or an http(s) URL."""
    if mirror is None or is_url(mirror):
        return None
    folder = Path(mirror[len("file://"):] if mirror.startswith("file://") else mirror)
    if not folder.is_dir():
        raise UnimpError(f"--mirror {mirror}: not a folder or http(s) URL")
    return folder


def _local_file(folder: Path, job: FetchJob) -> Path:
    for candidate in dict.fromkeys([folder / job.relpath, folder / job.name]):
        if candidate.is_file():
            return candidate.resolve()
    raise UnimpError(f"--mirror {folder}: no {job.relpath} (nor {job.name}) in that folder")


def _mirror_urls(mirror: str, job: FetchJob) -> list[str]:
    """The mirror keeps the official layout; a flat mirror (just file names) is tried second."""
    base = mirror.rstrip("/") + "/"
    return list(dict.fromkeys([base + job.relpath, base + job.name]))


class _ShaIndex:
    """path -> bytes, mtime_ns, sha256 (and the URL a download came from), so unchanged files are not
    hashed again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.entries: dict[str, dict[str, Any]] = json.loads(path.read_text())
            if not isinstance(self.entries, dict):
                raise ValueError
        except (OSError, ValueError):
            self.entries = {}
        self.dirty = False

    def sha256(self, path: Path, progress: Progress) -> str:
        st = path.stat()
        entry = self.entries.get(str(path.resolve()))
        if entry and entry.get("bytes") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
            return entry["sha256"]
        with progress.task(f"sha256 {path.name}", total=st.st_size) as advance:
            sha = sha256_file(path)
            advance(st.st_size)
        self.put(path, sha)
        return sha

    def url(self, path: Path) -> str | None:
        return self.entries.get(str(path.resolve()), {}).get("url")

    def put(self, path: Path, sha: str, url: str | None = None) -> None:
        st = path.stat()
        entry = {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}
        if url := url or self.url(path):
            entry["url"] = url
        self.entries[str(path.resolve())] = entry
        self.dirty = True

    def save(self) -> None:
        if self.dirty:
            write_json_atomic(self.path, self.entries)
            self.dirty = False


class _Retry(Exception):
    """A transient failure worth another attempt."""


class _NotFound(Exception):
    pass


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)")


class _Downloader:
    def __init__(self, progress: Progress, *, timeout: float, retries: int, backoff: float) -> None:
        self.progress = progress
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff

    async def run(self, files: list[tuple[Path, list[str]]]) -> list[tuple[str, str]]:
        """Download each (destination, candidate URLs) in turn; returns (url used, sha256) per file."""
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout, sock_read=self.timeout)
        # auto_decompress off: a server that labels a .gz with Content-Encoding must not have it unpacked.
        async with aiohttp.ClientSession(
            timeout=timeout, auto_decompress=False, trust_env=True,
            headers={"Accept-Encoding": "identity", "User-Agent": f"unimp/{__version__}"},
        ) as session:
            results = []
            for dest, urls in files:
                results.append(await self._first_found(session, dest, urls))
            return results

    async def _first_found(self, session, dest: Path, urls: list[str]) -> tuple[str, str]:
        for url in urls:
            try:
                return url, await self._download(session, url, dest)
            except _NotFound:
                continue
        raise UnimpError(
            f"{urls[0]}: HTTP 404 not found; pass --mirror with a URL or folder that holds {dest.name}"
        )

    async def _download(self, session, url: str, dest: Path) -> str:
        """Download `url` to `dest` via `dest.part`, resuming and retrying; returns the sha256."""
        import aiohttp

        part = dest.with_name(dest.name + ".part")
        failures = 0
        while True:
            before = part.stat().st_size if part.exists() else 0
            try:
                return await self._attempt(session, url, dest, part)
            except (_Retry, asyncio.TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
                reason = _describe(exc, self.timeout)
            # A flaky connection may drop a multi-GB download many times; only attempts that made
            # no progress count towards the limit.
            after = part.stat().st_size if part.exists() else 0
            failures = 0 if after > before else failures + 1
            if failures > self.retries:
                raise UnimpError(
                    f"{url}: {reason} (gave up after {self.retries} retries); rerun to resume, or pass --mirror"
                )
            await asyncio.sleep(retry_delay(self.backoff, failures))

    async def _attempt(self, session, url: str, dest: Path, part: Path) -> str:
        offset = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        async with session.get(url, headers=headers) as resp:
            if resp.status in (404, 410):
                raise _NotFound()
            if resp.status == 416 and offset:
                m = _UNSATISFIED_RANGE.match(resp.headers.get("Content-Range", ""))
                if m and int(m.group(1)) == offset:  # the .part is already whole
                    return self._finish(part, dest, _hash_prefix(part, offset, self.progress))
                part.unlink()
                raise _Retry("server refused to resume (HTTP 416); starting over")
            if resp.status in RETRY_STATUS:
                raise _Retry(f"HTTP {resp.status}")
            if resp.status not in (200, 206):
                raise UnimpError(f"{url}: HTTP {resp.status} {resp.reason or ''}".rstrip())
            if resp.status == 206:
                m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
                if not m or int(m.group(1)) != offset:
                    part.unlink()
                    raise _Retry("server answered a different byte range; starting over")
                total = None if m.group(3) == "*" else int(m.group(3))
                hasher = _hash_prefix(part, offset, self.progress)
                mode = "ab"
            else:  # 200: the server ignored the Range header (or there was none): start from zero
                offset = 0
                length = resp.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                hasher = hashlib.sha256()
                mode = "wb"
            size = offset
            with self.progress.task(f"download {dest.name}", total=total) as advance, open(part, mode) as f:
                advance(offset)
                async for chunk in resp.content.iter_chunked(_CHUNK):
                    f.write(chunk)
                    hasher.update(chunk)
                    size += len(chunk)
                    advance(len(chunk))
            if total is not None and size != total:
                raise _Retry(f"connection closed at byte {size} of {total}")
            return self._finish(part, dest, hasher)

    @staticmethod
    def _finish(part: Path, dest: Path, hasher) -> str:
        os.replace(part, dest)
        return hasher.hexdigest()


def _hash_prefix(part: Path, size: int, progress: Progress):
    """A sha256 already fed with the first `size` bytes of `part` (the bytes a resume keeps)."""
    hasher = hashlib.sha256()
    with progress.task(f"sha256 {part.name}", total=size) as advance, open(part, "rb") as f:
        remaining = size
        while remaining and (block := f.read(min(_CHUNK, remaining))):
            hasher.update(block)
            remaining -= len(block)
            advance(len(block))
    return hasher


def _describe(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return f"timed out ({timeout:g}s without data)"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if isinstance(exc, _Retry) else f"{type(exc).__name__}: {text}"
