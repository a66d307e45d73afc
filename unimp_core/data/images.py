"""Item images: concurrent, resumable downloads (aiohttp) into a shared cache, local copies, and checks.

A cached file exists only once it was fully received and recognised as an image (written under a
temporary name, then renamed), so a rerun skips everything already done and retries the rest.
One bad URL never stops the run: failures are counted by reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

from ..io import atomic_path
from ..progress import Progress
from ..specs.data import ImageDownloadSpec
from .fetch import RETRY_STATUS, retry_delay

MIN_SIDE = 16  # pixels; smaller images are placeholders (Amazon's 1x1 GIF)


class _Retryable(Exception):
    pass


def cache_path(cache_dir: Path, url: str) -> Path:
    digest = hashlib.sha1(url.encode()).hexdigest()
    return Path(cache_dir) / "images" / digest[:2] / digest


def _bombs_counted_not_warned() -> None:
    """Pillow warns (on stderr) when it opens an image between 1x and 2x its pixel limit; unimp refuses
    such images by size and counts them as "decompression bomb", so the warning would only be noise. Set
    once, before any thread opens an image (warnings filters are process-wide and not thread-safe)."""
    import warnings

    from PIL import Image

    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def identify(path: Path) -> str | None:
    """None if Pillow recognises the file as an image within the decompression-bomb limit, else a reason."""
    from PIL import Image

    _bombs_counted_not_warned()
    try:
        with Image.open(path) as img:
            img.verify()
    except Image.DecompressionBombError:
        return "decompression bomb"
    except Exception:
        return "not an image"
    return None


def verify_image(path: Path | None, min_side: int = MIN_SIDE) -> str | None:
    """None for a usable image, else why not: missing, undecodable/truncated, decompression bomb,
    too small (Amazon's 1x1 GIF and other placeholders), or a single flat colour (blank placeholder).

    The one check every image passes before it enters a dataset folder (prepare and filter-images).
    """
    from PIL import Image, ImageStat

    if path is None or not Path(path).is_file():
        return "missing"
    try:
        with Image.open(path) as img:
            # Pillow raises above 2x MAX_IMAGE_PIXELS and only warns between 1x and 2x; both are refused
            # here, by size, before any pixel is decoded (warnings filters are not thread-safe).
            limit = Image.MAX_IMAGE_PIXELS
            if limit is not None and img.width * img.height > limit:
                return "decompression bomb"
            img.load()  # a full decode: truncated files fail here
            if min(img.size) < min_side:
                return "too small"
            stat = ImageStat.Stat(img.convert("L"))
            if stat.extrema[0][0] == stat.extrema[0][1]:
                return "blank"
    except Image.DecompressionBombError:
        return "decompression bomb"
    except Exception:
        return "undecodable"
    return None


def open_small(path: Path | None, side: int):
    """The image at `path` as RGB, shrunk to fit `side` x `side` (aspect kept), or None when it is missing,
    undecodable or over Pillow's pixel limit (refused by size before any pixel is decoded, as in
    `verify_image`). JPEGs decode at a reduced scale (`draft`), so large photos stay cheap."""
    from PIL import Image

    if path is None or not Path(path).is_file():
        return None
    try:
        with Image.open(path) as img:
            limit = Image.MAX_IMAGE_PIXELS
            if limit is not None and img.width * img.height > limit:
                return None
            img.draft("RGB", (side, side))
            img = img.convert("RGB")
            img.thumbnail((side, side), Image.BILINEAR)
            return img
    except Exception:  # Pillow raises many types for broken files; every one means "no usable image"
        return None


def verify_images(paths: "list[Path | None]", min_side: int, progress: Progress) -> list[str | None]:
    """`verify_image` for each path, in order, decoding on a few threads (Pillow releases the GIL)."""
    _bombs_counted_not_warned()
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(progress.track(pool.map(lambda p: verify_image(p, min_side), paths), "verifying images",
                                   total=len(paths)))


async def _fetch_one(session, url: str, dest: Path, spec: ImageDownloadSpec) -> str | None:
    """Download one URL to `dest`; returns None on success or the failure reason."""
    import aiohttp

    reason = "unknown"
    for attempt in range(spec.retries + 1):
        await asyncio.sleep(retry_delay(spec.backoff, attempt))
        try:
            async with session.get(url) as resp:
                if resp.status in RETRY_STATUS:
                    raise _Retryable(f"http {resp.status}")
                if resp.status != 200:
                    return f"http {resp.status}"
                if resp.content_length is not None and resp.content_length > spec.max_bytes:
                    return "too large"
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
                try:
                    size = 0
                    with open(tmp, "wb") as f:
                        async for chunk in resp.content.iter_chunked(1 << 16):
                            size += len(chunk)
                            if size > spec.max_bytes:
                                return "too large"
                            f.write(chunk)
                    if resp.content_length is not None and size != resp.content_length:
                        raise _Retryable("truncated")
                    bad = identify(tmp)
                    if bad:
                        return bad
                    os.replace(tmp, dest)  # only a complete, recognised image enters the cache
                finally:
                    tmp.unlink(missing_ok=True)
            return None
        except _Retryable as exc:
            reason = str(exc)
        except asyncio.TimeoutError:
            reason = "timeout"
        except aiohttp.ClientPayloadError:
            reason = "truncated"
        except (aiohttp.ClientConnectionError, OSError):
            reason = "connection error"
        except aiohttp.InvalidURL:
            return "invalid url"
    return reason


async def _download_all(urls: list[str], cache_dir: Path, spec: ImageDownloadSpec, advance) -> dict[str, str | None]:
    import aiohttp

    results: dict[str, str | None] = {}
    todo = []
    for url in urls:
        if cache_path(cache_dir, url).is_file():
            results[url] = None
            advance(1)
        else:
            todo.append(url)
    if not todo:
        return results
    sem = asyncio.Semaphore(spec.concurrency)
    connector = aiohttp.TCPConnector(limit=spec.concurrency, limit_per_host=spec.per_host)
    timeout = aiohttp.ClientTimeout(total=spec.timeout)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(url: str) -> None:
            async with sem:
                if not url.startswith(("http://", "https://")):
                    results[url] = "invalid url"
                else:
                    results[url] = await _fetch_one(session, url, cache_path(cache_dir, url), spec)
            advance(1)

        await asyncio.gather(*(one(u) for u in todo))
    return results


def download_images(
    urls: Iterable[str], cache_dir: Path, spec: ImageDownloadSpec, progress: Progress
) -> dict[str, str | None]:
    """Fetch every distinct URL into the cache; returns url -> None (ok) or the failure reason."""
    unique = list(dict.fromkeys(urls))
    with progress.task("downloading images", total=len(unique)) as advance:
        return asyncio.run(_download_all(unique, Path(cache_dir), spec, advance))


def place(src: Path, dest: Path) -> None:
    """Put `src` at `dest` by hard link when possible (no copy of the bytes), else copy atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        dest.unlink()
    try:
        os.link(src, dest)
    except OSError:
        with atomic_path(dest) as tmp:
            shutil.copyfile(src, tmp)


def materialize(
    items: "list[tuple[int, str | None, str | None]]",
    root: Path,
    cache_dir: Path,
    spec: ImageDownloadSpec,
    progress: Progress,
    verified: bool = False,
) -> tuple[dict[int, str], dict]:
    """Give every item its image at `root/images/<item_id>.jpg`.

    `items` holds (item_id, image_url, image_path). URLs are downloaded (cached); every local or
    downloaded file then passes `verify_image` (skipped when the caller already did: `verified`) and is
    linked in. Returns (item_id -> relative path for items that got an image, counts).
    """
    failed: Counter = Counter()
    missing = 0
    urls = [url for _, url, path in items if not path and url]
    results = download_images(urls, cache_dir, spec, progress) if spec.enabled and urls else {}
    sources: list[tuple[int, Path]] = []
    for item_id, url, path in items:
        if path:
            if not Path(path).is_file():
                failed["missing file"] += 1
                continue
            sources.append((int(item_id), Path(path)))
        elif url and spec.enabled:
            reason = results.get(url, "not downloaded")
            if reason:
                failed[reason] += 1
                continue
            sources.append((int(item_id), cache_path(cache_dir, url)))
        else:
            missing += 1
    placed: dict[int, str] = {}
    if sources:  # no image to look at (--no-images, or none named): no step shown for it
        verdicts = [None] * len(sources) if verified else verify_images([p for _, p in sources], MIN_SIDE, progress)
        for (item_id, src), reason in progress.track(list(zip(sources, verdicts)), "placing images"):
            if reason:
                failed[reason] += 1
                continue
            rel = f"images/{item_id}.jpg"
            place(src, root / rel)
            placed[item_id] = rel
    counts = {"ok": len(placed), "failed": dict(sorted(failed.items())), "missing": missing,
              "downloaded": spec.enabled}
    return placed, counts
