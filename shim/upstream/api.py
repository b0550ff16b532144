"""The AI/ML API as the shim uses it: one generation, then its audio.

:meth:`Upstream.generate_audio` reads top to bottom (:meth:`~Upstream.generate`, then
:meth:`~Upstream.open`, which long texts call apart to generate ahead): post the billed
generation request (:mod:`~shim.upstream.generation`, retried only where it cannot have been
billed), find the audio in the reply (:mod:`~shim.upstream.replies`), then open it
(:mod:`~shim.upstream.download`, retried freely: downloads are not billed) and hand
back an :class:`~shim.upstream.stream.AudioStream` whose first bytes have arrived.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from yarl import URL

from shim import logs
from shim.config import Config
from shim.errors import APIError
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

__all__ = ["Upstream"]

_AUDIO_ACCEPT = "audio/*, */*;q=0.5"


@dataclass
class _Link:
    """One generation's audio link and the requests made for it: its first download,
    that download's retries and its resumptions all count against ``--audio-retries``."""

    url: str
    ref: AudioRef
    made: int = 0
    #: What the reply that opened the stream said about the audio.
    first: Validators | None = None


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

    async def aclose(self) -> None:
        await self._api.close()
        await self._cdn.close()

    async def generate_audio(
        self, body: dict[str, Any], key: str, *, decode_all: bool = True
    ) -> AudioStream:
        """Generate speech for an AI/ML ``/v1/tts`` body and open its audio."""
        return await self.open(await self.generate(body, key), decode_all=decode_all)

    async def generate(self, body: dict[str, Any], key: str) -> AudioRef:
        """The billed call, retried only where it cannot have been billed: where the
        audio of one generation is."""
        return await self._generation_retries.run(self._generate, body, key)

    async def open(self, ref: AudioRef, *, decode_all: bool = True) -> AudioStream:
        """Open a generation's audio (downloading it, retried freely), first bytes in and
        first frames decoded; ``decode_all``: every frame is decoded before the stream
        ends (for audio that is to be cached; see :mod:`shim.upstream.verifier`)."""
        try:
            return await self._open(ref, decode_all)
        except APIError as exc:
            # The generation was billed: a client retry would pay again for this audio.
            exc.retryable = False
            exc.request_id = exc.request_id or ref.request_id
            raise

    async def _generate(self, body: dict[str, Any], key: str) -> AudioRef:
        self.stats.tts_calls += 1
        with logs.upstream_call("generation", len(body.get("text", ""))):  # metrics (issue 13)
            return await post_generation(self._api, self._tts_url, body, key, self._api_proxy)

    async def _open(self, ref: AudioRef, decode_all: bool) -> AudioStream:
        config = self.config
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
        return await self._download_retries.run(self._download, _Link(ref.url, ref), decode_all)

    async def _download(self, link: _Link, decode_all: bool) -> AudioStream:
        link.made += 1
        self.stats.audio_calls += 1
        origins = self.config.allowed_audio_origins
        with logs.upstream_call("download"):  # metrics (issue 13)
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
        except APIError as exc:
            # Audio went out: the client's retry would pay for a new generation.
            exc.retryable = False
            raise

    async def _reopen(self, link: _Link, offset: int, crc: int) -> Resumed:
        assert link.first is not None
        link.made += 1
        self.stats.audio_calls += 1
        origins = self.config.allowed_audio_origins
        headers = resume_headers(offset, link.first)
        with logs.upstream_call("download"):  # metrics (issue 13)
            response = await fetch_audio(
                self._cdn, link.url, origins, link.ref.request_id, self.proxies, headers
            )
            return await resumed(response, offset, crc, link.first)
