"""Settings shared by the ``tts-shim serve`` command and programmatic use."""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterator
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Literal
from urllib.parse import urlsplit

from yarl import URL

__all__ = [
    "DEFAULT_CDN_ORIGIN",
    "DEFAULT_UPSTREAM_URL",
    "MAX_INPUT_CHARS",
    "Config",
    "ConfigError",
    "Origin",
    "Setting",
    "StartupError",
    "origin_of",
    "parse_origin",
    "settings",
]

DEFAULT_UPSTREAM_URL = "https://api.aimlapi.com"
DEFAULT_CDN_ORIGIN = "https://cdn.aimlapi.com"
#: The longest text the AI/ML API speaks in one request, in characters (OpenAI's input
#: limit too): longer texts are split, up to ``--max-input-chars``.
MAX_INPUT_CHARS = 4096

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


@dataclass(frozen=True)
class Setting:
    """How one :class:`Config` field is set from outside, written once: the CLI's option
    and the settings page are built from it, and :meth:`check` is its validation."""

    help: str
    #: The flag; ``None``: the field's name, ``--with-dashes``. Booleans get ``--no-...``.
    flag: str | None = None
    #: The environment variable; ``None``: ``TTS_SHIM_`` and the field's name, upper case.
    env: str | None = None
    #: Inclusive bounds of a number.
    low: float | None = None
    high: float | None = None
    #: A number that must be above zero.
    positive: bool = False
    #: The values a string may take.
    choices: tuple[str, ...] = ()
    #: The default as the help and the settings page show it (``None``: the value).
    shown: str | None = None
    #: Never shown or logged (a key, a URL that may hold a password): no default in the
    #: help, hidden from the config's repr, and better set in the environment.
    secret: bool = False

    def check(self, name: str, value: object) -> None:
        """Raise :class:`ConfigError` when ``value`` is out of this setting's range."""
        if self.choices and value not in self.choices:
            raise ConfigError(f"{name} must be one of {', '.join(self.choices)}, not {value!r}")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return
        if self.positive and not value > 0:
            raise ConfigError(f"{name} must be positive, not {value!r}")
        low = -math.inf if self.low is None else self.low
        high = math.inf if self.high is None else self.high
        if not low <= value <= high:  # also refuses NaN
            bounds = f"from {low:g} to {high:g}" if self.high is not None else f">= {low:g}"
            raise ConfigError(f"{name} must be {bounds}, not {value!r}")


def _setting(default: Any, help: str, **how: Any) -> Any:
    """A :class:`Config` field with its :class:`Setting` (``how``: the Setting's fields)."""
    setting = Setting(help, **how)
    if isinstance(default, (dict, list)):
        return field(
            default_factory=lambda: type(default)(default),
            repr=not setting.secret,
            metadata={"setting": setting},
        )
    return field(default=default, repr=not setting.secret, metadata={"setting": setting})


def settings() -> Iterator[tuple[str, Setting, Any]]:
    """``(field name, Setting, default)`` of every :class:`Config` field set from outside,
    in the order the CLI lists them."""
    for item in fields(Config):
        setting = item.metadata.get("setting")
        if setting is not None:
            default = item.default if item.default_factory is MISSING else item.default_factory()
            yield item.name, setting, default


@dataclass
class Config:
    """Everything the shim can be told.

    The CLI builds one from flags and environment variables; tests and embedding
    code build one directly and pass it to :func:`shim.create_app`. Each field's
    :class:`Setting` is the one place its flag, variable, help and range are written:
    ``tts-shim serve`` builds its options from them (:mod:`shim.cli`), the settings page
    is generated from those options, and the ranges are checked here.
    """

    # -- listening -------------------------------------------------------------------
    host: str = _setting(
        "127.0.0.1",
        "Address to listen on. Anything but loopback exposes your key; see --allow-open.",
    )
    port: int = _setting(8000, "Port to listen on.", low=0, high=65535)
    # -- the upstream ----------------------------------------------------------------
    upstream_url: str = _setting(
        DEFAULT_UPSTREAM_URL, "AI/ML API root, with or without /v1.", env="AIMLAPI_BASE_URL"
    )
    #: Server-side AI/ML key. ``None``: pass each client's bearer token through.
    upstream_key: str | None = _setting(
        None,
        "Server-side AI/ML key. Prefer the environment variable: flags show in ps. "
        "Unset: each client's bearer token is passed through as the key.",
        env="AIMLAPI_KEY",
        secret=True,
    )
    #: Keys clients must present. Empty: no client authentication.
    client_keys: tuple[str, ...] = _setting(
        (),
        "Key clients must send (repeatable). Unset: no client authentication.",
        flag="--client-key",
        env="TTS_SHIM_API_KEYS",
        secret=True,
    )
    #: Extra origins the audio may be fetched from, besides the upstream's own and the CDN.
    audio_origins: tuple[str, ...] = _setting(
        (),
        "Extra scheme://host[:port] the audio may be fetched from, besides the "
        "upstream's own origin and https://cdn.aimlapi.com (repeatable).",
        flag="--audio-origin",
    )
    allow_open: bool = _setting(
        False, "Allow a non-loopback address with a server-side key and no client keys."
    )
    #: Request header that carries the client's own AI/ML key, when the bearer token is
    #: a shim key (``client_keys``) and there is no server-side key. ``None``: not used.
    upstream_key_header: str | None = _setting(
        None,
        "With client keys and no AIMLAPI_KEY: the request header in which each client "
        "sends its own AI/ML key (e.g. X-AIMLAPI-Key), its shim key being the bearer token.",
    )
    #: Web page origins (``scheme://host[:port]``, or ``*``) allowed to call the shim;
    #: a request with any other ``Origin`` is refused (403). Empty: none.
    cors_origins: tuple[str, ...] = _setting(
        (),
        "Web page origin (scheme://host[:port], or *) allowed to call the shim from a "
        "browser (repeatable). Unset: requests carrying any Origin are refused with 403.",
        flag="--cors-origin",
    )
    #: Extra ``Host`` names the shim answers to, besides its loopback address and
    #: ``localhost``; setting any turns the check on for a non-loopback bind. ``*``: any.
    allowed_hosts: tuple[str, ...] = _setting(
        (),
        "Extra Host name[:port] to answer to (repeatable; * for any). On loopback the "
        "bound address and localhost are allowed, other Hosts get 421; on other addresses "
        "the check is off unless this is set.",
        flag="--allowed-host",
    )
    #: Seconds a response body may wait for a client that takes no data; then it is cut
    #: (shim.responses.SendTimeout), and the kernel drops the connection
    #: (shim.server.drop_stalled_connections).
    send_timeout: float = _setting(
        30.0,
        "Seconds a client may take no data before its response is cut, its slot freed "
        "and (on Linux) its connection dropped.",
        positive=True,
    )
    #: With client keys, also require one for the catalogue GETs (``/v1/models``,
    #: ``/v1/models/{id}``, ``/v1/audio/voices``, ``/v1/audio/models``). Off: they answer
    #: anyone, as they reveal only static lists and front ends such as Open WebUI read
    #: them without a key.
    private_catalog: bool = _setting(
        False,
        "With client keys, require one for /v1/models and /v1/audio/voices|models too. "
        "Off: these static lists answer without a key (Open WebUI reads them without one).",
    )
    # -- retries and timeouts --------------------------------------------------------
    #: Retries of the billed ``POST /v1/tts`` (429, 5xx and connection errors only).
    tts_retries: int = _setting(
        1, "Retries of the billed generation call (429, 5xx, connection errors).", low=0, high=5
    )
    #: Retries of the CDN download, before any audio byte reached the client.
    audio_retries: int = _setting(
        2, "Retries of the audio download, before any byte reached the client.", low=0, high=10
    )
    #: Longest ``Retry-After`` the shim waits out itself before retrying.
    max_retry_wait: float = _setting(
        5.0,
        "Longest Retry-After (seconds) the shim waits out itself; longer ones go to the client.",
        low=0,
    )
    connect_timeout: float = _setting(5.0, "Seconds to open a connection upstream.", positive=True)
    generation_timeout: float = _setting(
        60.0, "Seconds to wait for the generation reply.", positive=True
    )
    download_timeout: float = _setting(
        30.0, "Longest silence (seconds) while downloading audio.", positive=True
    )
    #: Overall budget for one request, from arrival to the first audio byte.
    deadline: float = _setting(
        90.0, "Seconds from request to first audio byte, retries included.", positive=True
    )
    # -- sizes -----------------------------------------------------------------------
    max_audio_bytes: int = _setting(
        256 * 1024 * 1024, "Largest audio the shim will relay.", low=1, shown="256 MiB"
    )
    #: Largest audio in a non-streamed chat answer, which is held whole in memory
    #: (bytes, base64 and JSON); streamed answers have ``max_audio_bytes``.
    max_chat_audio_bytes: int = _setting(
        32 * 1024 * 1024,
        "Largest audio in a non-streamed chat answer, held whole in memory (502 "
        "audio_too_large above it); stream: true has no such cap.",
        low=1,
        shown="32 MiB",
    )
    max_body_bytes: int = _setting(
        1024 * 1024, "Largest request body accepted (413 above).", low=1, shown="1 MiB"
    )
    # -- how the upstream is reached -------------------------------------------------
    #: Proxy for every upstream request; ``None``: ``HTTPS_PROXY``/``HTTP_PROXY``/
    #: ``ALL_PROXY`` from the environment, minus ``NO_PROXY`` (read at start-up).
    proxy: str | None = _setting(
        None,
        "Proxy URL for upstream requests. Unset: HTTPS_PROXY / HTTP_PROXY / ALL_PROXY "
        "from the environment, minus NO_PROXY.",
    )
    #: CA bundle (PEM) trusted for upstream TLS; ``None``: ``SSL_CERT_FILE`` or
    #: ``SSL_CERT_DIR`` when set, else certifi's.
    ca_bundle: str | None = _setting(
        None,
        "PEM file of CAs trusted for upstream TLS. Unset: SSL_CERT_FILE / SSL_CERT_DIR "
        "when set, else the certifi bundle.",
    )
    # -- logs ------------------------------------------------------------------------
    log_format: Literal["json", "text"] = _setting(
        "json", "Log lines as JSON objects or text.", choices=("json", "text")
    )
    log_level: str = _setting(
        "info",
        "Least severe log level shown.",
        choices=("critical", "error", "warning", "info", "debug"),
    )
    # -- long text -------------------------------------------------------------------
    #: Longest input (speech ``input``, chat's spoken text), characters. Above 4096
    #: (the upstream's own limit) a text is split; with ``split`` off, 4096 applies.
    max_input_chars: int = _setting(
        100_000, "Longest text to speak (characters); 4096 restores OpenAI's limit.", low=1
    )
    #: Split long texts into pieces generated ahead and stitched into one stream.
    split: bool = _setting(
        True,
        "Split long texts into pieces generated ahead and stitched into one stream "
        "(off: texts over 4096 characters are refused).",
    )
    #: Texts longer than this (characters) are split; the first piece is short.
    split_threshold: int = _setting(
        1000, "Texts longer than this (characters) are split; the first piece is short.", low=1
    )
    #: Pieces of one request generated at once.
    split_parallel: int = _setting(3, "Pieces of one request generated at once.", low=1, high=16)
    # -- load and shutdown -----------------------------------------------------------
    #: Speech and chat requests generating or streaming audio at once; 0: no cap.
    max_concurrency: int = _setting(
        64,
        "Speech and chat requests served at once (upstream call and audio stream); 0: no cap.",
        low=0,
    )
    #: Requests waiting for a slot when all are taken; beyond it, 429.
    max_queue: int = _setting(
        128, "Requests waiting for a slot when all are busy; more get 429 with Retry-After.", low=0
    )
    #: Longest wait for a slot, seconds; then 429.
    queue_timeout: float = _setting(10.0, "Longest wait (seconds) for a slot before a 429.", low=0)
    #: On SIGTERM, seconds in-flight responses get to finish before they are cut.
    graceful_timeout: float = _setting(
        30.0,
        "On SIGTERM, seconds in-flight audio gets to finish before it is cut; then exit 0.",
        low=0,
    )
    #: On SIGTERM, seconds to go on serving, with /readyz answering 503, before new
    #: connections are refused: load balancers (and Kubernetes, whose endpoint removal
    #: races the signal) stop sending work meanwhile.
    shutdown_delay: float = _setting(
        0.0,
        "On SIGTERM, seconds to go on serving while /readyz answers 503, before new "
        "connections are refused and --graceful-timeout starts (a preStop pause, built in).",
        low=0,
    )
    #: Seconds an idle client connection stays open for its next request. Longer than
    #: the SDKs' own pools keep one (httpx, so the Python SDK: 5 s), or a client may send
    #: on a connection the shim is closing that instant and see it fail.
    keep_alive_timeout: float = _setting(
        30.0, "Seconds an idle client connection is kept for its next request.", positive=True
    )
    #: Seconds a client has to send a whole request head (request line and headers),
    #: counted from connecting, or from the end of the previous response on a kept-alive
    #: connection (a head begun after that idle spell gets as long from its first byte).
    #: Without it a thousand connections that never finish a head hold every descriptor.
    head_timeout: float = _setting(
        10.0,
        "Seconds a client has to send a whole request head, from connecting or from the "
        "end of the previous response; then the connection is closed.",
        positive=True,
    )
    # -- the audio cache (shim/cache) ------------------------------------------------
    cache: bool = _setting(
        True,
        "Cache generated audio, so a repeated request is neither paid nor waited for again.",
    )
    #: The embedded cache's directory; ``None``: the user's cache directory (platformdirs).
    cache_dir: str | None = _setting(
        None,
        "Directory of the embedded cache. Unset: the user's cache directory.",
        shown="the user's cache directory",
    )
    #: Bound of the embedded cache, index included; least recently used entries go first.
    cache_max_bytes: int = _setting(
        1024**3,
        "Size bound of the embedded cache; least recently used audio is evicted first.",
        positive=True,
        shown="1 GiB",
    )
    cache_ttl: float = _setting(
        30 * 24 * 3600.0,
        "Seconds cached audio is kept.",
        positive=True,
        shown="2592000 (30 days)",
    )
    #: ``redis://`` / ``rediss://`` / ``unix://`` URL: the cache and its single flight live in
    #: Redis, shared by replicas. Hidden from repr: it may hold a password.
    redis_url: str | None = _setting(
        None,
        "redis://host:port/db: replicas share the cache and generate each audio once. "
        "Prefer the environment variable if it holds a password: flags show in ps.",
        secret=True,
    )
    #: Connect and reply timeout of every Redis call. A call past it opens the breaker
    #: (shim/cache/outage.py): the shim serves without Redis until a PING succeeds.
    redis_timeout: float = _setting(
        0.5,
        "Seconds to connect to Redis and for each of its replies; past it the shim serves "
        "without Redis (uncached; keys with limits get 503) until Redis answers again.",
        positive=True,
        high=60,
    )
    #: Set by ``serve --mock``: the in-process mock's root URL is trusted for audio.
    trusted_origins: tuple[Origin, ...] = field(default=(), repr=False)
    # -- operators: metrics, named keys with limits, prices --------------------------
    #: TOML file of named client keys with limits (shim/clients.py); re-read on SIGHUP.
    keys_file: str | None = _setting(
        None,
        "TOML file of named client keys with limits (see Keys and limits); re-read on SIGHUP.",
    )
    #: Bearer token ``GET /metrics`` and ``GET /usage`` require; ``None``: open.
    metrics_key: str | None = _setting(
        None,
        "Bearer token GET /metrics and GET /usage require. Unset: they are open.",
        secret=True,
    )
    #: USD per 1,000 characters by model, over the defaults of :mod:`shim.prices`.
    prices: dict[str, float] = _setting(
        {},
        "MODEL=USD per 1,000 characters, for spend estimates and budgets (repeatable). "
        "Defaults: tts-1=0.015, tts-1-hd=0.03, gpt-4o-mini-tts=0.015.",
        flag="--price",
        env="TTS_SHIM_PRICES",
    )

    def __post_init__(self) -> None:
        self.upstream_root = self._normalise_root(self.upstream_url)
        self.tts_url = self.upstream_root + "/v1/tts"
        origins = {parse_origin(self.upstream_root), parse_origin(DEFAULT_CDN_ORIGIN)}
        origins.update(parse_origin(o) for o in self.audio_origins)
        origins.update(self.trusted_origins)
        self.allowed_audio_origins: frozenset[Origin] = frozenset(origins)
        for name, setting, _ in settings():
            setting.check(name, getattr(self, name))
        self._check_cache()
        self._check_trust_settings()
        for model, price in self.prices.items():
            if not price >= 0:  # also refuses NaN
                raise ConfigError(f"price of {model} must be a number >= 0")

    def _check_cache(self) -> None:
        if self.redis_url is not None:
            scheme = urlsplit(self.redis_url).scheme
            if scheme not in ("redis", "rediss", "unix"):
                # The URL itself is not repeated: it may hold a password.
                raise ConfigError("redis_url must start with redis://, rediss:// or unix://")

    def _check_trust_settings(self) -> None:
        """Normalise and check the key-header and browser settings."""
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
        """The longest input accepted: without splitting, the upstream's limit."""
        if self.split:
            return self.max_input_chars
        return min(self.max_input_chars, MAX_INPUT_CHARS)

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
