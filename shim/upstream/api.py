"""The AI/ML API as the shim uses it: one generation, then its audio.

:class:`Upstream` reads top to bottom (:meth:`~Upstream.generate`, then
:meth:`~Upstream.open`, which long texts call apart to generate ahead): post the billed
generation request (:mod:`~shim.upstream.generation`, retried only where it cannot have been
billed), find the audio in the reply (:mod:`~shim.upstream.replies`), then open it
(:mod:`~shim.upstream.download`, retried freely: downloads are not billed) and hand
back an :class:`~shim.upstream.stream.AudioStream` whose first bytes have arrived.

A generation attempt, once sent, runs to its answer in a task of its own: a request
cancelled meanwhile (its client left, its deadline passed) stops waiting for it, and
starts no further attempt, but the attempt's outcome still reaches the request's
:class:`Meter`, so what the AI/ML API billed is counted (and an unused audio reply is
closed).
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from typing import Any, Protocol

from yarl import URL

from shim.config import Config
from shim.context import Calls
from shim.errors import UpstreamError
from shim.upstream.clients import Proxies, build_session
from shim.upstream.download import (
    Validators,
    fetch_audio,
    named_format,
    resume_headers,
    resumed,
)
from shim.upstream.generation import post_generation
from shim.upstream.replies import AudioRef
from shim.upstream.retry import RetryPolicy
from shim.upstream.stream import (
    AudioStream,
    Resumed,
    UpstreamStats,
    download_error,
    inline_stream,
    open_stream,
)

__all__ = ["Meter", "Upstream"]

_AUDIO_ACCEPT = "audio/*, */*;q=0.5"


class Meter(Protocol):
    """What counts one request's generations (:class:`shim.quota.Bill`)."""

    def sending(self, characters: int) -> None:
        """An attempt of ``characters`` goes out now."""

    def answered(self, characters: int, billed: bool) -> None:
        """It has its outcome; ``billed=False`` only when that proves nothing was billed."""


@dataclass
class _Link:
    """One generation's audio link and the requests made for it: its first download,
    that download's retries and its resumptions all count against ``--audio-retries``."""

    url: str
    ref: AudioRef
    made: int = 0
    #: What the reply that opened the stream said about the audio.
    first: Validators | None = None
    #: Where its requests are noted (the request's context's upstream attempts).
    calls: Calls | None = None


class Upstream:
    """Connection pools to the AI/ML API and its CDN, built once per running app
    (in its lifespan, within its event loop) and reused for every request."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.stats = UpstreamStats()
        self.proxies = Proxies.from_config(config)
        self._generation_retries = RetryPolicy(config.tts_retries, config.max_retry_wait)
        self._download_retries = RetryPolicy(config.audio_retries, config.max_retry_wait)
        self._api = build_session(config, read_timeout=config.generation_timeout, headers={})
        self._tts_url = URL(config.tts_url)  # parsed once, not on every call
        self._api_proxy = self.proxies.for_url(self._tts_url)
        self._cdn = build_session(
            config, read_timeout=config.download_timeout, headers={"accept": _AUDIO_ACCEPT}
        )

        #: Generation attempts in flight, and unread replies closing (kept here: the
        #: loop holds tasks weakly).
        self._tasks: set[asyncio.Task[Any]] = set()

    async def aclose(self) -> None:
        await self._api.close()
        await self._cdn.close()

    async def generate(
        self,
        body: dict[str, Any],
        key: str,
        meter: Meter | None = None,
        *,
        decode_all: bool = True,
        calls: Calls | None = None,
    ) -> AudioRef:
        """The billed call, retried only where it cannot have been billed: where the
        audio of one generation is. ``meter`` is told of each attempt and its outcome,
        and each attempt is noted on ``calls`` (for the metrics); ``decode_all`` is
        :meth:`open`'s, for a reply that is the audio itself (opened as it arrives)."""
        return await self._generation_retries.run(
            self._generate, body, key, meter, decode_all, calls
        )

    async def open(
        self, ref: AudioRef, *, decode_all: bool = True, calls: Calls | None = None
    ) -> AudioStream:
        """Open a generation's audio (downloading it, retried freely), first bytes in and
        first frames decoded; ``decode_all``: every frame is decoded before the stream
        ends (for audio that is to be cached; see :mod:`shim.upstream.verifier`). Each
        download is noted on ``calls``."""
        try:
            return await self._open(ref, decode_all, calls)
        except UpstreamError as exc:
            # The generation was billed: a client retry would pay again for this audio.
            raise exc.with_(retryable=False, request_id=ref.request_id) from exc.__cause__

    async def _generate(
        self,
        body: dict[str, Any],
        key: str,
        meter: Meter | None,
        decode_all: bool,
        calls: Calls | None,
    ) -> AudioRef:
        self.stats.tts_calls += 1
        characters = len(body.get("text", ""))
        if meter is not None:
            meter.sending(characters)  # before the task exists: it cannot be missed
        attempt = asyncio.ensure_future(self._attempt(body, key, decode_all, calls))
        self._tasks.add(attempt)
        attempt.add_done_callback(functools.partial(self._answered, meter, characters))
        try:
            return await asyncio.shield(attempt)
        except asyncio.CancelledError:
            attempt.add_done_callback(self._drop_reply)  # nobody will read it
            raise

    async def _attempt(
        self, body: dict[str, Any], key: str, decode_all: bool, calls: Calls | None
    ) -> AudioRef:
        with _noted(calls, "generation"):
            ref = await post_generation(self._api, self._tts_url, body, key, self._api_proxy)
        if ref.response is not None:
            # The reply is the audio itself: its first bytes are read here, as it
            # arrives, by the task that holds it (and closes it if it is abandoned).
            try:
                ref.stream = await self.open(ref, decode_all=decode_all)
            except UpstreamError as exc:
                raise exc.with_(billed=True) from exc.__cause__  # a 2xx
        return ref

    def _answered(
        self, meter: Meter | None, characters: int, attempt: asyncio.Task[AudioRef]
    ) -> None:
        self._tasks.discard(attempt)
        if meter is not None:
            meter.answered(characters, _billed(attempt))

    def _drop_reply(self, attempt: asyncio.Task[AudioRef]) -> None:
        """Close the audio reply of an attempt whose request stopped waiting for it."""
        if attempt.cancelled() or attempt.exception() is not None:
            return
        stream = attempt.result().stream
        if stream is not None:
            closing = asyncio.ensure_future(stream.aclose())
            self._tasks.add(closing)
            closing.add_done_callback(self._tasks.discard)

    async def _open(self, ref: AudioRef, decode_all: bool, calls: Calls | None) -> AudioStream:
        config = self.config
        if ref.stream is not None:  # the reply was the audio itself, opened already
            stream, ref.stream = ref.stream, None
            return stream
        if ref.response is not None:  # the reply was the audio itself
            return await open_stream(
                ref.response,
                request_id=ref.request_id,
                named=None,
                max_bytes=config.max_audio_bytes,
                stats=self.stats,
                decode_all=decode_all,
            )
        if ref.inline is not None:
            return await inline_stream(
                ref.inline,
                request_id=ref.request_id,
                max_bytes=config.max_audio_bytes,
                stats=self.stats,
                decode_all=decode_all,
            )
        assert ref.url is not None
        link = _Link(ref.url, ref, calls=calls)
        return await self._download_retries.run(self._download, link, decode_all)

    async def _download(self, link: _Link, decode_all: bool) -> AudioStream:
        link.made += 1
        self.stats.audio_calls += 1
        origins = self.config.allowed_audio_origins
        with _noted(link.calls, "download"):
            response = await fetch_audio(
                self._cdn, link.url, origins, link.ref.request_id, self.proxies
            )
            link.first = Validators.of(response)
            stream = await open_stream(
                response,
                request_id=link.ref.request_id,
                named=named_format(link.url),
                max_bytes=self.config.max_audio_bytes,
                stats=self.stats,
                decode_all=decode_all,
                retryable=True,
            )
        stream.resume = functools.partial(self._resume, link)
        return stream

    async def _resume(self, link: _Link, offset: int, crc: int, cut: str) -> Resumed:
        """Pick a download cut after ``offset`` bytes up again from the same link, with
        what is left of its retries (see :mod:`shim.upstream.download`)."""
        left = self.config.audio_retries + 1 - link.made
        if left <= 0:
            raise download_error(f"{cut}; no download retries were left to resume it")
        try:
            policy = RetryPolicy(left - 1, self.config.max_retry_wait)
            return await policy.run(self._reopen, link, offset, crc)
        except UpstreamError as exc:
            # Audio went out: the client's retry would pay for a new generation.
            raise exc.with_(retryable=False) from exc.__cause__

    async def _reopen(self, link: _Link, offset: int, crc: int) -> Resumed:
        assert link.first is not None
        link.made += 1
        self.stats.audio_calls += 1
        origins = self.config.allowed_audio_origins
        headers = resume_headers(offset, link.first)
        with _noted(link.calls, "download"):
            response = await fetch_audio(
                self._cdn, link.url, origins, link.ref.request_id, self.proxies, headers
            )
            return await resumed(response, offset, crc, link.first)


def _billed(attempt: asyncio.Task[AudioRef]) -> bool:
    """Whether a finished attempt may have been billed: unless its error says it was
    not (an error status, or never sent). Cut off (at shutdown): it may have been."""
    if attempt.cancelled():
        return True
    error = attempt.exception()
    return error is None or not isinstance(error, UpstreamError) or error.billed


class _noted:
    """Note one upstream attempt (``generation`` or ``download``) and its outcome on
    ``calls`` (the request's context's, for the metrics; what was billed is counted by
    the request's bill, :class:`shim.quota.Bill`, not here).

    A class, not a ``contextlib.contextmanager``: it runs twice on every request."""

    __slots__ = ("calls", "kind")

    def __init__(self, calls: Calls | None, kind: str) -> None:
        self.calls = calls
        self.kind = kind

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if self.calls is None:
            return
        if exc is None:
            self.calls.append((self.kind, "ok"))
            return
        code = getattr(exc, "code", None)
        status = getattr(exc, "status", None)
        outcome = code or (f"http_{status}" if status else type(exc).__name__)
        self.calls.append((self.kind, str(outcome)))
