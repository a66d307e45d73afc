"""A real aiohttp server on 127.0.0.1 in a background thread, for download tests.

Routes map a path to a `Reply`: bytes with a status, an optional delay before answering, or a
stall (the server accepts and never answers). Range requests are honoured for resumable downloads
(`ranges="honour"`), answered with the whole body as a plain 200 (`"ignore"`, as servers without
range support do), or answered 206 from the wrong offset (`"wrong"`, a broken proxy). A range that
starts at or past the end gets 416 with `Content-Range: bytes */LENGTH` (RFC 9110), or without it
(`range_416_header=False`). Every request is recorded in `server.log` as (path, range header).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

from aiohttp import web


@dataclass
class Reply:
    body: bytes = b""
    status: int = 200
    delay: float = 0.0
    stall: bool = False
    content_type: str = "application/octet-stream"
    fail_first: int = 0  # answer 500 this many times before succeeding
    truncate_to: int | None = None  # send this many bytes then drop the connection (once)
    ranges: str = "honour"  # "honour" | "ignore" (always 200, whole body) | "wrong" (206 from byte 0)
    range_416_header: bool = True  # send Content-Range: bytes */LENGTH with a 416


class LocalServer:
    def __init__(self) -> None:
        self.routes: dict[str, Reply] = {}
        self.log: list[tuple[str, str | None]] = []
        self._hits: dict[str, int] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, path: str, reply: Reply | bytes) -> str:
        self.routes[path] = reply if isinstance(reply, Reply) else Reply(reply)
        return self.url + path

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        rng = request.headers.get("Range")
        self.log.append((path, rng))
        reply = self.routes.get(path)
        if reply is None:
            return web.Response(status=404, text="not found")
        hits = self._hits[path] = self._hits.get(path, 0) + 1
        if reply.stall:
            await asyncio.sleep(3600)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if hits <= reply.fail_first:
            return web.Response(status=500, text="try later")
        if reply.status != 200:
            return web.Response(status=reply.status, body=reply.body)
        body, status, headers = reply.body, 200, {}
        if rng and rng.startswith("bytes=") and reply.ranges != "ignore":
            start = int(rng[6:].split("-")[0])
            if start >= len(body):
                extra = {"Content-Range": f"bytes */{len(body)}"} if reply.range_416_header else {}
                return web.Response(status=416, headers=extra)
            if reply.ranges == "wrong":
                start = 0
            headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
            body, status = body[start:], 206
        if reply.truncate_to is not None and hits == 1 + reply.fail_first:
            resp = web.StreamResponse(status=status, headers={**headers, "Content-Length": str(len(body))})
            resp.content_type = reply.content_type
            await resp.prepare(request)
            await resp.write(body[: reply.truncate_to])
            request.transport.close()
            return resp
        return web.Response(status=status, body=body, headers=headers, content_type=reply.content_type)

    def start(self) -> "LocalServer":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
