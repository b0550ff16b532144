"""The start-up line names the shim's own address, not the embedded mock's."""

from __future__ import annotations

from shim.config import Config
from shim.server import listening_line


def test_the_line_names_the_address_and_the_upstream() -> None:
    line = listening_line(Config(port=8000), 8000)

    assert line == "tts-shim listening on http://127.0.0.1:8000 (upstream: https://api.aimlapi.com)"


def test_the_bound_port_is_named_and_the_mock_is_called_so() -> None:
    config = Config(port=0, upstream_url="http://127.0.0.1:8100/v1")

    line = listening_line(config, 43123, mock=True)

    assert line == (
        "tts-shim listening on http://127.0.0.1:43123 "
        "(upstream: http://127.0.0.1:8100, the embedded mock)"
    )


def test_an_ipv6_address_is_bracketed() -> None:
    assert listening_line(Config(host="::1"), 9000).startswith(
        "tts-shim listening on http://[::1]:9000 "
    )
