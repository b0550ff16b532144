"""App-wide behaviour: unknown routes, methods and bodies all answer with envelopes."""

from __future__ import annotations

import asyncio
import gc
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.routing import Route

from shim import Config, create_app
from shim.cache import CacheUnavailable
from shim.testing import MockUpstream


async def test_unknown_route_is_a_404_envelope(shim: Any) -> None:
    response = await shim().get("/v1/nothing-here")

    assert response.status_code == 404
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.headers["x-request-id"].startswith("req_")


async def test_wrong_method_is_a_405_envelope(shim: Any) -> None:
    response = await shim().get("/v1/audio/speech")

    assert response.status_code == 405
    assert "GET" in response.json()["error"]["message"]


async def test_oversized_body_is_413_without_reading_it(shim: Any, upstream: MockUpstream) -> None:
    response = await shim(max_body_bytes=1000).post(
        "/v1/audio/speech", json={"model": "tts-1", "input": "x" * 2000}
    )

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert upstream.journal == []


async def test_oversized_chunked_body_is_413(shim: Any) -> None:
    async def body() -> Any:
        for _ in range(10):
            yield b" " * 500

    response = await shim(max_body_bytes=1000).post("/v1/audio/speech", content=body())

    assert response.status_code == 413


async def test_request_ids_are_unique(shim: Any) -> None:
    client = shim()
    ids = {(await client.get("/v1/nope")).headers["x-request-id"] for _ in range(5)}

    assert len(ids) == 5


async def test_unexpected_errors_are_a_500_envelope_without_details() -> None:
    app = create_app(Config(cache=False))

    async def broken(request: Request) -> Any:
        raise RuntimeError("secret internal detail")

    app.router.routes.append(Route("/boom", broken))
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://shim") as client,
    ):
        response = await client.get("/boom")

    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error"
    assert "secret" not in response.text


@pytest.mark.parametrize("path", ["/v1/audio/speech", "/v1/models"])
async def test_client_key_check_happens_before_routing(shim: Any, path: str) -> None:
    client = shim(client_keys=("right",), upstream_key="k")
    response = await client.post(path, json={})

    assert response.status_code == 401


async def test_an_app_can_be_started_again_after_it_stopped(upstream: MockUpstream) -> None:
    app = create_app(Config(cache=False, upstream_url=upstream.url))
    transport = httpx.ASGITransport(app)
    body = {"model": "tts-1", "input": "Again."}
    for _ in range(2):
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://shim") as client,
        ):
            response = await client.post(
                "/v1/audio/speech", json=body, headers={"authorization": "Bearer k"}
            )
            assert response.status_code == 200

    assert len(upstream.requests) == 2


async def test_the_cache_and_the_limit_counters_share_one_redis_pool() -> None:
    from tests.redis_server import RedisServer

    with RedisServer() as server:
        app = create_app(Config(redis_url=server.url))
        async with app.router.lifespan_context(app):
            state = app.state.shim
            assert state.cache is not None
            assert state.ops is not None
            assert state.cache.store.client is state.ops.quota.ledger.client


async def test_a_start_up_that_fails_closes_the_upstream_sessions_it_opened(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "cache"
    app = create_app(Config(cache_dir=str(directory)))  # usable when the app is made...
    shutil.rmtree(directory)
    directory.write_bytes(b"")  # ...and not when it starts, after the upstream sessions
    loop = asyncio.get_running_loop()
    reported: list[str] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context["message"]))
    try:
        with pytest.raises(CacheUnavailable, match=str(directory)):
            async with app.router.lifespan_context(app):
                pass
        gc.collect()  # an unclosed aiohttp session reports itself when collected
    finally:
        loop.set_exception_handler(None)

    assert reported == []
