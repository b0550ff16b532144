"""bench/clients.py drives each upstream client against a real server (the timed runs are
not tests: nothing here asserts a figure's size)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import uvloop

from bench import clients


@pytest.fixture(scope="module")
def root() -> Iterator[str]:
    server, url = clients.start_server()
    yield url
    server.stop()


@pytest.mark.parametrize("name", clients.CLIENTS)
def test_each_client_completes_pairs_without_errors(root: str, name: str) -> None:
    result = uvloop.run(clients.measure(name, 2, root, seconds=0.3, warmup=0.1))
    assert result.client == name
    assert result.concurrency == 2
    assert result.errors == 0
    assert result.pairs_per_s > 0
    assert result.cpu_us > 0
    assert 0 < result.p50_ms <= result.p99_ms
