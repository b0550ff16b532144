"""The one HTTP client the shim talks upstream with: httpx's API over aiohttp.

:class:`httpx_aiohttp.HttpxAiohttpClient` is an :class:`httpx.AsyncClient` whose
connections are aiohttp's. It was chosen by measurement (``docs/benchmarks.md``):
httpx's own transport (httpcore 1.0) collapses under concurrency, because its pool
hands one idle connection to every waiting request and all but one then scan the pool
again (at c=64: 144 req/s, p99 1.5 s, 6 ms of CPU a request); over aiohttp the same
calls cost about a seventh of the CPU and do not collapse. Being an httpx client, it
keeps httpx's proxies and TLS settings, and tests can still hand it an
``httpx.ASGITransport``.

Two clients are built, one for the AI/ML API and one for its CDN, so that nothing set
for the API (the key above all) can reach the CDN. Both honour the environment as any
httpx program does (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``, ``NO_PROXY``,
``SSL_CERT_FILE``, ``SSL_CERT_DIR``), unless ``--proxy`` or ``--ca-bundle`` say otherwise.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import ssl

import aiohttp
import httpx
from httpx_aiohttp import HttpxAiohttpClient

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
    # Idle connections are dropped after 4 s: under the 5 s that many servers (uvicorn
    # among them) keep an idle connection open, so a request is not sent on a connection
    # the peer is closing (which, for the billed call, could not be retried).
    limits = httpx.Limits(max_connections=None, keepalive_expiry=4.0)
    return HttpxAiohttpClient(
        transport=transport,
        proxy=config.proxy,
        verify=_tls_context(config),
        trust_env=True,
        limits=limits,
        timeout=timeout,
        headers={"user-agent": USER_AGENT, **headers},
        follow_redirects=False,
    )


def _tls_context(config: Config) -> ssl.SSLContext:
    """The trust store for upstream TLS: ``--ca-bundle``, else httpx's own choice
    (certifi, or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` when set)."""
    environ = os.environ
    return _trust_store(config.ca_bundle, environ.get("SSL_CERT_FILE"), environ.get("SSL_CERT_DIR"))


@functools.lru_cache(maxsize=8)
def _trust_store(
    ca_bundle: str | None, cert_file: str | None, cert_dir: str | None
) -> ssl.SSLContext:
    # One context per trust store in the process, shared by every client built on it:
    # loading a CA bundle costs ~30 ms of CPU, a client given a loaded one ~0.1 ms. Each
    # app builds two clients, and a process may start many apps (tests, reloads). The
    # two variables are in the key because httpx reads them when it loads the store.
    if ca_bundle is not None:
        return ssl.create_default_context(cafile=ca_bundle)
    return httpx.create_ssl_context(trust_env=True)


#: Failures raised before any byte of the request left: the peer never saw it.
_NEVER_SENT = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
)


#: aiohttp's failures to connect at all (refused, DNS, TLS, proxy, connect timeout).
_AIOHTTP_NEVER_SENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)


def never_sent(exc: BaseException) -> bool:
    """Whether ``exc`` proves the request never reached the peer (so a billed call
    may be sent again without paying twice)."""
    cause = exc.__cause__
    if isinstance(cause, aiohttp.ClientError):
        # httpx-aiohttp maps every aiohttp connection error, a server that hung up
        # after the request included, to ``httpx.ConnectTimeout``: the cause decides.
        return isinstance(cause, _AIOHTTP_NEVER_SENT)
    return isinstance(exc, _NEVER_SENT)


def _is_timeout(exc: BaseException) -> bool:
    # Through httpx-aiohttp a refused or dropped connection is a ConnectTimeout too;
    # only a real timeout underneath makes it one.
    if not isinstance(exc, httpx.TimeoutException) or isinstance(exc, httpx.PoolTimeout):
        return False
    cause = exc.__cause__
    return cause is None or isinstance(cause, (TimeoutError, asyncio.TimeoutError))


def transport_error(exc: Exception, peer: str, *, retryable: bool) -> APIError:
    """The envelope for a failed exchange with ``peer``: a timeout is a 504,
    anything else (refused, reset, not HTTP) a 502."""
    if _is_timeout(exc):
        return APIError(
            504,
            f"Timed out waiting for {peer}.",
            type="server_error",
            code="timeout",
            retryable=retryable,
        )
    connecting = never_sent(exc)
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
