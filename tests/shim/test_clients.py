"""The keys file: parsing, the line at fault, identification, reload."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest
from starlette.datastructures import Headers

from shim.clients import ANONYMOUS, ANONYMOUS_CLIENT, ClientKeys, parse_keys_file
from shim.config import ConfigError
from shim.context import context_of
from shim.errors import APIError

GOOD = """\
# operators' keys
[keys.mobile-app]
key = "sk-shim-mobile-0001"
requests_per_minute = 60
characters_per_minute = 20000
usd_per_day = 5.0
usd_per_month = 100.0

[keys.batch]
key_sha256 = "{digest}"
"""


def _bearer(token: str) -> Headers:
    return Headers({"authorization": f"Bearer {token}"})


def _good() -> str:
    return GOOD.format(digest=hashlib.sha256(b"sk-shim-batch-0002").hexdigest())


def test_a_keys_file_names_keys_by_plain_key_or_digest() -> None:
    clients = parse_keys_file(_good())

    by_name = {client.name: client for client in clients.values()}
    assert set(by_name) == {"mobile-app", "batch"}
    mobile = by_name["mobile-app"].limits
    assert (mobile.requests_per_minute, mobile.characters_per_minute) == (60, 20000)
    assert (mobile.usd_per_day, mobile.usd_per_month) == (5.0, 100.0)
    assert not by_name["batch"].limits.any
    assert hashlib.sha256(b"sk-shim-batch-0002").hexdigest() in clients


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ('[keys.a]\nkey = "sk-shim-aaaa-0001"\nrequests_per_minute = -1\n', 3, "greater than 0"),
        ('[keys.a]\nkey = "sk-shim-aaaa-0001"\nusd_per_dya = 1\n', 3, "unknown setting"),
        ("\n\n[keys.a]\nrequests_per_minute = 5\n", 3, "exactly one of key or key_sha256"),
        ('[keys.a]\nkey = "short"\n', 2, "at least 8"),
        ('[keys.a]\nkey_sha256 = "abc"\n', 2, "should match pattern"),
        (
            '[keys.a]\nkey = "sk-shim-aaaa-0001"\n[keys.b]\nkey = "sk-shim-aaaa-0001"\n',
            3,
            "same key",
        ),
        ('[keys.a]\nkey = "sk-shim-aaaa-0001\n', 2, "line 2"),
        ('[keys."bad name"]\nkey = "sk-shim-aaaa-0001"\n', 1, "key name"),
    ],
)
def test_a_bad_file_is_refused_with_the_line_at_fault(text: str, line: int, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_keys_file(text, "keys.toml")

    message = str(caught.value)
    assert message.startswith("keys.toml")
    assert f"line {line}" in message
    assert words in message


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        ('"            "', "a space"),  # only spaces: long enough, never sendable
        ('"  sk-shim-aaaa-0001"', "a space"),  # the bearer token is stripped
        ('"sk-shim aaaa-0001"', "a space"),
        ('"sk-shim-aaaa-0001\\n"', "a line break"),
        ('"""sk-shim-aaaa\n0001"""', "a line break"),  # a TOML multi-line string
        ('"sk-shim-\\taaaa-0001"', "whitespace"),
        ('"sk-shim-\\u0000aaaa-0001"', "a control character"),
        ('"sk-shim-äääää-0001"', "a non-ASCII character"),
        ('"sk-shim-\\u00a0aaaa-0001"', "whitespace"),  # a no-break space
    ],
)
def test_a_key_no_client_could_send_is_refused_with_its_line(key: str, kind: str) -> None:
    text = f'# keys\n[keys.a]\nusd_per_day = 1.0\nkey = {key}\n[keys.b]\nkey = "sk-shim-b-0002"\n'

    with pytest.raises(ConfigError) as caught:
        parse_keys_file(text, "keys.toml")

    message = str(caught.value)
    assert message.startswith("keys.toml line 4: keys.a.key: ")
    assert f"the key has {kind}" in message
    assert "aaaa" not in message  # the key is not repeated


def test_an_empty_key_is_refused_with_its_line() -> None:
    with pytest.raises(ConfigError, match=r"^keys.toml line 2: keys.a.key: .*at least 8"):
        parse_keys_file('[keys.a]\nkey = ""\n', "keys.toml")


def test_env_keys_stay_valid_without_limits_and_the_file_wins_a_shared_key(
    tmp_path: Path,
) -> None:
    path = tmp_path / "keys.toml"
    path.write_text(_good())
    clients = ClientKeys(("sk-env-one-0001", "sk-shim-mobile-0001"), str(path))

    env = clients.identify(_bearer("sk-env-one-0001"))
    shared = clients.identify(_bearer("sk-shim-mobile-0001"))
    assert env is not None
    assert env.name == "env-1"
    assert not env.limits.any
    assert shared is not None
    assert shared.name == "mobile-app"
    assert clients.identify(_bearer("sk-shim-batch-0002")) is not None
    assert clients.identify(_bearer("sk-nobody-000000")) is None
    assert clients.identify(Headers({})) is None


def test_check_names_the_client_or_answers_401() -> None:
    clients = ClientKeys(("sk-env-one-0001",))

    client = clients.check(_bearer("sk-env-one-0001"))

    assert client.name == "env-1"
    # A request no client key named is the anonymous client's.
    assert context_of({}).client == ANONYMOUS_CLIENT
    assert ANONYMOUS_CLIENT.name == ANONYMOUS
    with pytest.raises(APIError) as caught:
        clients.check(_bearer("sk-wrong-0000000"))
    assert (caught.value.status, caught.value.code) == (401, "invalid_api_key")


def test_reload_swaps_the_table_and_a_bad_file_keeps_the_old(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "keys.toml"
    path.write_text('[keys.first]\nkey = "sk-shim-first-001"\n')
    clients = ClientKeys((), str(path))
    assert clients.names == ["first"]

    path.write_text('[keys.second]\nkey = "sk-shim-second-01"\nrequests_per_minute = 2\n')
    assert clients.reload()
    assert clients.names == ["second"]
    assert clients.identify(_bearer("sk-shim-first-001")) is None

    path.write_text('[keys.third]\nkey = "sk-shim-third-001"\nrequests_per_minute = "x"\n')
    with caplog.at_level(logging.ERROR, logger="tts_shim"):
        assert not clients.reload()
    assert clients.names == ["second"]
    assert "line 3" in caplog.text
    assert "sk-shim-third-001" not in caplog.text


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the keys file"):
        ClientKeys((), str(tmp_path / "absent.toml"))
