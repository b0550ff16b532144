"""Settings shared by the ``tts-shim serve`` command and programmatic use."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from yarl import URL

__all__ = [
    "DEFAULT_CDN_ORIGIN",
    "DEFAULT_UPSTREAM_URL",
    "Config",
    "ConfigError",
    "Origin",
    "StartupError",
    "origin_of",
    "parse_origin",
]

DEFAULT_UPSTREAM_URL = "https://api.aimlapi.com"
DEFAULT_CDN_ORIGIN = "https://cdn.aimlapi.com"

Origin = tuple[str, str, int]
_DEFAULT_PORTS = {"http": 80, "https": 443}


class ConfigError(ValueError):
    """A setting is invalid; the message says which and why."""


class StartupError(ConfigError):
    """What a setting names cannot be used: a cache directory that cannot be written, a
    keys file that does not read or check, a port already taken. The message names it
    (and the line at fault) and why; ``tts-shim serve`` prints it as one line and exits
    with status 1."""


def origin_of(url: URL) -> Origin | None:
    """``(scheme, host, port)`` of an http(s) URL as the upstream client parses it (the
    host in its ASCII form, the port explicit or the scheme's), else ``None``."""
    if url.scheme not in _DEFAULT_PORTS or not url.raw_host or url.port is None:
        return None
    return url.scheme, url.raw_host.lower(), url.port


def parse_origin(url: str) -> Origin:
    """``scheme://host[:port]`` (path ignored) -> ``(scheme, host, port)``, parsed as the
    audio links the shim checks against it are (:func:`origin_of`)."""
    try:
        origin = origin_of(URL(url.strip()))
    except ValueError as exc:  # a port out of range, a character no URL may hold
        raise ConfigError(f"not an http(s) origin: {url!r} ({exc})") from exc
    if origin is None:
        raise ConfigError(f"not an http(s) origin: {url!r}")
    return origin


_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+")
_RESERVED_KEY_HEADERS = frozenset(
    {"authorization", "host", "origin", "cookie", "content-type", "content-length"}
)
_HOST_NAME = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9._-]+)(:[0-9]{1,5})?")


def _web_origin(value: str) -> str:
    """An origin as browsers send it in ``Origin``: ``scheme://host[:port]``, lower
    case, default port left out; or ``*``."""
    text = value.strip()
    if text == "*":
        return text
    parts = urlsplit(text)
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ConfigError(f"a CORS origin is scheme://host[:port] with no path: {value!r}")
    scheme, host, port = parse_origin(text)
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}" if port == _DEFAULT_PORTS[scheme] else f"{scheme}://{shown}:{port}"


def _host_name(value: str) -> str:
    """An ``--allowed-host`` value: a name or address, optionally with ``:port``; or ``*``."""
    text = value.strip().lower().rstrip(".")
    if text != "*" and not _HOST_NAME.fullmatch(text):
        raise ConfigError(f"not a host name, optionally with :port: {value!r}")
    return text


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
    #: Largest audio in a non-streamed chat answer, which is held whole in memory
    #: (bytes, base64 and JSON); streamed answers have ``max_audio_bytes``.
    max_chat_audio_bytes: int = 32 * 1024 * 1024
    #: Proxy for every upstream request; ``None``: ``HTTPS_PROXY``/``HTTP_PROXY``/
    #: ``ALL_PROXY`` from the environment, minus ``NO_PROXY`` (read at start-up).
    proxy: str | None = None
    #: CA bundle (PEM) trusted for upstream TLS; ``None``: ``SSL_CERT_FILE`` or
    #: ``SSL_CERT_DIR`` when set, else certifi's.
    ca_bundle: str | None = None
    log_format: Literal["json", "text"] = "json"
    log_level: str = "info"
    #: Longest input (speech ``input``, chat's spoken text), characters. Above 4096
    #: (the upstream's own limit) a text is split; with ``split`` off, 4096 applies.
    max_input_chars: int = 100_000
    #: Split long texts into pieces generated ahead and stitched into one stream.
    split: bool = True
    #: Texts longer than this (characters) are split; the first piece is short.
    split_threshold: int = 1000
    #: Pieces of one request generated at once.
    split_parallel: int = 3
    #: Speech and chat requests generating or streaming audio at once; 0: no cap.
    max_concurrency: int = 64
    #: Requests waiting for a slot when all are taken; beyond it, 429.
    max_queue: int = 128
    #: Longest wait for a slot, seconds; then 429.
    queue_timeout: float = 10.0
    #: On SIGTERM, seconds in-flight responses get to finish before they are cut.
    graceful_timeout: float = 30.0
    #: Seconds an idle client connection stays open for its next request. Longer than
    #: the SDKs' own pools keep one (httpx, so the Python SDK: 5 s), or a client may send
    #: on a connection the shim is closing that instant and see it fail.
    keep_alive_timeout: float = 30.0
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
    #: Request header that carries the client's own AI/ML key, when the bearer token is
    #: a shim key (``client_keys``) and there is no server-side key. ``None``: not used.
    upstream_key_header: str | None = None
    #: Web page origins (``scheme://host[:port]``, or ``*``) allowed to call the shim;
    #: a request with any other ``Origin`` is refused (403). Empty: none.
    cors_origins: tuple[str, ...] = ()
    #: Extra ``Host`` names the shim answers to, besides its loopback address and
    #: ``localhost``; setting any turns the check on for a non-loopback bind. ``*``: any.
    allowed_hosts: tuple[str, ...] = ()
    #: Seconds a response body may wait for a client that takes no data; then it is cut.
    send_timeout: float = 30.0
    #: With client keys, also require one for the catalogue GETs (``/v1/models``,
    #: ``/v1/models/{id}``, ``/v1/audio/voices``, ``/v1/audio/models``). Off: they answer
    #: anyone, as they reveal only static lists and front ends such as Open WebUI read
    #: them without a key.
    private_catalog: bool = False
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
        if self.max_input_chars < 1 or self.split_threshold < 1 or self.split_parallel < 1:
            raise ConfigError("max_input_chars, split_threshold and split_parallel must be >= 1")
        if self.max_concurrency < 0 or self.max_queue < 0:
            raise ConfigError("max_concurrency and max_queue cannot be negative")
        if self.queue_timeout < 0 or self.graceful_timeout < 0:
            raise ConfigError("queue_timeout and graceful_timeout cannot be negative")
        if self.keep_alive_timeout <= 0:
            raise ConfigError("keep_alive_timeout must be positive")
        if self.log_format not in ("json", "text"):
            raise ConfigError(f"log_format must be json or text, not {self.log_format!r}")
        self._check_cache()
        self._check_trust_settings()
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

    def _check_trust_settings(self) -> None:
        """Normalise and check the key-header, browser and send-timeout settings."""
        if self.send_timeout <= 0:
            raise ConfigError("send_timeout must be positive")
        if self.upstream_key_header is not None:
            name = self.upstream_key_header.strip().lower()
            if not _HEADER_NAME.fullmatch(name) or name in _RESERVED_KEY_HEADERS:
                raise ConfigError(
                    f"upstream_key_header must be a header name of its own (not "
                    f"Authorization, Host, Origin, Cookie...), not {self.upstream_key_header!r}"
                )
            if self.upstream_key:
                raise ConfigError(
                    "set either AIMLAPI_KEY (the server pays) or --upstream-key-header "
                    "(each client sends its own AI/ML key), not both"
                )
            self.upstream_key_header = name
        self.cors_origins = tuple(_web_origin(o) for o in self.cors_origins)
        self.allowed_hosts = tuple(_host_name(h) for h in self.allowed_hosts)

    @property
    def host_check(self) -> bool:
        """Whether ``Host`` is checked: on a loopback bind, or with ``allowed_hosts``
        (unless they hold ``*``)."""
        if "*" in self.allowed_hosts:
            return False
        return self.is_loopback or bool(self.allowed_hosts)

    def check_keys(self) -> None:
        """Refuse client keys without a way to pay: the bearer token is then a shim key,
        and must never be sent to the AI/ML API as one."""
        if self.client_keys and not self.upstream_key and not self.upstream_key_header:
            raise ConfigError(
                "TTS_SHIM_API_KEYS is set but AIMLAPI_KEY is not: clients' bearer tokens "
                "are then shim keys, and the shim has no AI/ML key to pay with. Set "
                "AIMLAPI_KEY (the server pays), or pass --upstream-key-header NAME "
                "(TTS_SHIM_UPSTREAM_KEY_HEADER) so each client sends its own AI/ML key in "
                "that header and its shim key as the bearer token."
            )

    @staticmethod
    def _normalise_root(url: str) -> str:
        """Accept the API root with or without a trailing ``/v1``."""
        parse_origin(url)
        root = url.strip().rstrip("/")
        if root.endswith("/v1"):
            root = root[: -len("/v1")]
        return root

    @property
    def input_limit(self) -> int:
        """The longest input accepted: without splitting, the upstream's 4096."""
        return self.max_input_chars if self.split else min(self.max_input_chars, 4096)

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
