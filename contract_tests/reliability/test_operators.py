"""Limits across real ``tts-shim serve`` processes: a shared Redis, and SIGHUP reloads."""

from __future__ import annotations

import concurrent.futures
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from contract_tests.conftest import LOOPBACK_TLS
from contract_tests.reliability.conftest import SPEECH, ServeProcess, call
from shim.testing import MockUpstream
from tests.redis_server import RedisServer

KEY = "sk-shared-key-0001"
OTHER = "sk-other-key-0002"


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def _generations(mock: MockUpstream) -> int:
    return sum(entry["route"] == "tts" for entry in mock.journal)


def _shim(
    serve_process: Callable[..., ServeProcess], mock: MockUpstream, *args: str
) -> ServeProcess:
    # No cache: every request of these tests must reach the mock.
    return serve_process(
        "--upstream-url", mock.url, "--no-cache", *args, env={"AIMLAPI_KEY": "mock-key"}
    )


def test_two_replicas_sharing_redis_enforce_one_limit(
    serve_process: Callable[..., ServeProcess],
    tts_mock: MockUpstream,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    limit = 4
    keys = tmp_path / "keys.toml"
    keys.write_text(f'[keys.shared]\nkey = "{KEY}"\nrequests_per_minute = {limit}\n')
    args = ("--keys-file", str(keys), "--redis-url", redis_server.url)
    replicas = [_shim(serve_process, tts_mock, *args) for _ in range(2)]
    auth = {"authorization": f"Bearer {KEY}"}

    answers = [call(replicas[n % 2].url, json_body=SPEECH, headers=auth) for n in range(limit)]
    assert [a.status for a in answers] == [200] * limit
    assert _generations(tts_mock) == limit

    for replica in replicas:  # the (N+1)th, on either replica
        refused = call(replica.url, json_body=SPEECH, headers=auth)
        assert refused.status == 429
        assert refused.envelope()["code"] == "rate_limit_exceeded"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert _generations(tts_mock) == limit
    # The usage both replicas recorded is one ledger.
    usage = httpx.get(replicas[1].url + "/v1/usage", headers=auth, verify=LOOPBACK_TLS).json()
    assert usage["day"]["requests"] == limit
    assert usage["day"]["characters"] == limit * len(SPEECH["input"])


def test_sighup_reloads_the_keys_file_with_requests_in_flight(
    serve_process: Callable[..., ServeProcess], tts_mock: MockUpstream, tmp_path: Path
) -> None:
    keys = tmp_path / "keys.toml"
    keys.write_text(f'[keys.first]\nkey = "{KEY}"\n')
    shim = _shim(serve_process, tts_mock, "--keys-file", str(keys))
    first = {"authorization": f"Bearer {KEY}"}
    second = {"authorization": f"Bearer {OTHER}"}
    assert call(shim.url, json_body=SPEECH, headers=second).status == 401
    # Slow generations, so the reload lands while they are in flight.
    tts_mock.scenario([{"latency": "1.5s", "times": 4}])

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        slow = [pool.submit(call, shim.url, json_body=SPEECH, headers=first) for _ in range(4)]
        time.sleep(0.5)
        keys.write_text(
            f'[keys.second]\nkey = "{OTHER}"\nrequests_per_minute = 1\n'
            f'[keys.first]\nkey = "{KEY}"\n'
        )
        shim.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while "keys file reloaded" not in shim.log and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(not future.done() for future in slow)  # still in flight
        outcomes = [future.result() for future in slow]

    assert [o.status for o in outcomes] == [200] * 4
    assert all(o.complete for o in outcomes)
    assert call(shim.url, json_body=SPEECH, headers=second).status == 200
    assert call(shim.url, json_body=SPEECH, headers=second).status == 429  # its new limit

    # A bad file is refused with the line at fault; the keys in force stay.
    keys.write_text(f'[keys.first]\nkey = "{KEY}"\nusd_per_day = "lots"\n')
    shim.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while "keys file refused" not in shim.log and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "line 3" in shim.log
    assert KEY not in shim.log
    assert call(shim.url, json_body=SPEECH, headers=first).status == 200
    assert shim.proc.poll() is None
