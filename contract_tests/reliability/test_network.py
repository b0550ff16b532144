"""The upstream client on real networks: proxies, TLS with a private CA, IPv6, and
interim (1xx) replies.

A real forward proxy (Debian's ``tinyproxy``, which ``scripts/dev.py test`` installs
where it is missing) carries the shim's upstream traffic; ``trustme`` makes a
throwaway CA and a server certificate for a TLS mock of the API and its CDN.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from contract_tests.reliability.conftest import RawServer
from mockserver import BackgroundServer, MockConfig, create_app
from mockserver.audio import encode
from shim import Config
from shim.errors import APIError
from shim.testing import decode_audio, free_port
from shim.upstream import Upstream
from shim.upstream.clients import _tls_context

BODY = {"model": "openai/tts-1", "text": "Through the network.", "response_format": "wav"}
KEY = "sk-network-test-0001"


async def _speak(config: Config) -> bytes:
    """One generation through a fresh upstream client, the audio read whole."""
    upstream = Upstream(config)
    try:
        stream = await upstream.open(await upstream.generate(BODY, KEY))
        return b"".join([chunk async for chunk in stream])
    finally:
        await upstream.aclose()


def _assert_audio(audio: bytes) -> None:
    assert decode_audio(audio, "wav").seconds > 0.5


# -- a forward proxy ----------------------------------------------------------------------


class Proxy:
    """``tinyproxy`` on a free loopback port, its log readable."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("tinyproxy") or "/usr/sbin/tinyproxy"
        if not Path(binary).exists():
            pytest.fail("tinyproxy is not installed: run `python3 scripts/dev.py test`, "
                        "or `apt-get install tinyproxy`")  # fmt: skip
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = directory / "tinyproxy.log"
        conf = directory / "tinyproxy.conf"
        conf.write_text(
            f'Port {self.port}\nListen 127.0.0.1\nTimeout 30\nLogFile "{self.log}"\n'
            "LogLevel Connect\nMaxClients 20\nAllow 127.0.0.1\n"
        )
        self.process = subprocess.Popen(
            [binary, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                return
            except OSError:
                time.sleep(0.02)
        self.close()
        pytest.fail("tinyproxy did not start")

    def seen(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(5)


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Proxy]:
    server = Proxy(tmp_path)
    yield server
    server.close()


@pytest.fixture
def mock() -> Iterator[BackgroundServer]:
    with BackgroundServer(create_app(MockConfig())) as server:
        yield server


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def _via_proxy(mock: Any) -> list[bool]:
    """For each request the mock received, whether it came through tinyproxy."""
    journal = mock.app.state.journal.entries()
    return ["tinyproxy" in entry["headers"].get("via", "") for entry in journal]


@pytest.mark.usefixtures("no_proxy_env")
async def test_the_environments_proxy_carries_the_api_and_cdn_traffic(
    proxy: Proxy, mock: BackgroundServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)

    _assert_audio(await _speak(Config(upstream_url=mock.url)))

    assert _via_proxy(mock) == [True, True]  # the generation and the download


@pytest.mark.usefixtures("no_proxy_env")
async def test_no_proxy_bypasses_it(
    proxy: Proxy, mock: BackgroundServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")

    _assert_audio(await _speak(Config(upstream_url=mock.url)))

    assert _via_proxy(mock) == [False, False]


@pytest.mark.usefixtures("no_proxy_env")
async def test_the_proxy_setting_needs_no_environment(proxy: Proxy, mock: BackgroundServer) -> None:
    _assert_audio(await _speak(Config(upstream_url=mock.url, proxy=proxy.url)))

    assert _via_proxy(mock) == [True, True]


# -- TLS with a private CA ---------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_mock(ca: trustme.CA, tmp_path: Path) -> Iterator[str]:
    """The mock (API and CDN) over HTTPS, with a certificate for ``localhost``."""
    cert = ca.issue_cert("localhost", "127.0.0.1")
    chain, key = tmp_path / "chain.pem", tmp_path / "key.pem"
    cert.private_key_pem.write_to_path(str(key))
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    server = BackgroundServer(
        create_app(MockConfig()), ssl_certfile=str(chain), ssl_keyfile=str(key)
    )
    with server:
        yield f"https://localhost:{server.port}"


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.mark.usefixtures("no_proxy_env")
async def test_a_ca_bundle_is_trusted_for_the_api_and_the_cdn(tls_mock: str, ca_file: str) -> None:
    _assert_audio(await _speak(Config(upstream_url=tls_mock, ca_bundle=ca_file)))


@pytest.mark.usefixtures("no_proxy_env")
async def test_ssl_cert_file_is_honoured(
    tls_mock: str, ca_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", ca_file)

    _assert_audio(await _speak(Config(upstream_url=tls_mock)))


def test_each_trust_store_is_loaded_once(ca_file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Loading a CA bundle costs ~30 ms of CPU, and each app builds two clients on one.
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    default = _tls_context(Config())
    bundle = _tls_context(Config(ca_bundle=ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", ca_file)
    from_environment = _tls_context(Config())
    monkeypatch.delenv("SSL_CERT_FILE")

    assert _tls_context(Config()) is default
    assert _tls_context(Config(ca_bundle=ca_file)) is bundle
    assert len({id(default), id(bundle), id(from_environment)}) == 3
    (trusted,) = bundle.get_ca_certs()  # the bundle's one CA, and nothing else
    assert dict(entry[0] for entry in trusted["subject"])["organizationName"].startswith("trustme")


@pytest.mark.usefixtures("no_proxy_env")
async def test_an_unknown_ca_is_refused_and_never_paid_twice(tls_mock: str) -> None:
    with pytest.raises(APIError) as refused:
        await _speak(Config(upstream_url=tls_mock, tts_retries=0))

    assert refused.value.status == 502
    assert refused.value.code == "upstream_unreachable"
    assert "certificate" in refused.value.message.lower()


@pytest.mark.usefixtures("no_proxy_env")
async def test_https_through_the_proxy_tunnels_with_connect(
    proxy: Proxy, tls_mock: str, ca_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)

    _assert_audio(await _speak(Config(upstream_url=tls_mock, ca_bundle=ca_file)))

    assert proxy.seen().count("CONNECT") >= 1


# -- IPv6 and interim replies ------------------------------------------------------------


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.usefixtures("no_proxy_env")
async def test_an_ipv6_upstream() -> None:
    if not _ipv6_loopback():
        pytest.fail("this machine has no IPv6 loopback (::1); the test needs one")
    with BackgroundServer(create_app(MockConfig()), host="::1") as server:
        _assert_audio(await _speak(Config(upstream_url=server.url)))


@pytest.mark.usefixtures("no_proxy_env")
async def test_interim_replies_are_skipped(raw_server: Callable[..., RawServer]) -> None:
    audio = encode("alloy", 24_000, "wav")

    def answer(conn: socket.socket, number: int) -> None:
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        conn.sendall(b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n")
        head = f"HTTP/1.1 200 OK\r\ncontent-type: audio/wav\r\ncontent-length: {len(audio)}\r\n"
        conn.sendall(head.encode() + b"connection: close\r\n\r\n" + audio)

    server = raw_server(answer)

    assert await _speak(Config(upstream_url=server.url)) == audio
    assert server.connections == 1
