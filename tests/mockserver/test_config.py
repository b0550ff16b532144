"""MockConfig checks its values."""

from __future__ import annotations

from typing import Any

import pytest

from mockserver import MockConfig, MockConfigError


def test_defaults() -> None:
    config = MockConfig()
    assert (config.host, config.port, config.response_shape) == ("127.0.0.1", 8100, "url-object")
    assert config.api_keys == ()
    assert config.cdn_url is None


def test_keys_become_a_tuple_and_urls_lose_their_slash() -> None:
    config = MockConfig(api_keys=["a", "b"], cdn_url="http://cdn.test/")  # type: ignore[arg-type]
    assert config.api_keys == ("a", "b")
    assert MockConfig(log_level="DEBUG").log_level == "debug"
    assert config.cdn_url == "http://cdn.test"
    hash(config)  # frozen and hashable


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ({"response_shape": "json"}, "response_shape"),
        ({"port": -1}, "port"),
        ({"journal_size": -1}, "journal_size"),
        ({"max_steps": 0}, "max_steps"),
        ({"audio_cache_bytes": -1}, "audio_cache_bytes"),
        ({"log_level": "loud"}, "log_level"),
        ({"cdn_url": "cdn.test"}, "cdn_url"),
        ({"api_keys": ("",)}, "API keys"),
        ({"api_keys": (" padded",)}, "API keys"),
    ],
)
def test_bad_values(settings: dict[str, Any], complaint: str) -> None:
    with pytest.raises(MockConfigError, match=complaint):
        MockConfig(**settings)
