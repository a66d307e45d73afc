"""`unimp serve` as a real process: graceful SIGTERM (also with stalled clients), one log line per request,
a short load test."""

from __future__ import annotations

import asyncio
import threading
import time

import aiohttp
import pytest

from tests.evaluation.trained import trained_run
from tests.serve.process import ServerProcess

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return trained_run(tmp_path_factory)


def test_sigterm_lets_requests_in_flight_finish(run):
    import json
    import urllib.request

    server = ServerProcess(run, "--max-wait-ms", "1000").start()  # a request waits 1 s for company
    answers = []

    def ask():
        req = urllib.request.Request(server.url + "/v1/recommend", data=json.dumps({"user": 1, "k": 3}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as res:
            answers.append((res.status, json.loads(res.read())))

    asker = threading.Thread(target=ask)
    asker.start()
    time.sleep(0.3)  # the request is in flight (queued in the batcher)
    code = server.stop()
    asker.join(30)
    assert code == 0
    assert answers and answers[0][0] == 200 and len(answers[0][1]["recommendations"]) == 3
    assert any("shutting down" in line for line in server.lines) and "stopped" in server.lines[-1]
    access = server.access_lines()
    assert len(access) == 1 and '"POST /v1/recommend HTTP/1.1" 200' in access[0]


def test_sigterm_does_not_wait_for_stalled_clients(run):
    import socket

    server = ServerProcess(run).start()  # the default --read-timeout-s (5 s) and --shutdown-timeout-s (30 s)
    port = int(server.url.rsplit(":", 1)[1])
    half_body = socket.create_connection(("127.0.0.1", port))
    half_body.sendall(b"POST /v1/recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 200\r\n\r\n" + b'{"user": 1, "k": ')
    half_head = socket.create_connection(("127.0.0.1", port))
    half_head.sendall(b"POST /v1/recommend HTTP/1.1\r\nHost: x\r\nContent-")
    time.sleep(1.0)  # both are inside the server, waiting for the rest
    started = time.monotonic()
    code = server.stop()
    took = time.monotonic() - started
    half_body.settimeout(5)
    answer = half_body.recv(4096)
    half_body.close(), half_head.close()
    assert code == 0 and took < 10, took
    assert answer.startswith(b"HTTP/1.1 408 ") and b"not received within 5 s" in answer
    assert not any("Traceback" in line for line in server.lines), "".join(server.lines)


def test_load_50_clients_no_errors(run):
    server = ServerProcess(run).start()
    seconds, clients = 3.0, 50
    statuses: list[int] = []
    failures: list[str] = []

    async def client(session, i, stop_at):
        while time.monotonic() < stop_at:
            try:
                async with session.post(server.url + "/v1/recommend", json={"user": i % 80, "k": 10}) as res:
                    await res.read()
                    statuses.append(res.status)
            except aiohttp.ClientError as exc:
                failures.append(repr(exc))

    async def main():
        stop_at = time.monotonic() + seconds
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
            await asyncio.gather(*(client(session, i, stop_at) for i in range(clients)))

    try:
        asyncio.run(main())
    finally:
        code = server.stop()
    assert not failures and statuses and set(statuses) == {200}, (failures[:3], set(statuses))
    assert code == 0 and len(server.access_lines()) == len(statuses)
