"""The command API's edge: request-body limit, and closing (or moving) /docs and /metrics.

Through the real app: in-process over ASGI for most cases, and over real TCP (uvicorn serving
the same app) where only a real server shows it — that an oversized body is refused without the
server reading it, and that metrics on their own port are a separate listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
import uvicorn

from command_api.entrypoints.app import create_app
from tests.fixtures.command_api import api_settings_for, new_user
from tests.support.processes import free_port

MIB = 1024 * 1024
LIMIT = 64 * 1024  # the default API_MAX_REQUEST_BODY_BYTES
PURCHASE = "/v1/subscriptions"
DOCS_PATHS = ("/docs", "/redoc", "/openapi.json")


class CountingBody:
    """A request body streamed in chunks, remembering how many chunks the server pulled."""

    def __init__(self, total: int, chunk: int = 16 * 1024) -> None:
        self.total, self.chunk, self.pulled = total, chunk, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        sent = 0
        while sent < self.total:
            size = min(self.chunk, self.total - sent)
            self.pulled += 1
            sent += size
            yield b" " * size


def assert_too_large(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["type"].endswith("/payload-too-large")
    assert str(LIMIT) in problem["detail"]  # the reason names the limit
    assert response.headers["x-request-id"]  # answered inside the request context (logged, counted)


async def test_a_20_mib_body_is_refused_with_413_before_auth_or_parsing(api):
    """No token, 20 MiB: the answer is 413, not 401 and not a parsed-then-refused 422."""
    big = await api.client.post(PURCHASE, content=b"{" + b" " * (20 * MIB), headers={"Content-Type": "application/json"})
    assert_too_large(big)

    # Declared by Content-Length: refused before a single byte of the body is read.
    body = CountingBody(20 * MIB)
    declared = await api.client.post(
        PURCHASE, content=body, headers={"Content-Length": str(20 * MIB), "Content-Type": "application/json"}
    )
    assert_too_large(declared)
    assert body.pulled == 0


async def test_a_chunked_body_is_refused_once_it_grows_past_the_limit_and_not_read_further(api):
    body = CountingBody(20 * MIB)  # no Content-Length: Transfer-Encoding chunked
    response = await api.client.post(PURCHASE, content=body, headers={"Content-Type": "application/json"})
    assert_too_large(response)
    assert body.pulled <= LIMIT // body.chunk + 1  # counted while streaming, never buffered whole


async def test_bodies_within_the_limit_still_work_whole_or_chunked(api, seed):
    plan = await seed.plan()
    user = new_user()
    purchase = orjson.dumps({"plan_id": plan["plan_id"]})
    json = {"Content-Type": "application/json"}
    accepted = await api.client.post(PURCHASE, content=purchase, headers={**api.command(user), **json})
    assert accepted.status_code == 202, accepted.text

    async def chunks() -> AsyncIterator[bytes]:
        yield purchase[:5]
        yield purchase[5:] + b" " * (LIMIT - len(purchase))  # exactly at the limit

    chunked = await api.client.post(PURCHASE, content=chunks(), headers={**api.command(new_user()), **json})
    assert chunked.status_code == 202, chunked.text


@contextlib.asynccontextmanager
async def served(app) -> AsyncIterator[int]:  # type: ignore[no-untyped-def]
    """`app` (its lifespan already running) behind a real uvicorn on a free port."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_config=None, access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                assert not task.done(), "uvicorn stopped before it served"
                await asyncio.sleep(0.02)
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
    return int(status_line.split()[1]), headers, body


async def test_over_real_http_a_declared_20_mib_body_is_answered_without_being_sent(api):
    async with served(api.app) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(
                f"POST {PURCHASE} HTTP/1.1\r\nHost: api.test\r\nContent-Type: application/json\r\n"
                f"Content-Length: {20 * MIB}\r\n\r\n".encode()
            )
            await writer.drain()  # headers only: the 413 must come without the 20 MiB
            status, headers, body = await read_response(reader)
            assert status == 413 and headers["content-type"].startswith("application/problem+json")
            assert headers["connection"] == "close"
            assert orjson.loads(body)["type"].endswith("/payload-too-large")
            assert await asyncio.wait_for(reader.read(), 10) == b""  # and the server hangs up
        finally:
            writer.close()


def send_chunks_until_answered(port: int) -> tuple[int, bytes]:
    """A blocking client: stream a chunked body, stop at the first byte of an answer, read it all.

    Plain sockets, because a client that keeps writing into a closed connection gets a reset that
    asyncio turns into losing the answer it had not read yet.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            f"POST {PURCHASE} HTTP/1.1\r\nHost: api.test\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        chunk = b" " * 8192
        sent = 0
        while sent < 20 * MIB and not select.select([sock], [], [], 0.005)[0]:
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:
                break  # the server answered and hung up
            sent += len(chunk)
        answer = b""
        with contextlib.suppress(OSError):
            while data := sock.recv(65536):
                answer += data
        return sent, answer


async def test_over_real_http_a_chunked_body_is_cut_off_at_the_limit(api):
    async with served(api.app) as port:
        sent, answer = await asyncio.to_thread(send_chunks_until_answered, port)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), answer[:300]
    assert orjson.loads(body)["type"].endswith("/payload-too-large")
    assert sent < 4 * MIB  # answered while the body was still coming, not after 20 MiB


async def test_docs_can_be_closed(settings, api_topic, api):
    closed = create_app(api_settings_for(settings, api_topic, api_docs_enabled=False))
    # The production default is closed too (ENVIRONMENT=production, API_DOCS_ENABLED unset).
    production = create_app(api.settings.model_copy(update={"environment": "production", "api_docs_enabled": None}))
    for app in (closed, production):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as client:
            for path in DOCS_PATHS:
                response = await client.get(path)
                assert response.status_code == 404, path
                assert response.headers["content-type"].startswith("application/problem+json")
    for path in DOCS_PATHS:  # and open by default outside production (the session app runs as "test")
        assert (await api.client.get(path)).status_code == 200, path


async def test_metrics_can_be_closed(settings, api_topic):
    app = create_app(api_settings_for(settings, api_topic, api_metrics_enabled=False, api_metrics_port=free_port()))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as client:
            response = await client.get("/metrics")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_metrics_on_their_own_port_are_served_there_and_not_on_the_api_port(settings, api_topic):
    port = free_port()
    app = create_app(api_settings_for(settings, api_topic, api_metrics_port=port))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as client:
            assert (await client.get("/healthz")).status_code == 200
            on_api_port = await client.get("/metrics")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as scraper:
            scraped = await scraper.get("/metrics")
    assert on_api_port.status_code == 404
    assert scraped.status_code == 200
    assert 'api_http_requests_total{method="GET",route="/healthz",status="200"} 1.0' in scraped.text
    # the listener goes away with the app
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as scraper:
            await scraper.get("/metrics")


def test_the_metrics_port_must_not_be_the_api_port(settings, api_topic):
    with pytest.raises(ValueError, match="API_METRICS_PORT"):
        api_settings_for(settings, api_topic, api_port=8123, api_metrics_port=8123)


def test_an_empty_metrics_port_means_unset(settings, api_topic):
    assert api_settings_for(settings, api_topic, api_metrics_port="").api_metrics_port is None
