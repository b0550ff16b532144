"""The AI/ML API side: the billed ``POST /v1/tts`` call and the audio download.

:meth:`Upstream.synthesize` reads top to bottom: post the generation request
(retried sparingly, because it is billed), find the audio in whichever documented
reply shape came back, then open the audio (retried freely, because downloads are
not billed) and hand back an :class:`AudioStream` whose first bytes have arrived.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urljoin

import anyio
import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from shim import audio
from shim.config import Config, Origin, parse_origin
from shim.errors import APIError, from_upstream
from shim.wire import WireClient, raw_body

__all__ = ["AudioStream", "Upstream", "UpstreamStats"]

_T = TypeVar("_T")
_MAX_JSON_REPLY = 4 * 1024 * 1024  # inline base64 audio can make the reply large
_MAX_ERROR_BODY = 64 * 1024
_MAX_REDIRECTS = 5
_SNIFF_BYTES = 16
_USER_AGENT = "tts-shim"
_AUDIO_ACCEPT = "audio/*, */*;q=0.5"


@dataclass
class UpstreamStats:
    """Counters the health and metrics routes read; cheap to keep up to date."""

    tts_calls: int = 0
    audio_calls: int = 0
    open_streams: int = 0
    bytes_streamed: int = 0


@dataclass
class _Generation:
    """Where the audio of one generation is, in whichever form the reply gave it."""

    request_id: str | None
    url: str | None = None
    inline: bytes | None = None
    response: httpx.Response | None = None  # a binary reply, body still unread
    usage: dict[str, Any] | None = None


@dataclass
class AudioStream:
    """Audio arriving from upstream, its format already sniffed from the first bytes.

    Iterate it once; it enforces the size cap and turns a body that ends early into
    an error instead of passing a short file off as complete.
    """

    format: str
    request_id: str | None
    _head: bytes
    _rest: AsyncIterator[bytes] | None
    _close: Callable[[], Awaitable[None]] | None
    _max_bytes: int
    _expected: int | None
    _stats: UpstreamStats
    usage: dict[str, Any] | None = None
    _closed: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        self._stats.open_streams += 1

    async def __aiter__(self) -> AsyncIterator[bytes]:
        received = len(self._head)
        try:
            if self._head:
                yield self._head
            if self._rest is not None:
                try:
                    async for chunk in self._rest:
                        received += len(chunk)
                        if received > self._max_bytes:
                            raise _download_error(
                                f"the audio exceeded the {self._max_bytes}-byte size cap"
                            )
                        self._stats.bytes_streamed += len(chunk)
                        yield chunk
                except APIError:
                    raise
                except Exception as exc:  # httpx's, or a transport's own (aiohttp's)
                    raise _download_error(
                        f"the audio download broke off: {_describe(exc)}"
                    ) from exc
            if self._expected is not None and received < self._expected:
                raise _download_error(
                    f"the audio ended after {received} of {self._expected} announced bytes"
                )
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stats.open_streams -= 1
        if self._close is not None:
            await self._close()


class Upstream:
    """Connection pools to the AI/ML API and its CDN, reused for every request.

    ``transport`` replaces the network for tests (``httpx.ASGITransport`` on the mock,
    or ``httpx.MockTransport``); otherwise ``config.upstream_transport`` picks the
    aiohttp-backed transport (the default: a well-kept client at several times less
    CPU per request than httpx's own), the opt-in ``native`` client of
    :mod:`shim.wire` (fastest; HTTP/1.1 only), or httpx's own transport.
    """

    def __init__(self, config: Config, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self.stats = UpstreamStats()
        timeout = httpx.Timeout(
            connect=config.connect_timeout,
            read=config.generation_timeout,
            write=config.connect_timeout,
            pool=config.connect_timeout,
        )
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        # Two clients, so that nothing set for the API (the key above all) can reach the
        # CDN: the CDN client has no credentials and follows no redirect by itself.
        self._api = httpx.AsyncClient(
            transport=transport or _make_transport(config, limits),
            timeout=timeout,
            headers={"user-agent": _USER_AGENT},
        )
        self._cdn = httpx.AsyncClient(
            transport=transport or _make_transport(config, limits),
            timeout=httpx.Timeout(
                connect=config.connect_timeout,
                read=config.download_timeout,
                write=config.connect_timeout,
                pool=config.connect_timeout,
            ),
            headers={"user-agent": _USER_AGENT, "accept": _AUDIO_ACCEPT},
            follow_redirects=False,
        )
        # The native transport skips httpx's per-request machinery (request and client
        # objects, cookies, auth and hook layers: most of the shim's CPU per request; see
        # shim/wire.py and docs/benchmarks.md). Injected transports (tests) use httpx.
        self._wire_api: WireClient | None = None
        self._wire_cdn: WireClient | None = None
        if transport is None and config.upstream_transport == "native":
            self._wire_api = WireClient(
                connect_timeout=config.connect_timeout,
                read_timeout=config.generation_timeout,
                headers={"user-agent": _USER_AGENT},
            )
            self._wire_cdn = WireClient(
                connect_timeout=config.connect_timeout,
                read_timeout=config.download_timeout,
                headers={"user-agent": _USER_AGENT, "accept": _AUDIO_ACCEPT},
            )

    async def aclose(self) -> None:
        await self._api.aclose()
        await self._cdn.aclose()
        for wire in (self._wire_api, self._wire_cdn):
            if wire is not None:
                await wire.aclose()

    async def synthesize(self, body: dict[str, Any], key: str) -> AudioStream:
        """Generate speech for an AI/ML ``/v1/tts`` body and open its audio."""
        generation = await self._retry(self.config.tts_retries, lambda: self._generate(body, key))
        requested = body.get("response_format", "mp3")
        try:
            if generation.response is not None:
                return await self._open_response(generation.response, generation, requested)
            if generation.inline is not None:
                return self._inline_stream(generation, requested)
            assert generation.url is not None
            url = generation.url
            return await self._retry(
                self.config.audio_retries, lambda: self._download(url, generation, requested)
            )
        except APIError as exc:
            # The generation was billed: a client retry would pay again for this audio.
            exc.retryable = False
            exc.request_id = exc.request_id or generation.request_id
            raise

    # -- the billed generation call ---------------------------------------------------

    async def _generate(self, body: dict[str, Any], key: str) -> _Generation:
        self.stats.tts_calls += 1
        response = await self._send(
            self._api,
            self._wire_api,
            "POST",
            self.config.tts_url,
            "the AI/ML API",
            content=json.dumps(body, ensure_ascii=False).encode(),
            headers={
                "authorization": f"Bearer {key}",
                "content-type": "application/json",
                "accept": "application/json, audio/*",
            },
        )
        request_id = response.headers.get("x-request-id")
        if response.status_code >= 400:
            await self._raise_upstream_error(response, request_id, key)
        content_type = _media_type(response)
        if content_type.startswith("audio/") or content_type == "application/octet-stream":
            return _Generation(request_id, response=response)
        try:
            payload = json.loads(await _read_capped(response, _MAX_JSON_REPLY))
        except (ValueError, _TooLarge) as exc:
            raise APIError(
                502,
                "The AI/ML API answered the generation request with a body that is neither "
                f"JSON nor audio (content type {content_type or 'missing'!r}).",
                type="server_error",
                code="bad_upstream_response",
                retryable=True,
                request_id=request_id,
            ) from exc
        except Exception as exc:  # the reply broke off or stalled mid-body
            error = _transport_error(exc, "the AI/ML API")
            error.request_id = request_id
            raise error from exc
        return _find_audio(payload, request_id)

    async def _raise_upstream_error(
        self, response: httpx.Response, request_id: str | None, key: str
    ) -> None:
        try:
            raw = await _read_capped(response, _MAX_ERROR_BODY)
        except Exception:  # too large, or broken off: the status alone will do
            raw = b""
        message: str | None = None
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = None
        if isinstance(payload, dict):
            message = _message_of(payload)
            request_id = request_id or _str_or_none(payload.get("requestId"))
        elif raw:
            message = raw[:500].decode("utf-8", "replace")
        if message and key in message:
            # An upstream that echoes the key must not hand it to the client (or the log).
            message = message.replace(key, "[redacted]")
        raise from_upstream(
            response.status_code,
            message,
            request_id=request_id,
            retry_after=_retry_after(response.headers),
        )

    # -- the audio ------------------------------------------------------------------

    async def _download(self, url: str, generation: _Generation, requested: str) -> AudioStream:
        self.stats.audio_calls += 1
        for _ in range(_MAX_REDIRECTS + 1):
            self._check_origin(url, generation.request_id)
            response = await self._send(self._cdn, self._wire_cdn, "GET", url, "the audio CDN")
            if response.is_redirect and "location" in response.headers:
                await response.aclose()
                url = urljoin(url, response.headers["location"])
                continue
            if response.status_code >= 400:
                await response.aclose()
                retryable = response.status_code in (408, 429) or response.status_code >= 500
                raise APIError(
                    502,
                    f"The audio CDN answered {response.status_code} for the generated audio.",
                    type="server_error",
                    code="audio_download_failed",
                    retryable=retryable,
                    request_id=generation.request_id,
                )
            return await self._open_response(response, generation, requested)
        raise APIError(
            502,
            "The audio CDN redirected too many times.",
            type="server_error",
            code="audio_download_failed",
            request_id=generation.request_id,
        )

    def _check_origin(self, url: str, request_id: str | None) -> None:
        try:
            origin: Origin | None = parse_origin(url)
        except ValueError:
            origin = None
        if origin not in self.config.allowed_audio_origins:
            raise APIError(
                502,
                "The AI/ML API pointed at audio on an origin this shim does not trust "
                f"({_origin_text(origin)}). Add it with --audio-origin if it is legitimate.",
                type="server_error",
                code="audio_origin_not_allowed",
                request_id=request_id,
            )

    async def _open_response(
        self, response: httpx.Response, generation: _Generation, requested: str
    ) -> AudioStream:
        """Read just enough of ``response`` to know its format, then hand it over."""
        declared = response.headers.get("content-length")
        expected = int(declared) if declared and declared.isdigit() else None
        if expected is not None and expected > self.config.max_audio_bytes:
            await response.aclose()
            raise APIError(
                502,
                f"The generated audio is {expected} bytes, over the shim's "
                f"{self.config.max_audio_bytes}-byte cap.",
                type="server_error",
                code="audio_too_large",
                request_id=generation.request_id,
            )
        chunks = raw_body(response) or response.aiter_bytes()
        head = b""
        try:
            while len(head) < _SNIFF_BYTES:
                try:
                    head += await chunks.__anext__()
                except StopAsyncIteration:
                    chunks = _empty()
                    break
        except BaseException as exc:  # cancellation (the deadline) included: never leak it
            with anyio.CancelScope(shield=True):
                await response.aclose()
            if isinstance(exc, Exception) and not isinstance(exc, APIError):
                raise _download_error(f"the audio download failed: {_describe(exc)}", True) from exc
            raise
        fmt = audio.identify(head, _media_type(response), requested)
        if fmt is None or not head:
            await response.aclose()
            raise APIError(
                502,
                "The upstream audio is empty or in no format the shim recognises "
                f"(content type {_media_type(response) or 'missing'!r}).",
                type="server_error",
                code="bad_upstream_audio",
                retryable=True,
                request_id=generation.request_id,
            )
        return AudioStream(
            fmt,
            generation.request_id,
            head,
            chunks,
            response.aclose,
            self.config.max_audio_bytes,
            expected,
            self.stats,
            usage=generation.usage,
        )

    def _inline_stream(self, generation: _Generation, requested: str) -> AudioStream:
        data = generation.inline or b""
        fmt = audio.identify(data[:_SNIFF_BYTES], "", requested)
        if fmt is None or not data:
            raise APIError(
                502,
                "The AI/ML API returned inline audio in no format the shim recognises.",
                type="server_error",
                code="bad_upstream_audio",
                request_id=generation.request_id,
            )
        return AudioStream(
            fmt, generation.request_id, data, None, None, self.config.max_audio_bytes, None,
            self.stats, usage=generation.usage,
        )  # fmt: skip

    # -- plumbing -------------------------------------------------------------------

    async def _send(
        self,
        client: httpx.AsyncClient,
        wire: WireClient | None,
        method: str,
        url: str,
        peer: str,
        *,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        try:
            if wire is not None:
                return await wire.request(method, url, headers, content)
            request = client.build_request(method, url, content=content, headers=headers)
            return await client.send(request, stream=True)
        except Exception as exc:
            raise _transport_error(exc, peer) from exc

    async def _retry(self, retries: int, attempt: Callable[[], Awaitable[_T]]) -> _T:
        """Run ``attempt``, retrying retryable errors; ``Retry-After`` is honoured up to
        ``max_retry_wait``, and a longer one is handed to the client instead."""
        cap = self.config.max_retry_wait

        def should_retry(exc: BaseException) -> bool:
            if not isinstance(exc, APIError) or not exc.retryable:
                return False
            return exc.retry_after is None or exc.retry_after <= cap

        # The first attempt runs outside tenacity, whose set-up and bookkeeping cost
        # ~14 us of CPU per call (two calls per request, nearly always succeeding the
        # first time; bench/README.md). Tenacity takes over only after a retryable
        # failure, which it sees as its own first attempt, so the number of attempts
        # and the waits between them are unchanged.
        try:
            return await attempt()
        except APIError as exc:
            if retries <= 0 or not should_retry(exc):
                raise
            first_failure: APIError | None = exc

        backoff = wait_random_exponential(multiplier=0.05, max=1.0)

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, APIError) and exc.retry_after is not None:
                return min(exc.retry_after, cap)
            return backoff(state)

        async def attempts() -> _T:
            nonlocal first_failure
            if first_failure is not None:
                failure, first_failure = first_failure, None
                raise failure
            return await attempt()

        retrying = AsyncRetrying(
            stop=stop_after_attempt(retries + 1),
            retry=retry_if_exception(should_retry),
            wait=wait,
            reraise=True,
        )
        async for trial in retrying:
            with trial:
                return await attempts()
        raise AssertionError("unreachable: tenacity re-raises the last error")


class _TooLarge(Exception):
    pass


def _transport_error(exc: Exception, peer: str) -> APIError:
    """The envelope for a failed exchange with ``peer``: a timeout is a 504; anything
    else (refused, reset, or a reply that is not HTTP, which some transports raise as
    their own exception classes) a 502. Both are worth a retry."""
    if isinstance(exc, httpx.TransportError) and _is_timeout(exc):
        return APIError(
            504,
            f"Timed out waiting for {peer}.",
            type="server_error",
            code="timeout",
            retryable=True,
        )
    connecting = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
    what = f"Could not reach {peer}" if connecting else f"The connection to {peer} failed"
    return APIError(
        502,
        f"{what}: {_describe(exc)}.",
        type="server_error",
        code="upstream_unreachable",
        retryable=True,
    )


def _make_transport(config: Config, limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    if config.upstream_transport != "aiohttp":  # "native" never sends through it
        return httpx.AsyncHTTPTransport(limits=limits)
    from httpx_aiohttp import AiohttpTransport

    transport: httpx.AsyncBaseTransport = AiohttpTransport(limits=limits)
    return transport


async def _read_capped(response: httpx.Response, cap: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    try:
        async for chunk in raw_body(response) or response.aiter_bytes():
            size += len(chunk)
            if size > cap:
                raise _TooLarge
            parts.append(chunk)
    finally:
        await response.aclose()
    return b"".join(parts)


async def _empty() -> AsyncIterator[bytes]:
    return
    yield  # pragma: no cover


def _find_audio(payload: Any, request_id: str | None) -> _Generation:
    """Locate the audio in any documented success shape.

    ``{"audio": {"url": ...}}`` (doc page), ``{"audio": "<url>", "meta": ...}``
    (current OpenAPI), ``{"audio_url": ...}``, and inline base64 or ``data:`` URIs
    (accepted by AI/ML's own SDK). The old ``{"metadata": ...}`` reply has none.
    """
    if not isinstance(payload, dict):
        payload = {}
    meta = payload.get("meta")
    usage = meta.get("usage") if isinstance(meta, dict) else None
    usage = usage if isinstance(usage, dict) else None
    metadata = payload.get("metadata")
    if isinstance(metadata, dict):
        request_id = request_id or _str_or_none(metadata.get("request_id"))
    ref = payload.get("audio")
    if isinstance(ref, dict):
        ref = ref.get("url")
    if ref is None:
        ref = payload.get("audio_url")
    if isinstance(ref, str) and ref:
        if "://" in ref[:16]:  # any URL; the origin guard decides whether to fetch it
            return _Generation(request_id, url=ref, usage=usage)
        inline = _decode_inline(ref)
        if inline is not None:
            return _Generation(request_id, inline=inline, usage=usage)
    keys = ", ".join(sorted(payload)) or "nothing"
    raise APIError(
        502,
        "The AI/ML API reported success but its reply has no audio reference "
        f"(it held: {keys}; upstream request id {request_id or 'unknown'}). "
        "Nothing was streamed.",
        type="server_error",
        code="no_audio_in_reply",
        request_id=request_id,
    )


def _decode_inline(ref: str) -> bytes | None:
    data = ref.split(",", 1)[1] if ref.startswith("data:") and "," in ref else ref
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None


def _message_of(payload: dict[str, Any]) -> str | None:
    message = payload.get("message")
    if isinstance(message, list):  # validation errors sometimes come as a list
        message = "; ".join(str(m) for m in message)
    if message is None and isinstance(payload.get("error"), dict):
        message = payload["error"].get("message")
    return _str_or_none(message)


def _str_or_none(value: Any) -> str | None:
    return str(value) if value is not None else None


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds from ``Retry-After`` (seconds or an HTTP date) or ``retry-after-ms``."""
    if ms := headers.get("retry-after-ms"):
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _media_type(response: httpx.Response) -> str:
    content_type: str = response.headers.get("content-type", "")
    return content_type.split(";", 1)[0].strip().lower()


def _is_timeout(exc: httpx.TransportError) -> bool:
    # The aiohttp transport reports a dropped connection as ConnectTimeout; only a
    # real timeout underneath makes it one.
    if not isinstance(exc, httpx.TimeoutException):
        return False
    cause = exc.__cause__
    return cause is None or isinstance(cause, (TimeoutError, asyncio.TimeoutError))


def _describe(exc: BaseException) -> str:
    # Query strings are cut: a signed CDN link is a credential for that audio.
    text = _QUERY.sub("?…", str(exc).strip())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_QUERY = re.compile(r"\?[^\s'\">]+")


def _download_error(message: str, retryable: bool = False) -> APIError:
    return APIError(
        502,
        f"The audio could not be delivered: {message}.",
        type="server_error",
        code="audio_download_failed",
        retryable=retryable,
    )


def _origin_text(origin: Origin | None) -> str:
    return "not an http(s) URL" if origin is None else f"{origin[0]}://{origin[1]}:{origin[2]}"
