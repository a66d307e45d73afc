"""The aiohttp application of `unimp serve` and the process around it.

    build_app(spec, engine=None)   the application; the engine (the loaded run) may come later
    run_serve(spec)                listen, load the model in the background, serve until SIGTERM/SIGINT

Every refusal is a JSON object `{"error": "<one line>", "field": "<field or null>"}` with a 4xx status
(503 with Retry-After while loading, when overloaded or timed out); an answer the server could not
give because of its own fault is a 500 with the same shape, and the server keeps running. A client
that hangs up before its answer is no error: it is counted (and access-logged) as status 499.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Awaitable, Callable

import orjson
from aiohttp import web
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               disable_created_metrics, generate_latest)
from pydantic import BaseModel, ValidationError

from ..errors import UnimpError, first_line
from ..specs.serve import ServeSpec, is_loopback
from ..tasks import served_tasks
from .api import POSTS, RecommendRequest, UsersQuery, openapi, post_path, validation_message
from .batcher import MicroBatcher
from .engine import ApiError, Engine

log = logging.getLogger("unimp.serve")
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tfs'
PAGE = Path(__file__).with_name("page.html")
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
CLIENT_GONE = 499  # the status nginx logs for "client closed request": never sent, only counted


class Metrics:
    """The Prometheus metrics of one application (its own registry, so tests can run several)."""

    def __init__(self) -> None:
        disable_created_metrics()  # the *_created series only add noise here
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("unimp_requests", "HTTP requests answered", ["endpoint", "method", "status"], registry=r)
        self.latency = Histogram("unimp_request_seconds", "Time to answer a request", ["endpoint"], registry=r)
        self.batch_size = Histogram("unimp_batch_size", "Requests answered by one forward pass", buckets=BATCH_BUCKETS,
                                    registry=r)
        self.pending = Gauge("unimp_pending_requests", "Model requests queued or running", registry=r)
        self.ready = Gauge("unimp_model_ready", "1 once the model is loaded", registry=r)
        self.rejected = Counter("unimp_rejected", "Requests refused for overload or timeout", ["reason"], registry=r)


class State:
    """What the handlers share: the engine once loaded, its batcher and executor, counters."""

    def __init__(self, spec: ServeSpec):
        self.spec = spec
        self.engine: Engine | None = None
        self.load_error: str | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="unimp-model")  # the model's one thread
        self.batcher: MicroBatcher | None = None
        self.metrics = Metrics()
        self.openapi = openapi()
        self.pending = 0

    def set_engine(self, engine: Engine) -> None:
        """Make the loaded run answer (call on the event loop)."""
        self.batcher = MicroBatcher(engine.rank, self.executor, self.spec.max_batch, self.spec.max_wait_ms / 1000,
                                    on_batch=self.metrics.batch_size.observe)
        self.batcher.start()
        self.engine = engine
        self.metrics.ready.set(1)


STATE = web.AppKey("state", State)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY), status=status,
                        content_type="application/json", headers=headers)


def error_response(status: int, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    return _json({"error": " ".join(message.split()), "field": field}, status, headers)


# ------------------------------------------------------------------------------------- middlewares


def _endpoint(request: web.Request) -> str:
    """The route's pattern (`/v1/items/{id}`): a bounded label for metrics."""
    info = request.match_info
    resource = info.route.resource if info.http_exception is None else None
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def errors_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    """Outermost: every failure becomes a one-line JSON error; metrics count every answer."""
    state = request.app[STATE]
    started = time.perf_counter()
    try:
        response = await handler(request)
    except ApiError as exc:
        response = error_response(exc.status, exc.message, exc.field, exc.headers)
    except web.HTTPRequestEntityTooLarge:
        limit = state.spec.max_body_kb
        response = error_response(413, f"body: larger than the limit of {limit} KiB", "body")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After", "WWW-Authenticate")}
        response = error_response(exc.status, f"{request.method} {request.path}: {exc.reason.lower()}", None, headers)
    except asyncio.CancelledError:
        raise
    except ConnectionError:  # the client hung up (e.g. mid-body): nothing to answer, nothing wrong here
        response = web.Response(status=CLIENT_GONE)
    except Exception as exc:  # our fault, not the client's: say so, log it, keep serving
        log.exception("internal error answering %s %s", request.method, request.path)
        response = error_response(500, f"internal error: {first_line(exc)}")
    endpoint = _endpoint(request)
    state.metrics.requests.labels(endpoint, request.method, str(response.status)).inc()
    state.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
    return response


@web.middleware
async def auth_middleware(request: web.Request, handler):
    """With --api-key, /v1/* and /metrics need `Authorization: Bearer KEY` or `X-API-Key: KEY`."""
    secret = request.app[STATE].spec.api_key
    key = secret.get_secret_value() if secret is not None else None
    if key and (request.path.startswith("/v1/") or request.path == "/metrics"):
        given = request.headers.get("X-API-Key") or request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        # aiohttp keeps a header's non-UTF-8 bytes as surrogates: surrogateescape gives back the bytes sent
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), key.encode()):
            raise ApiError(401, "api key: missing or wrong (send Authorization: Bearer KEY or X-API-Key: KEY)",
                           "authorization", {"WWW-Authenticate": "Bearer"})
    return await handler(request)


# ----------------------------------------------------------------------------------------- helpers


def _engine(request: web.Request) -> Engine:
    state = request.app[STATE]
    if state.engine is None:
        raise ApiError(503, "the model is still loading", None, {"Retry-After": "5"})
    return state.engine


async def _body(request: web.Request, model: type[BaseModel]) -> Any:
    """The request body validated by `model` (415 not JSON, 413 too large, 400 unparsable, 422 invalid)."""
    if request.content_type != "application/json":
        raise ApiError(415, f"content-type: send application/json (got {request.content_type or 'none'})", "content-type")
    timeout = request.app[STATE].spec.read_timeout_s
    try:
        raw = await asyncio.wait_for(request.read(), timeout)
    except asyncio.TimeoutError:
        raise ApiError(408, f"body: not received within {timeout:g} s", "body") from None
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        if exc.errors()[0]["type"] == "json_invalid":
            raise ApiError(400, f"body: not valid JSON ({exc.errors()[0]['ctx'].get('error', 'unparsable')})", "body") from None
        field, message = validation_message(exc)
        raise ApiError(422, message, field) from None


async def _model_work(request: web.Request, work: Callable[[], Awaitable[Any]]) -> Any:
    """Run model work under the cap on pending requests and the request timeout (503 + Retry-After)."""
    state = request.app[STATE]
    spec = state.spec
    if state.pending >= spec.max_pending:
        state.metrics.rejected.labels("overload").inc()
        raise ApiError(503, f"overloaded: {state.pending} requests pending; retry shortly", None, {"Retry-After": "1"})
    state.pending += 1
    state.metrics.pending.set(state.pending)
    try:
        return await asyncio.wait_for(work(), spec.timeout_s)
    except asyncio.TimeoutError:
        state.metrics.rejected.labels("timeout").inc()
        raise ApiError(503, f"timed out after {spec.timeout_s:g} s; retry later", None, {"Retry-After": "1"}) from None
    finally:
        state.pending -= 1
        state.metrics.pending.set(state.pending)


# ---------------------------------------------------------------------------------------- handlers


def _ranking(model: type[BaseModel], task: str):
    async def handler(request: web.Request) -> web.Response:
        engine = _engine(request)
        prepared = engine.ask(task, await _body(request, model))
        batcher = request.app[STATE].batcher
        return _json(await _model_work(request, lambda: batcher.submit(prepared)))

    return handler


def _single(model: type[BaseModel], task: str):
    async def handler(request: web.Request) -> web.Response:
        engine = _engine(request)
        prepared = engine.ask(task, await _body(request, model))
        loop = asyncio.get_running_loop()
        result = await _model_work(request, lambda: loop.run_in_executor(request.app[STATE].executor, engine.answer, prepared))
        if "png" in result:
            return web.Response(body=result["png"], content_type="image/png")
        return _json(result)

    return handler


async def healthz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.engine is None:
        status = "failed" if state.load_error else "loading"
        return _json({"status": status, "error": state.load_error}, 503, {"Retry-After": "5"})
    return _json({"status": "ready", **state.engine.info()})


async def users(request: web.Request) -> web.Response:
    engine = _engine(request)
    try:
        q = UsersQuery.model_validate(dict(request.query))
    except ValidationError as exc:
        field, message = validation_message(exc)
        raise ApiError(422, message, field) from None
    page = engine.users.slice(q.offset, q.limit)
    return _json({"total": engine.users.height, "offset": q.offset, "users": page.to_dicts()})


async def item(request: web.Request) -> web.Response:
    return _json(_engine(request).item(request.match_info["id"]))


async def item_image(request: web.Request) -> web.FileResponse:
    path = _engine(request).image_path(request.match_info["id"])
    return web.FileResponse(path, headers={"Cache-Control": "public, max-age=3600"})


async def openapi_json(request: web.Request) -> web.Response:
    return _json(request.app[STATE].openapi)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[STATE].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(PAGE, headers={"Content-Type": "text/html; charset=utf-8"})


# ------------------------------------------------------------------------------------------ the app


def build_app(spec: ServeSpec, engine: Engine | None = None) -> web.Application:
    """The application; with `engine` it answers from the start, else once `app[STATE].set_engine` is called."""
    app = web.Application(middlewares=[errors_middleware, auth_middleware], client_max_size=spec.max_body_kb * 1024)
    state = State(spec)
    app[STATE] = state
    app.router.add_get("/", page)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/openapi.json", openapi_json)
    app.router.add_get("/v1/users", users)
    app.router.add_get("/v1/items/{id}", item)
    app.router.add_get("/v1/items/{id}/image", item_image)
    tasks = served_tasks()
    for endpoint, (body, _, _) in POSTS.items():
        if endpoint in tasks:  # ranking requests are micro-batched into one forward pass
            handler = _ranking if issubclass(body, RecommendRequest) else _single
            app.router.add_post(post_path(endpoint), handler(body, tasks[endpoint]))

    async def start(app: web.Application) -> None:
        if engine is not None:
            state.set_engine(engine)

    async def cleanup(app: web.Application) -> None:  # after in-flight requests have finished
        if state.batcher is not None:
            await state.batcher.stop()
        state.executor.shutdown(wait=False, cancel_futures=True)

    app.on_startup.append(start)
    app.on_cleanup.append(cleanup)
    return app


def runner_options(spec: ServeSpec) -> dict[str, Any]:
    """How `serve` runs the application over HTTP (the tests' in-process server uses the same)."""
    return {"access_log": logging.getLogger("aiohttp.access"), "access_log_format": ACCESS_LOG_FORMAT,
            "shutdown_timeout": spec.shutdown_timeout_s, "handle_signals": False,
            # aiohttp closes a connection that has not sent a whole request head this long after it opened
            # or after its previous answer: the header read timeout (and the idle timeout) in one
            "keepalive_timeout": spec.read_timeout_s,
            # after an answer to a body left unread (401, 408, 413, 415), how long the rest may still come in
            "lingering_time": spec.read_timeout_s}


def _setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    for name in ("unimp.serve", "aiohttp.access"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
        logger.propagate = False


async def serve(spec: ServeSpec, ready: Callable[[str], None] | None = None) -> None:
    """Listen on spec.host:spec.port, load the model in the background, serve until SIGTERM or SIGINT.

    On a signal the listening socket closes first, requests in flight get `spec.shutdown_timeout_s`
    to finish, then the process ends. A client still sending its request waits no longer than
    `spec.read_timeout_s`. A model that fails to load ends it with that error.
    """
    app = build_app(spec)
    state = app[STATE]
    runner = web.AppRunner(app, **runner_options(spec))
    await runner.setup()
    site = web.TCPSite(runner, spec.host, spec.port, backlog=2048)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise UnimpError(f"cannot listen on {spec.host}:{spec.port}: {exc.strerror or exc}") from None
    port = runner.addresses[0][1]
    url = f"http://{spec.host}:{port}"
    log.info("listening on %s (loading %s, checkpoint %s)", url, spec.run, spec.checkpoint or "best, else final")
    if not is_loopback(spec.host) and not spec.api_key:
        log.warning("listening on %s without --api-key: anyone who can reach it can use it", spec.host)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def load() -> None:
        try:
            engine = await loop.run_in_executor(state.executor, Engine.load, spec)
        except Exception as exc:  # a broken run folder: say so and stop
            state.load_error = first_line(exc)
            stop.set()
            return
        state.set_engine(engine)
        log.info("ready: %s", engine.info())
        if ready is not None:
            ready(url)

    loader = loop.create_task(load())
    try:
        await stop.wait()
        log.info("shutting down: finishing requests in flight (up to %g s)", spec.shutdown_timeout_s)
    finally:
        await runner.cleanup()
        loader.cancel()
        await asyncio.gather(loader, return_exceptions=True)
    if state.load_error:
        raise UnimpError(f"{spec.run}: cannot load the model: {state.load_error}")
    log.info("stopped")


def run_serve(spec: ServeSpec) -> None:
    """`unimp serve`: the server in this process, until SIGTERM/SIGINT."""
    _setup_logging()
    asyncio.run(serve(spec))
