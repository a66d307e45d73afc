"""The HTTP API on a tiny trained run, in-process: answers, batching, refusals, limits, metrics."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.evaluation.trained import trained_run
from unimp_core.generation import run_generate
from unimp_core.serve.app import STATE, build_app, runner_options
from unimp_core.serve.engine import Engine
from unimp_core.specs.evaluate import GenerateSpec
from unimp_core.specs.serve import ServeSpec


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return trained_run(tmp_path_factory)


@pytest.fixture(scope="module")
def engine(run):
    return Engine.load(ServeSpec(run=run))


class ServeTestServer(TestServer):
    """The app served as `unimp serve` serves it (aiohttp's test server would cancel a handler whose client
    hangs up, which the real one does not)."""

    def __init__(self, app, spec: ServeSpec):
        super().__init__(app)
        self.spec = spec

    async def _make_runner(self, **kwargs):
        return web.AppRunner(self.app, **runner_options(self.spec))


def serve(engine: Engine | None, fn, **spec):
    """Run `fn(client)` against a fresh app (sharing the loaded model) on 127.0.0.1."""
    s = ServeSpec(run=engine.loaded.run if engine else "unused", **spec)

    async def main():
        app = build_app(s, Engine(engine.loaded, s) if engine else None)
        async with TestClient(ServeTestServer(app, s)) as client:
            return await fn(client, app)

    return asyncio.run(main())


async def post(client, path, body, **kw):
    res = await client.post(path, json=body, **kw)
    return res.status, await res.json(), res.headers


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


# ---------------------------------------------------------------------------------------- answers


def test_concurrent_recommendations_share_a_forward_pass_and_equal_generate(engine, run):
    users = list(range(8))

    async def fn(client, app):
        answers = await asyncio.gather(*(post(client, "/v1/recommend", {"user": u, "k": 7}) for u in users))
        text = await (await client.get("/metrics")).text()
        return answers, text

    answers, text = serve(engine, fn, max_batch=8, max_wait_ms=500)
    assert [status for status, _, _ in answers] == [200] * 8
    # all eight arrived within the wait: one batch of 8 (not counting the warm-up, which ran before the app)
    assert metric(text, "unimp_batch_size_count") == 1 and metric(text, "unimp_batch_size_sum") == 8
    served = answers[3][1]
    alone = run_generate(GenerateSpec(run=run, user="3", k=7))
    assert served["user"] == alone["user"] and served["history_total"] == alone["history_total"]
    assert [h["item_id"] for h in served["history"]] == [h["item_id"] for h in alone["history"]]
    got, want = served["recommendations"], alone["recommendations"]
    assert [r["item_id"] for r in got] == [r["item_id"] for r in want] and len(got) == 7
    assert [r["score"] for r in got] == pytest.approx([r["score"] for r in want], rel=1e-5)
    assert all(r["image_url"] == f"/v1/items/{r['item_id']}/image" for r in got)
    assert "run" not in served and "dataset" not in served  # no server paths


def test_unseen_history_search_and_excluded_history(engine):
    async def fn(client, app):
        rec = await post(client, "/v1/recommend", {"history": [4, "id:6", "SYN00001"], "k": 40})  # history left out by default
        search = await post(client, "/v1/search", {"user": "synthetic:u00002", "query": "Lamps", "k": 3})
        return rec, search

    (s1, rec, _), (s2, search, _) = serve(engine, fn)
    assert s1 == 200 and rec["user"]["unseen"] and [h["item_id"] for h in rec["history"]][:2] == [4, 6]
    listed = [r["item_id"] for r in rec["recommendations"]]
    history = {h["item_id"] for h in rec["history"]}
    assert not history & set(listed) and len(listed) == 40 - len(history)  # excluded items are never listed
    assert s2 == 200 and search["query"] == "Lamps" and len(search["recommendations"]) == 3
    assert search["user"]["user_id"] == 2


def test_explain_and_select_answer_as_generate(engine, run):
    async def fn(client, app):
        exp = await post(client, "/v1/explain", {"user": 3, "item": 2})
        sel = await post(client, "/v1/select", {"user": 3, "candidates": [1, 2, 3]})
        img = await post(client, "/v1/image", {"user": 3, "query": "a hat"})
        return exp, sel, img

    (s1, exp, _), (s2, sel, _), (s3, img, _) = serve(engine, fn, max_new_tokens=12)
    alone = run_generate(GenerateSpec(run=run, user="3", task="exp", item="2", max_new_tokens=12))
    assert s1 == 200 and exp["generated"] == alone["generated"] and exp["item"]["item_id"] == 2
    assert s2 == 200 and [c["item_id"] for c in sel["candidates"]] == [1, 2, 3]
    assert s3 == 404 and "not trained for image" in img["error"]  # the tiny run has no img_gen


def test_lookups_openapi_health_and_page(engine):
    async def fn(client, app):
        out = {}
        for path in ("/healthz", "/v1/users?offset=78&limit=5", "/v1/items/4", "/v1/items/src:SYN00004",
                     "/v1/openapi.json"):
            res = await client.get(path)
            out[path] = (res.status, await res.json())
        image = await client.get("/v1/items/4/image")
        page = await client.get("/")
        return out, (image.status, image.content_type, await image.read()), (page.status, await page.text())

    out, image, page = serve(engine, fn)
    status, health = out["/healthz"]
    assert status == 200 and health["status"] == "ready" and health["tasks"] == ["recommend", "search", "explain", "select"]
    status, users = out["/v1/users?offset=78&limit=5"]
    assert status == 200 and users["total"] == 80 and [u["user_id"] for u in users["users"]] == [78, 79]
    assert out["/v1/items/4"][1]["item_id"] == 4 and out["/v1/items/4"] == out["/v1/items/src:SYN00004"]
    spec = out["/v1/openapi.json"][1]
    assert spec["openapi"].startswith("3.") and {"/v1/recommend", "/v1/users", "/metrics"} <= set(spec["paths"])
    assert spec["components"]["schemas"]["RecommendRequest"]["properties"]["k"]["maximum"] == 1000
    assert image[0] == 200 and image[1] == "image/jpeg" and image[2][:2] == b"\xff\xd8"
    assert page[0] == 200 and "/v1/recommend" in page[1]


# -------------------------------------------------------------------------------------- refusals

BAD = [  # (path, body or raw text, content type, status, field, words in the error)
    ("/v1/recommend", {"user": 99999}, None, 422, "user", "no such user"),
    ("/v1/recommend", {"user": "nobody"}, None, 422, "user", "GET /v1/users"),
    ("/v1/recommend", {"history": [1, "NOPE"]}, None, 422, "history", "no item"),
    ("/v1/recommend", {"user": "²"}, None, 422, "user", "no such user"),  # a digit to str.isdigit, not to int()
    ("/v1/recommend", {"history": ["³"]}, None, 422, "history", "no item"),
    ("/v1/recommend", {"history": list(range(5))}, None, 422, "history", "at most 3"),
    ("/v1/recommend", {"history": []}, None, 422, "history", "at least 1"),
    ("/v1/recommend", {"user": 1, "k": 0}, None, 422, "k", "greater than or equal to 1"),
    ("/v1/recommend", {"user": 1, "k": 5000}, None, 422, "k", "less than or equal to 1000"),
    ("/v1/recommend", {"user": 1, "k": "3"}, None, 422, "k", "integer"),
    ("/v1/recommend", {"user": 1, "exclude": True}, None, 422, "exclude", "unknown field"),
    ("/v1/recommend", {"user": 1, "history": [1]}, None, 422, "body", "not both"),
    ("/v1/recommend", {}, None, 422, "body", "either user"),
    ("/v1/recommend", [1, 2], None, 422, "body", "object"),
    ("/v1/recommend", '{"user": 1,', "application/json", 400, "body", "not valid JSON"),
    ("/v1/recommend", '{"user": 1}', "text/plain", 415, "content-type", "application/json"),
    ("/v1/recommend", '{"user": 1, "pad": "' + "x" * 3000 + '"}', "application/json", 413, "body", "1 KiB"),
    ("/v1/search", {"user": 1}, None, 422, "query", "required"),
    ("/v1/explain", {"user": 1, "item": 4000}, None, 422, "item", "no item"),
    ("/v1/select", {"user": 1, "candidates": [1]}, None, 422, "candidates", "at least 2"),
    ("/v1/select", {"user": 1, "candidates": [1, 2, 3, 4, 5, 6]}, None, 422, "candidates", "at most 5"),
    ("/v1/image", {"user": 1, "query": "x"}, None, 404, None, "not trained"),
]


def test_every_bad_request_is_a_4xx_naming_the_field(engine):
    async def fn(client, app):
        out = []
        for path, body, ctype, *_ in BAD:
            if ctype is None:
                res = await client.post(path, json=body)
            else:
                res = await client.post(path, data=body, headers={"Content-Type": ctype})
            out.append((res.status, await res.text()))
        for path, method in (("/v1/items/4000", "GET"), ("/v1/items/x/image", "GET"), ("/nope", "GET"),
                             ("/v1/recommend", "GET"), ("/v1/users?limit=0", "GET"), ("/v1/users?offset=a", "GET"),
                             ("/v1/users?offset=" + "9" * 20, "GET")):
            res = await client.request(method, path)
            out.append((res.status, await res.text()))
        health = await client.get("/healthz")
        return out, health.status

    out, health = serve(engine, fn, max_history=3, max_body_kb=1)
    for (path, body, _, status, field, words), (got, text) in zip(BAD, out):
        error = json.loads(text)
        assert (got, error["field"]) == (status, field), (path, body, text)
        assert words in error["error"] and "\n" not in error["error"], (path, body, text)
    tail = [(s, json.loads(t)) for s, t in out[len(BAD):]]
    assert [s for s, _ in tail] == [404, 404, 404, 405, 422, 422, 422]
    assert tail[0][1]["field"] == "id" and tail[4][1]["field"] == "limit"
    assert tail[5][1]["field"] == tail[6][1]["field"] == "offset"
    assert health == 200  # still serving


def test_api_key_guards_the_api_not_the_page_or_health(engine):
    key = "s3cret-key-123"

    async def fn(client, app):
        codes = [(await client.get("/v1/users")).status, (await client.get("/metrics")).status,
                 (await client.get("/v1/users", headers={"Authorization": "Bearer wrong-key-000"})).status,
                 (await client.get("/v1/users", headers={"Authorization": f"Bearer {key}"})).status,
                 (await client.get("/v1/users", headers={"X-API-Key": key})).status,
                 (await client.get("/healthz")).status, (await client.get("/")).status]
        body = await (await client.get("/v1/users")).json()
        return codes, body

    codes, body = serve(engine, fn, api_key=key)
    assert codes == [401, 401, 401, 200, 200, 200, 200] and body["field"] == "authorization"


def test_overload_and_timeout_answer_503_with_retry_after(engine):
    async def overload(client, app):
        first = asyncio.ensure_future(post(client, "/v1/recommend", {"user": 1}))
        await asyncio.sleep(0.2)  # the first waits in the batcher (max_wait_ms=600)
        second = await post(client, "/v1/recommend", {"user": 2})
        return await first, second

    (s1, _, _), (s2, body, headers) = serve(engine, overload, max_pending=1, max_wait_ms=600)
    assert s1 == 200 and s2 == 503 and headers["Retry-After"] == "1" and "overloaded" in body["error"]

    async def timeout(client, app):
        answer = await post(client, "/v1/recommend", {"user": 1})
        await asyncio.sleep(0.7)  # past the batcher's wait: a batch would have run by now
        return answer, await (await client.get("/metrics")).text()

    (status, body, headers), text = serve(engine, timeout, timeout_s=0.1, max_wait_ms=500)
    assert status == 503 and "timed out" in body["error"] and headers["Retry-After"] == "1"
    assert metric(text, "unimp_batch_size_count") == 0  # the timed-out request never reached the model
    assert 'unimp_rejected_total{reason="timeout"} 1.0' in text


def test_while_loading_health_and_api_say_503(engine):
    async def fn(client, app):
        health = await client.get("/healthz")
        rec = await client.post("/v1/recommend", json={"user": 1})
        before = (health.status, rec.status, rec.headers.get("Retry-After"), (await rec.json())["error"])
        app[STATE].set_engine(Engine(engine.loaded, app[STATE].spec))  # what run_serve does once loaded
        after = (await client.get("/healthz")).status, (await client.post("/v1/recommend", json={"user": 1})).status
        return before, after

    before, after = serve(None, fn)
    assert before == (503, 503, "5", "the model is still loading") and after == (200, 200)


def test_an_internal_failure_is_a_500_and_the_server_keeps_serving(engine, monkeypatch):
    async def fn(client, app):
        state = app[STATE]
        original = state.batcher.run_batch

        def broken(batch):
            raise RuntimeError("CUDA fell over")

        state.batcher.run_batch = broken
        bad = await post(client, "/v1/recommend", {"user": 1})
        state.batcher.run_batch = original
        good = await post(client, "/v1/recommend", {"user": 1})
        return bad, good

    (s1, body, _), (s2, _, _) = serve(engine, fn)
    assert s1 == 500 and body["error"] == "internal error: CUDA fell over" and s2 == 200


def test_metrics_count_requests_latency_and_batches(engine):
    async def fn(client, app):
        await asyncio.gather(*(post(client, "/v1/recommend", {"user": u}) for u in range(3)))
        await post(client, "/v1/recommend", {"user": -5})
        return await (await client.get("/metrics")).text()

    text = serve(engine, fn, max_wait_ms=300)
    assert 'unimp_requests_total{endpoint="/v1/recommend",method="POST",status="200"} 3.0' in text
    assert 'unimp_requests_total{endpoint="/v1/recommend",method="POST",status="422"} 1.0' in text
    assert metric(text, 'unimp_request_seconds_count{endpoint="/v1/recommend"}') == 4
    assert metric(text, "unimp_batch_size_sum") == 3 and metric(text, "unimp_model_ready") == 1


# ------------------------------------------------------------------ hostile clients, tampered data


async def raw_request(client, data: bytes, *, close_after_send: bool = False) -> bytes:
    """Send `data` over a plain socket (bytes no HTTP client would send); the answer, or b"" if we hung up."""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    writer.write(data)
    await writer.drain()
    if close_after_send:
        writer.close()
        await writer.wait_closed()
        return b""
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


def test_a_key_that_is_not_utf8_is_a_401_not_a_500(engine):
    key = "s3cret-key-123"
    heads = [b"X-API-Key: \xff\xfe" + key.encode(), b"Authorization: Bearer \xe9" + key.encode(),
             b"Authorization: Bearer " + key.encode() + b"\x80"]

    async def fn(client, app):
        out = []
        for head in heads:
            answer = await raw_request(client, b"GET /v1/users HTTP/1.1\r\nHost: x\r\n" + head +
                                       b"\r\nConnection: close\r\n\r\n")
            status, _, body = answer.partition(b"\r\n\r\n")
            out.append((status.split(b" ")[1], json.loads(body)))
        good = (await client.get("/v1/users", headers={"X-API-Key": key})).status
        return out, good

    out, good = serve(engine, fn, api_key=key)
    assert [s for s, _ in out] == [b"401"] * 3 and all(b["field"] == "authorization" for _, b in out)
    assert good == 200


def test_a_client_that_hangs_up_mid_body_is_not_an_error(engine, caplog):
    async def fn(client, app):
        await raw_request(client, b"POST /v1/recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 100\r\n\r\n" + b'{"user": 1, ', close_after_send=True)
        await asyncio.sleep(1.0)  # the server notices the hang-up
        return await (await client.get("/metrics")).text(), (await client.post("/v1/recommend", json={"user": 1})).status

    with caplog.at_level("DEBUG", logger="unimp.serve"):
        text, after = serve(engine, fn)
    assert 'status="500"' not in text and after == 200
    assert 'unimp_requests_total{endpoint="/v1/recommend",method="POST",status="499"} 1.0' in text  # client closed
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= 40], caplog.text


def test_an_image_path_that_escapes_the_dataset_is_no_image(run, tmp_path):
    import shutil

    import polars as pl

    from unimp_core.run_folder import dataset_folder, read_train_spec

    data = tmp_path / "ds"
    shutil.copytree(dataset_folder(run, read_train_spec(run)), data)
    items = pl.read_parquet(data / "items.parquet")
    escaping = {5: "../../../../etc/passwd", 6: "/etc/passwd"}
    items = items.with_columns(pl.Series("image", [escaping.get(i, rel) for i, rel in
                                                   zip(items["item_id"], items["image"])], dtype=pl.Utf8))
    items.write_parquet(data / "items.parquet")
    tampered = Engine.load(ServeSpec(run=run, data=data))

    async def fn(client, app):
        rec = await post(client, "/v1/recommend", {"history": [5, 6, 7], "k": 40})
        image = await client.get("/v1/items/5/image")
        return rec, image.status, await (await client.get("/v1/items/6")).json()

    (status, rec, _), image, item = serve(tampered, fn)
    assert status == 200, rec
    shown = {r["item_id"]: r["image_url"] for r in rec["history"] + rec["recommendations"]}
    assert shown[5] is None and shown[6] is None and shown[7] == "/v1/items/7/image"
    assert image == 404 and item["image_url"] is None


def test_a_stalled_head_is_closed_and_a_stalled_body_is_a_408(engine):
    async def stalled(client, data: bytes) -> tuple[bytes, float]:
        reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
        writer.write(data)
        started = time.monotonic()
        answer = await asyncio.wait_for(reader.read(4096), 5)  # b"" if the server closes without answering
        writer.close()
        return answer, time.monotonic() - started

    async def fn(client, app):
        head = await stalled(client, b"POST /v1/recommend HTTP/1.1\r\nHost: x\r\nContent-")
        body = await stalled(client, b"POST /v1/recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 50\r\n\r\n" + b'{"user": 1')
        return head, body, await (await client.get("/metrics")).text()

    (head, head_s), (body, body_s), text = serve(engine, fn, read_timeout_s=0.5)
    assert head == b"" and head_s < 2
    assert body.startswith(b"HTTP/1.1 408 ") and b'"field":"body"' in body and body_s < 2
    assert 'status="408"} 1.0' in text


def test_the_openapi_description_names_every_route_and_every_answer_keeps_to_it(engine):
    from unimp_core.serve import api

    async def fn(client, app):
        answers = {}
        for path, body, model in (("/v1/recommend", {"user": 3, "k": 5}, api.Ranking),
                                  ("/v1/search", {"history": [1, 2], "query": "lamp", "k": 1000}, api.Ranking),
                                  ("/v1/explain", {"user": 3, "item": 2}, api.Explanation),
                                  ("/v1/select", {"user": 3, "candidates": [1, 2]}, api.Selection)):
            answers[path] = (model, await (await client.post(path, json=body)).json())
        for path, model in (("/v1/users?limit=3", api.UsersPage), ("/v1/items/4", api.Item), ("/healthz", api.Health)):
            answers[path] = (model, await (await client.get(path)).json())
        routes = {(r.method, r.resource.canonical) for r in app.router.routes() if r.method != "HEAD"}
        return answers, routes, await (await client.get("/v1/openapi.json")).json()

    answers, routes, description = serve(engine, fn, max_new_tokens=4)
    assert routes == {(method.upper(), path) for path, ops in description["paths"].items() for method in ops}
    for path, (model, answer) in answers.items():
        model.model_validate(answer)  # raises on a missing, extra or mistyped field
    assert answers["/v1/search"][1]["k_note"]  # k above the catalogue: fewer listed, and said why
