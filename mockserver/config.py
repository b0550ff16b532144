"""Settings for the mock server, shared by ``python -m mockserver`` and programmatic use."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from mockserver.latency import NO_LATENCY, GenerationLatency, LatencyError, parse_latency

__all__ = [
    "DEFAULT_PORT",
    "LOG_LEVELS",
    "RESPONSE_SHAPES",
    "MockConfig",
    "MockConfigError",
]

DEFAULT_PORT = 8100

#: The success replies the AI/ML documents have shown for ``POST /v1/tts`` over time.
#:
#: ``url-object``     the doc page's example, ``{"audio": {"url": ...}}`` (201)
#: ``url-string``     the current OpenAPI's JSON, ``{"audio": "<url>", "meta": {...}}`` (200)
#: ``binary``         the current OpenAPI's ``audio/wav`` body, the audio itself (200)
#: ``metadata-only``  the older OpenAPI's Deepgram-style ``{"metadata": {...}}`` (201)
RESPONSE_SHAPES = ("url-object", "url-string", "binary", "metadata-only")

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


class MockConfigError(ValueError):
    """A setting is invalid; the message says which and why."""


@dataclass(frozen=True)
class MockConfig:
    """Everything the mock server can be told.

    The CLI builds one from flags and environment variables; tests build one
    directly and pass it to :func:`mockserver.create_app`.
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    #: Bearer tokens accepted on ``POST /v1/tts``. Empty: any non-empty token.
    api_keys: tuple[str, ...] = ()
    #: Success shape used when no scenario step says otherwise.
    response_shape: str = "url-object"
    #: Root of the audio links in replies. ``None``: the root the request came in on.
    cdn_url: str | None = None
    #: Most requests the journal keeps; older ones are dropped first.
    journal_size: int = 1000
    #: Most step entries the scenario queue holds at once.
    max_steps: int = 1000
    #: Budget, in bytes, of the LRU cache of encoded audio.
    audio_cache_bytes: int = 64 * 1024 * 1024
    #: Longest clip a generation makes, whatever the text (``None``: no cap). Tests
    #: that send long texts but only check the reply's shape use it to stay fast.
    max_audio_seconds: float | None = None
    log_level: str = "info"
    #: Wait before each successful ``POST /v1/tts`` reply, as generation takes time:
    #: a :class:`~mockserver.latency.GenerationLatency` or its text (``0.3s+4ms/char``,
    #: ``realistic``). Default: no wait.
    generation_latency: GenerationLatency = NO_LATENCY

    def __post_init__(self) -> None:
        # Accept any iterable of keys (a list from click, say) but store a tuple,
        # so the frozen config stays hashable and immutable.
        object.__setattr__(self, "api_keys", tuple(self.api_keys))
        if any(not key or key != key.strip() for key in self.api_keys):
            raise MockConfigError("API keys must be non-empty and have no surrounding spaces")
        if self.response_shape not in RESPONSE_SHAPES:
            raise MockConfigError(
                f"response_shape must be one of {', '.join(RESPONSE_SHAPES)}; "
                f"got {self.response_shape!r}"
            )
        if not 0 <= self.port <= 65535:
            raise MockConfigError(f"port must be 0..65535; got {self.port}")
        if self.journal_size < 0:
            raise MockConfigError("journal_size cannot be negative")
        if self.max_steps < 1:
            raise MockConfigError("max_steps must be at least 1")
        if self.max_audio_seconds is not None and self.max_audio_seconds <= 0:
            raise MockConfigError("max_audio_seconds must be positive")
        if self.audio_cache_bytes < 0:
            raise MockConfigError("audio_cache_bytes cannot be negative")
        if self.log_level.lower() not in LOG_LEVELS:
            raise MockConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}")
        object.__setattr__(self, "log_level", self.log_level.lower())
        if self.cdn_url is not None:
            parts = urlsplit(self.cdn_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise MockConfigError(f"cdn_url must be an http(s) URL; got {self.cdn_url!r}")
            object.__setattr__(self, "cdn_url", self.cdn_url.rstrip("/"))
        try:
            latency = parse_latency(self.generation_latency)
        except LatencyError as exc:
            raise MockConfigError(f"generation_latency: {exc}") from None
        object.__setattr__(self, "generation_latency", latency)
