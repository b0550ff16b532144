"""From a validated request to audio in the client's format, first bytes in hand.

Both ``/v1/audio/speech`` and ``/v1/chat/completions`` go through :func:`synthesize`;
they differ only in how they wrap the bytes.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import anyio

from shim import audio, logs
from shim.errors import APIError, clean_request_id
from shim.limits import Capacity
from shim.upstream import AudioStream, Upstream

__all__ = ["Speech", "synthesize"]


class Speech:
    """Audio on its way to the client: iterate it once, or ``aclose`` it."""

    def __init__(
        self,
        first: bytes,
        rest: AsyncGenerator[bytes],
        stream: AudioStream,
        release: Callable[[], None] | None = None,
    ) -> None:
        self.request_id = clean_request_id(stream.request_id)
        self.usage = stream.usage
        self._first = first
        self._rest = rest
        self._stream = stream
        self._release = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            yield self._first
            async for chunk in self._rest:
                yield chunk
        except audio.TranscodeError as exc:
            raise _transcode_failed(exc, self.request_id) from exc
        except APIError:
            raise
        except Exception as exc:
            # Whatever broke, it ends as an APIError, which the response turns into
            # an aborted transfer (and an ``error`` event first, for SSE clients).
            raise APIError(
                502,
                f"The audio could not be delivered: {type(exc).__name__}.",
                type="server_error",
                code="audio_download_failed",
                request_id=self.request_id,
            ) from exc
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Stop the transcoder (if any) and the upstream download; free the slot."""
        try:
            await self._rest.aclose()
            await self._stream.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


async def synthesize(
    upstream: Upstream,
    body: dict[str, Any],
    target: str,
    key: str,
    deadline: float,
    *,
    capacity: Capacity | None = None,
) -> Speech:
    """Generate ``body`` upstream and return its audio as ``target`` format.

    With ``capacity``, a slot is taken first (waiting in line, or a 429) and held
    until the returned :class:`Speech` is closed. Everything up to the first audio
    byte must fit in ``deadline`` seconds, counted once the slot is held; after
    that, the download's idle timeout governs, so long audio can stream.
    """
    record = logs.current()
    release: Callable[[], None] | None = None
    if capacity is not None:
        waited = time.perf_counter()
        await capacity.acquire()
        release = capacity.release
        if record is not None:
            record.queued_ms = (time.perf_counter() - waited) * 1000
    started = time.perf_counter()
    try:
        return await _first_audio(upstream, body, target, key, deadline, release)
    except BaseException:
        if release is not None:
            release()
        raise
    finally:
        if record is not None:
            record.upstream_ms = (time.perf_counter() - started) * 1000


async def _first_audio(
    upstream: Upstream,
    body: dict[str, Any],
    target: str,
    key: str,
    deadline: float,
    release: Callable[[], None] | None,
) -> Speech:
    stream: AudioStream | None = None
    chunks: AsyncGenerator[bytes] | None = None
    try:
        with anyio.fail_after(deadline):
            stream = await upstream.generate_audio(body, key)
            chunks = audio.convert(stream, stream.format, target)
            try:
                first = await chunks.__anext__()
            except StopAsyncIteration:
                first = b""
    except BaseException as exc:
        # Whatever stopped us (deadline, bad audio, cancellation), the download and
        # the transcoder must not outlive the request.
        with anyio.CancelScope(shield=True):
            if chunks is not None:
                await chunks.aclose()
            if stream is not None:
                await stream.aclose()
        if isinstance(exc, TimeoutError):
            # Final: the generation request was out, and may have been billed.
            raise APIError(
                504,
                f"The AI/ML API did not deliver audio within the shim's {deadline:g} s deadline.",
                type="server_error",
                code="timeout",
                request_id=stream.request_id if stream is not None else None,
            ) from exc
        if isinstance(exc, audio.TranscodeError):
            raise _transcode_failed(exc, stream.request_id if stream else None) from exc
        raise
    return Speech(first, chunks, stream, release)


def _transcode_failed(exc: Exception, request_id: str | None) -> APIError:
    return APIError(
        502,
        f"The upstream audio could not be converted to the requested format: {exc}",
        type="server_error",
        code="bad_upstream_audio",
        request_id=request_id,
    )
