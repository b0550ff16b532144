"""The one HTTP client library the shim talks upstream with: httpx, used plainly.

Two :class:`httpx.AsyncClient` instances are built, one for the AI/ML API and one
for its CDN, so that nothing set for the API (the key above all) can reach the CDN.
Both honour the environment as any httpx program does (``HTTPS_PROXY``,
``HTTP_PROXY``, ``ALL_PROXY``, ``NO_PROXY``, ``SSL_CERT_FILE``, ``SSL_CERT_DIR``),
unless ``--proxy`` or ``--ca-bundle`` say otherwise.
"""

from __future__ import annotations

import re
import ssl

import httpx

from shim.config import Config
from shim.errors import APIError

__all__ = ["USER_AGENT", "build_client", "describe", "never_sent", "transport_error"]

USER_AGENT = "tts-shim"


def build_client(
    config: Config,
    transport: httpx.AsyncBaseTransport | None,
    *,
    read_timeout: float,
    headers: dict[str, str],
) -> httpx.AsyncClient:
    """A pooled client for one upstream peer.

    ``transport`` is for tests (``httpx.ASGITransport`` on the mock); passing one
    turns off httpx's environment proxies, as it should for an in-process peer.
    """
    timeout = httpx.Timeout(
        connect=config.connect_timeout,
        read=read_timeout,
        write=config.connect_timeout,
        pool=config.connect_timeout,
    )
    # Keep-alive for every slot's connection: the default of 20 idle connections
    # makes a busy shim open and close connections on every request.
    idle = max(config.max_concurrency, 20) if config.max_concurrency else None
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=idle)
    return httpx.AsyncClient(
        transport=transport,
        proxy=config.proxy,
        verify=_tls_context(config),
        trust_env=True,
        limits=limits,
        timeout=timeout,
        headers={"user-agent": USER_AGENT, **headers},
        follow_redirects=False,
    )


def _tls_context(config: Config) -> ssl.SSLContext | bool:
    """``True`` lets httpx pick the trust store (certifi, or ``SSL_CERT_FILE`` /
    ``SSL_CERT_DIR`` when set); ``--ca-bundle`` replaces it."""
    if config.ca_bundle is None:
        return True
    return ssl.create_default_context(cafile=config.ca_bundle)


#: Failures raised before any byte of the request left: the peer never saw it.
_NEVER_SENT = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
)


def never_sent(exc: BaseException) -> bool:
    """Whether ``exc`` proves the request never reached the peer (so a billed call
    may be sent again without paying twice)."""
    return isinstance(exc, _NEVER_SENT)


def transport_error(exc: Exception, peer: str, *, retryable: bool) -> APIError:
    """The envelope for a failed exchange with ``peer``: a timeout is a 504,
    anything else (refused, reset, not HTTP) a 502."""
    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.PoolTimeout):
        return APIError(
            504,
            f"Timed out waiting for {peer}.",
            type="server_error",
            code="timeout",
            retryable=retryable,
        )
    connecting = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
    what = f"Could not reach {peer}" if connecting else f"The connection to {peer} failed"
    return APIError(
        502,
        f"{what}: {describe(exc)}.",
        type="server_error",
        code="upstream_unreachable",
        retryable=retryable,
    )


def describe(exc: BaseException) -> str:
    """``ClassName: message`` with any query string cut: a signed CDN link is a
    credential for that audio."""
    text = _QUERY.sub("?…", str(exc).strip())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_QUERY = re.compile(r"\?[^\s'\">]+")
