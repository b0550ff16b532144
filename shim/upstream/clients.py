"""The one HTTP client the shim talks upstream with: aiohttp, used plainly.

Chosen by measurement (``docs/benchmarks.md``): httpx's own transport (httpcore 1.0)
collapses under concurrency (its pool hands one idle connection to every waiting
request, and all but one then scan the pool again: at c=64, 144 req/s, p99 1.5 s);
httpx's API over aiohttp's connections does not collapse, but httpx's request,
header, URL, response and cookie objects, built on top of aiohttp's own, cost about
three times what aiohttp alone costs per call (``python3 bench/micro.py``).

Two sessions are built, one for the AI/ML API and one for its CDN, so that nothing
set for the API (the key above all) can reach the CDN. Both honour the environment as
an httpx program does, unless ``--proxy`` or ``--ca-bundle`` say otherwise:
``HTTPS_PROXY``, ``HTTP_PROXY`` and ``ALL_PROXY`` minus ``NO_PROXY`` (read when the app
starts, not per request: :class:`Proxies`), and ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` for
the trust store (else certifi's).
"""

from __future__ import annotations

import functools
import os
import re
import ssl
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
import certifi
from yarl import URL

from shim import errors
from shim.config import Config, StartupError
from shim.errors import UpstreamError

__all__ = [
    "USER_AGENT",
    "Proxies",
    "build_session",
    "check_trust_store",
    "describe",
    "never_sent",
    "transport_error",
]

USER_AGENT = "tts-shim"


def build_session(
    config: Config, *, read_timeout: float, headers: Mapping[str, str]
) -> aiohttp.ClientSession:
    """A pooled session for one upstream peer (call from a running event loop).

    Timeouts: ``--connect-timeout`` to get a connection (from the pool, or a new one)
    and to open one; ``read_timeout`` for each read (the reply's head, then every body
    chunk), so a long download runs as long as bytes keep coming.
    """
    # Idle connections are dropped after 4 s: under the 5 s that many servers (uvicorn
    # among them) keep an idle connection open, so a request is not sent on a connection
    # the peer is closing (which, for the billed call, could not be retried).
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=4.0, ssl=_tls_context(config))
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(
            total=None,
            connect=config.connect_timeout,
            sock_connect=config.connect_timeout,
            sock_read=read_timeout,
        ),
        headers={"user-agent": USER_AGENT, **headers},
        # The shim sends no cookies and keeps none an upstream sets.
        cookie_jar=aiohttp.DummyCookieJar(),
        raise_for_status=False,
    )


@dataclass(frozen=True)
class Proxies:
    """Which proxy, if any, a request to a URL goes through: ``--proxy`` for every
    request, else the environment's, read when the app starts (``NO_PROXY`` when a host
    is first seen), not on every request as aiohttp's own ``trust_env`` does, on a
    thread."""

    explicit: str | None
    environment: tuple[tuple[str, str], ...]

    @classmethod
    def from_config(cls, config: Config) -> Proxies:
        found = urllib.request.getproxies_environment()
        return cls(config.proxy, tuple(sorted(found.items())))

    def for_url(self, url: URL) -> str | None:
        if self.explicit is not None:
            return self.explicit
        if not self.environment:
            return None
        return _environment_proxy(self.environment, url.scheme, url.raw_host or "")


@functools.lru_cache(maxsize=256)
def _environment_proxy(
    environment: tuple[tuple[str, str], ...], scheme: str, host: str
) -> str | None:
    # The environment is in the key, so an app started after it changed reads it afresh;
    # urllib's bypass check reads NO_PROXY (and ``no_proxy``) itself.
    found = dict(environment)
    proxy = found.get(scheme) or found.get("all")
    if proxy is None or urllib.request.proxy_bypass(host):
        return None
    return proxy


def check_trust_store(config: Config) -> None:
    """Load the upstream trust store now, so a ``--ca-bundle`` that cannot be read stops
    start-up with a :class:`~shim.config.StartupError` naming it (loaded once, kept)."""
    _tls_context(config)


def _tls_context(config: Config) -> ssl.SSLContext:
    """The trust store for upstream TLS: ``--ca-bundle``, else ``SSL_CERT_FILE`` /
    ``SSL_CERT_DIR`` when set, else certifi's."""
    environ = os.environ
    return _trust_store(config.ca_bundle, environ.get("SSL_CERT_FILE"), environ.get("SSL_CERT_DIR"))


@functools.lru_cache(maxsize=8)
def _trust_store(
    ca_bundle: str | None, cert_file: str | None, cert_dir: str | None
) -> ssl.SSLContext:
    # One context per trust store in the process, shared by every session built on it:
    # loading a CA bundle is costly, each app builds two sessions, and a process may
    # start many apps (tests, reloads).
    if ca_bundle is not None:
        try:
            return ssl.create_default_context(cafile=ca_bundle)
        except (OSError, ssl.SSLError) as exc:
            raise StartupError(f"cannot use the CA bundle {ca_bundle}: {exc}") from None
    if cert_file or cert_dir:
        return ssl.create_default_context(cafile=cert_file or None, capath=cert_dir or None)
    return ssl.create_default_context(cafile=certifi.where())


#: aiohttp's failures to connect at all (refused, DNS, TLS, proxy, connect timeout):
#: raised before any byte of the request left, so the peer never saw it.
_NEVER_SENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError, aiohttp.InvalidURL)


def never_sent(exc: BaseException) -> bool:
    """Whether ``exc`` proves the request never reached the peer (so a billed call
    may be sent again without paying twice)."""
    return isinstance(exc, _NEVER_SENT)


def transport_error(
    exc: Exception, peer: str, *, retryable: bool, request_id: str | None = None
) -> UpstreamError:
    """What a failed exchange with ``peer`` was: timed out, or anything else (refused,
    reset, not HTTP)."""
    if isinstance(exc, TimeoutError):
        return errors.upstream_timeout(
            f"Timed out waiting for {peer}.", retryable=retryable, request_id=request_id
        )
    connecting = never_sent(exc)
    what = f"Could not reach {peer}" if connecting else f"The connection to {peer} failed"
    return errors.upstream_unreachable(
        f"{what}: {describe(exc)}.", retryable=retryable, request_id=request_id
    )


def describe(exc: BaseException) -> str:
    """``ClassName: message`` with any query string cut: a signed CDN link is a
    credential for that audio."""
    text = _QUERY.sub("?…", str(exc).strip())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_QUERY = re.compile(r"\?[^\s'\">]+")
