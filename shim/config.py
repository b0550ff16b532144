"""Settings shared by the ``tts-shim serve`` command and programmatic use."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

__all__ = ["DEFAULT_CDN_ORIGIN", "DEFAULT_UPSTREAM_URL", "Config", "ConfigError", "Origin"]

DEFAULT_UPSTREAM_URL = "https://api.aimlapi.com"
DEFAULT_CDN_ORIGIN = "https://cdn.aimlapi.com"

Origin = tuple[str, str, int]
_DEFAULT_PORTS = {"http": 80, "https": 443}


class ConfigError(ValueError):
    """A setting is invalid; the message says which and why."""


def parse_origin(url: str) -> Origin:
    """``scheme://host[:port]`` (path ignored) -> ``(scheme, host, port)``."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ConfigError(f"not an http(s) origin: {url!r}")
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError as exc:
        raise ConfigError(f"bad port in {url!r}") from exc
    return scheme, parts.hostname.lower(), port


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Config:
    """Everything the shim can be told.

    The CLI builds one from flags and environment variables; tests and embedding
    code build one directly and pass it to :func:`shim.create_app`.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    upstream_url: str = DEFAULT_UPSTREAM_URL
    #: Server-side AI/ML key. ``None``: pass each client's bearer token through.
    upstream_key: str | None = None
    #: Keys clients must present. Empty: no client authentication.
    client_keys: tuple[str, ...] = ()
    #: Extra origins the audio may be fetched from, besides the upstream's own and the CDN.
    audio_origins: tuple[str, ...] = ()
    allow_open: bool = False
    #: Retries of the billed ``POST /v1/tts`` (429, 5xx and connection errors only).
    tts_retries: int = 1
    #: Retries of the CDN download, before any audio byte reached the client.
    audio_retries: int = 2
    #: Longest ``Retry-After`` the shim waits out itself before retrying.
    max_retry_wait: float = 5.0
    connect_timeout: float = 5.0
    generation_timeout: float = 60.0
    download_timeout: float = 30.0
    #: Overall budget for one request, from arrival to the first audio byte.
    deadline: float = 90.0
    max_audio_bytes: int = 256 * 1024 * 1024
    max_body_bytes: int = 1024 * 1024
    #: Proxy for every upstream request; ``None``: ``HTTPS_PROXY``/``HTTP_PROXY``/
    #: ``ALL_PROXY`` from the environment, minus ``NO_PROXY``, as any httpx program.
    proxy: str | None = None
    #: CA bundle (PEM) trusted for upstream TLS; ``None``: ``SSL_CERT_FILE`` or
    #: ``SSL_CERT_DIR`` when set, else certifi's.
    ca_bundle: str | None = None
    log_format: Literal["json", "text"] = "json"
    log_level: str = "info"
    #: Speech and chat requests generating or streaming audio at once; 0: no cap.
    max_concurrency: int = 64
    #: Requests waiting for a slot when all are taken; beyond it, 429.
    max_queue: int = 128
    #: Longest wait for a slot, seconds; then 429.
    queue_timeout: float = 10.0
    #: On SIGTERM, seconds in-flight responses get to finish before they are cut.
    graceful_timeout: float = 30.0
    #: The audio cache (shim/cache): ``False`` turns it off (``--no-cache``).
    cache: bool = True
    #: The embedded cache's directory; ``None``: the user's cache directory (platformdirs).
    cache_dir: str | None = None
    #: Bound of the embedded cache, index included; least recently used entries go first.
    cache_max_bytes: int = 1024**3
    #: Seconds an entry lives (30 days).
    cache_ttl: float = 30 * 24 * 3600.0
    #: ``redis://`` / ``rediss://`` / ``unix://`` URL: the cache and its single flight live in
    #: Redis, shared by replicas. Hidden from repr: it may hold a password.
    redis_url: str | None = field(default=None, repr=False)
    #: Set by ``serve --mock``: the in-process mock's root URL is trusted for audio.
    trusted_origins: tuple[Origin, ...] = field(default=(), repr=False)
    # -- operators (issue 13): metrics, named keys with limits, prices ------------------
    #: TOML file of named client keys with limits (shim/clients.py); re-read on SIGHUP.
    keys_file: str | None = None
    #: Bearer token ``GET /metrics`` and ``GET /usage`` require; ``None``: open.
    metrics_key: str | None = field(default=None, repr=False)
    #: USD per 1,000 characters by model, over the defaults of :mod:`shim.prices`.
    prices: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.upstream_root = self._normalise_root(self.upstream_url)
        self.tts_url = self.upstream_root + "/v1/tts"
        origins = {parse_origin(self.upstream_root), parse_origin(DEFAULT_CDN_ORIGIN)}
        origins.update(parse_origin(o) for o in self.audio_origins)
        origins.update(self.trusted_origins)
        self.allowed_audio_origins: frozenset[Origin] = frozenset(origins)
        for name in ("connect_timeout", "generation_timeout", "download_timeout", "deadline"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        if self.tts_retries < 0 or self.audio_retries < 0:
            raise ConfigError("retry counts cannot be negative")
        if self.max_concurrency < 0 or self.max_queue < 0:
            raise ConfigError("max_concurrency and max_queue cannot be negative")
        if self.queue_timeout < 0 or self.graceful_timeout < 0:
            raise ConfigError("queue_timeout and graceful_timeout cannot be negative")
        if self.log_format not in ("json", "text"):
            raise ConfigError(f"log_format must be json or text, not {self.log_format!r}")
        self._check_cache()
        for model, price in self.prices.items():
            if not price >= 0:  # also refuses NaN
                raise ConfigError(f"price of {model} must be a number >= 0")

    def _check_cache(self) -> None:
        if self.cache_max_bytes <= 0 or self.cache_ttl <= 0:
            raise ConfigError("cache_max_bytes and cache_ttl must be positive")
        if self.redis_url is not None:
            scheme = urlsplit(self.redis_url).scheme
            if scheme not in ("redis", "rediss", "unix"):
                # The URL itself is not repeated: it may hold a password.
                raise ConfigError("redis_url must start with redis://, rediss:// or unix://")

    @staticmethod
    def _normalise_root(url: str) -> str:
        """Accept the API root with or without a trailing ``/v1``."""
        parse_origin(url)
        root = url.strip().rstrip("/")
        if root.endswith("/v1"):
            root = root[: -len("/v1")]
        return root

    @property
    def is_loopback(self) -> bool:
        return _is_loopback(self.host)

    def check_exposure(self) -> None:
        """Refuse to spend a server-side key for anyone who can reach the port."""
        exposed = self.upstream_key and not self.client_keys and not self.is_loopback
        if exposed and not self.allow_open:
            raise ConfigError(
                f"refusing to listen on {self.host} with a server-side AIMLAPI_KEY and no "
                "client keys: anyone who reaches the port would spend your credits. Set "
                "TTS_SHIM_API_KEYS, bind to 127.0.0.1, or pass --allow-open."
            )
