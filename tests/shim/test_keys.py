"""Which key pays: the server's, the client's own in the key header, or the bearer."""

from __future__ import annotations

import pytest
from starlette.datastructures import Headers

from shim.config import Config
from shim.errors import APIError
from shim.keys import Keys


def test_the_server_key_pays_first() -> None:
    keys = Keys(Config(upstream_key="sk-server", client_keys=("ck-1",)))

    assert keys.upstream_key(Headers({"authorization": "Bearer ck-1"})) == "sk-server"


def test_without_client_keys_the_bearer_token_passes_through() -> None:
    keys = Keys(Config())

    assert keys.upstream_key(Headers({"authorization": "Bearer sk-own"})) == "sk-own"


@pytest.mark.parametrize("value", ["sk-own", "  sk-own ", "Bearer sk-own", "bearer  sk-own"])
def test_the_key_header_carries_the_clients_own_key(value: str) -> None:
    keys = Keys(Config(client_keys=("ck-1",), upstream_key_header="X-AIMLAPI-Key"))
    headers = Headers({"authorization": "Bearer ck-1", "x-aimlapi-key": value})

    assert keys.upstream_key(headers) == "sk-own"


@pytest.mark.parametrize("value", [None, "", "Bearer", "Bearer  "])
def test_a_missing_key_header_is_a_401_naming_it(value: str | None) -> None:
    keys = Keys(Config(client_keys=("ck-1",), upstream_key_header="X-AIMLAPI-Key"))
    raw = {"authorization": "Bearer ck-1"}
    if value is not None:
        raw["x-aimlapi-key"] = value

    with pytest.raises(APIError) as caught:
        keys.upstream_key(Headers(raw))

    assert caught.value.status == 401
    assert "x-aimlapi-key" in caught.value.message
    assert "ck-1" not in caught.value.message


def test_the_key_header_is_used_even_without_client_keys() -> None:
    keys = Keys(Config(upstream_key_header="X-AIMLAPI-Key"))

    with pytest.raises(APIError):
        keys.upstream_key(Headers({"authorization": "Bearer sk-own"}))


def test_a_shim_key_is_never_passed_through() -> None:
    # Config.check_keys refuses this set-up at start-up; built in code, it pays nothing.
    keys = Keys(Config(client_keys=("ck-1",)))

    with pytest.raises(APIError) as caught:
        keys.upstream_key(Headers({"authorization": "Bearer ck-1"}))

    assert caught.value.status == 500
    assert "ck-1" not in caught.value.message
