from __future__ import annotations

import pytest
from yarl import URL

from shim.config import Config, ConfigError, origin_of, parse_origin


@pytest.mark.parametrize(
    "url",
    [
        "https://api.aimlapi.com",
        "https://api.aimlapi.com/",
        "https://api.aimlapi.com/v1",
        "https://api.aimlapi.com/v1/",
    ],
)
def test_upstream_url_accepts_the_root_with_or_without_v1(url: str) -> None:
    config = Config(upstream_url=url)

    assert config.tts_url == "https://api.aimlapi.com/v1/tts"


def test_default_audio_origins_are_the_upstream_and_its_cdn() -> None:
    config = Config(upstream_url="http://127.0.0.1:8100/v1", audio_origins=("https://x.test",))

    assert config.allowed_audio_origins == {
        ("http", "127.0.0.1", 8100),
        ("https", "cdn.aimlapi.com", 443),
        ("https", "x.test", 443),
    }


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("HTTPS://CDN.aimlapi.com/a/b.mp3?x=1", ("https", "cdn.aimlapi.com", 443)),
        ("http://localhost:81", ("http", "localhost", 81)),
        ("http://[::1]:9000/x", ("http", "::1", 9000)),
    ],
)
def test_parse_origin(url: str, origin: tuple[str, str, int]) -> None:
    assert parse_origin(url) == origin


def test_a_configured_origin_is_parsed_as_the_links_checked_against_it() -> None:
    # One parser for both sides: a name configured in Unicode matches the ASCII form a
    # link (and the client connecting to it) uses.
    configured = parse_origin("https://Bücher.example")

    assert configured == ("https", "xn--bcher-kva.example", 443)
    assert origin_of(URL("https://xn--bcher-kva.example/a.wav")) == configured
    assert origin_of(URL("file:///etc/passwd")) is None


@pytest.mark.parametrize("url", ["ftp://x", "not a url", "https://", "http://h:99999"])
def test_parse_origin_rejects(url: str) -> None:
    with pytest.raises(ConfigError):
        parse_origin(url)


def test_bad_upstream_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        Config(upstream_url="api.aimlapi.com")


@pytest.mark.parametrize(
    ("host", "client_keys", "allow_open", "refused"),
    [
        ("0.0.0.0", (), False, True),
        ("0.0.0.0", (), True, False),
        ("0.0.0.0", ("k",), False, False),
        ("192.0.2.10", (), False, True),
        ("127.0.0.1", (), False, False),
        ("::1", (), False, False),
        ("localhost", (), False, False),
    ],
)
def test_exposure_check(
    host: str, client_keys: tuple[str, ...], allow_open: bool, refused: bool
) -> None:
    config = Config(
        host=host, upstream_key="server-key", client_keys=client_keys, allow_open=allow_open
    )
    if refused:
        with pytest.raises(ConfigError, match="TTS_SHIM_API_KEYS"):
            config.check_exposure()
    else:
        config.check_exposure()


def test_without_a_server_key_any_address_is_allowed() -> None:
    Config(host="0.0.0.0").check_exposure()


@pytest.mark.parametrize("field", ["connect_timeout", "deadline", "keep_alive_timeout"])
def test_timeouts_must_be_positive(field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        Config(**{field: 0})  # type: ignore[arg-type]


def test_cache_defaults_are_on_one_gibibyte_and_thirty_days() -> None:
    config = Config()

    assert config.cache
    assert config.cache_dir is None
    assert config.cache_max_bytes == 1024**3
    assert config.cache_ttl == 30 * 24 * 3600
    assert config.redis_url is None


@pytest.mark.parametrize("field", ["cache_max_bytes", "cache_ttl"])
def test_cache_bounds_must_be_positive(field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        Config(**{field: 0})  # type: ignore[arg-type]


def test_redis_url_must_be_redis_and_is_never_repeated() -> None:
    with pytest.raises(ConfigError, match="redis://") as raised:
        Config(redis_url="http://user:hunter2@example.invalid")
    assert "hunter2" not in str(raised.value)
    assert "hunter2" not in repr(Config(redis_url="redis://:hunter2@127.0.0.1:6379/0"))


# -- keys, browsers, send timeout ---------------------------------------------------


def test_client_keys_without_a_way_to_pay_are_refused() -> None:
    config = Config(client_keys=("ck-1",))

    with pytest.raises(ConfigError, match="--upstream-key-header") as caught:
        config.check_keys()

    assert "AIMLAPI_KEY" in str(caught.value)
    assert "ck-1" not in str(caught.value)


@pytest.mark.parametrize(
    "settings",
    [
        {"client_keys": ("ck-1",), "upstream_key": "sk-server"},
        {"client_keys": ("ck-1",), "upstream_key_header": "X-AIMLAPI-Key"},
        {},
    ],
)
def test_keys_that_can_pay_are_accepted(settings: dict[str, object]) -> None:
    Config(**settings).check_keys()  # type: ignore[arg-type]


def test_the_key_header_is_stored_in_lower_case() -> None:
    assert Config(upstream_key_header=" X-AIMLAPI-Key ").upstream_key_header == "x-aimlapi-key"


@pytest.mark.parametrize("name", ["Authorization", "host", "x key", "", "x:y", "Origin"])
def test_the_key_header_must_be_a_header_of_its_own(name: str) -> None:
    with pytest.raises(ConfigError, match="upstream_key_header"):
        Config(upstream_key_header=name)


def test_the_key_header_and_a_server_key_are_one_too_many() -> None:
    with pytest.raises(ConfigError, match="not both"):
        Config(upstream_key="sk-server", upstream_key_header="X-AIMLAPI-Key")


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("https://App.Example", "https://app.example"),
        ("https://app.example:443/", "https://app.example"),
        ("http://localhost:3000", "http://localhost:3000"),
        ("http://[::1]:3000", "http://[::1]:3000"),
        (" * ", "*"),
    ],
)
def test_cors_origins_are_stored_as_browsers_send_them(given: str, stored: str) -> None:
    assert Config(cors_origins=(given,)).cors_origins == (stored,)


@pytest.mark.parametrize(
    "origin", ["app.example", "https://app.example/path", "ftp://x", "https://u@app.example"]
)
def test_bad_cors_origins_are_refused(origin: str) -> None:
    with pytest.raises(ConfigError):
        Config(cors_origins=(origin,))


@pytest.mark.parametrize(
    ("settings", "checked"),
    [
        ({}, True),
        ({"host": "::1"}, True),
        ({"host": "0.0.0.0"}, False),
        ({"host": "0.0.0.0", "allowed_hosts": ("tts.internal",)}, True),
        ({"allowed_hosts": ("*",)}, False),
    ],
)
def test_the_host_check_is_on_for_loopback_or_when_asked(
    settings: dict[str, object], checked: bool
) -> None:
    assert Config(**settings).host_check is checked  # type: ignore[arg-type]


@pytest.mark.parametrize("host", ["a b", "http://x", "x/y", ""])
def test_bad_allowed_hosts_are_refused(host: str) -> None:
    with pytest.raises(ConfigError):
        Config(allowed_hosts=(host,))


def test_the_send_timeout_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="send_timeout"):
        Config(send_timeout=0)
