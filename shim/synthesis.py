"""From a validated request to audio in the client's format, first bytes in hand.

Both ``/v1/audio/speech`` and ``/v1/chat/completions`` go through :func:`synthesize`;
they differ only in how they wrap the bytes.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import anyio

from shim import audio
from shim.errors import APIError
from shim.upstream import AudioStream, Upstream

__all__ = ["Speech", "synthesize"]


class Speech:
    """Audio on its way to the client: iterate it once, or ``aclose`` it."""

    def __init__(self, first: bytes, rest: AsyncGenerator[bytes], stream: AudioStream) -> None:
        self.request_id = stream.request_id
        self.usage = stream.usage
        self._first = first
        self._rest = rest
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            yield self._first
            async for chunk in self._rest:
                yield chunk
        except audio.TranscodeError as exc:
            raise _transcode_failed(exc, self.request_id) from exc
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Stop the transcoder (if any) and the upstream download."""
        await self._rest.aclose()
        await self._stream.aclose()


async def synthesize(
    upstream: Upstream, body: dict[str, Any], target: str, key: str, deadline: float
) -> Speech:
    """Generate ``body`` upstream and return its audio as ``target`` format.

    Everything up to the first audio byte must fit in ``deadline`` seconds; after
    that, the download's idle timeout governs, so long audio can stream.
    """
    try:
        with anyio.fail_after(deadline):
            stream = await upstream.synthesize(body, key)
            chunks = audio.convert(stream, stream.format, target)
            try:
                first = await chunks.__anext__()
            except StopAsyncIteration:
                first = b""
            except audio.TranscodeError as exc:
                await chunks.aclose()
                await stream.aclose()
                raise _transcode_failed(exc, stream.request_id) from exc
    except TimeoutError as exc:
        raise APIError(
            504,
            f"The AI/ML API did not deliver audio within the shim's {deadline:g} s deadline.",
            type="server_error",
            code="timeout",
            retryable=True,
        ) from exc
    return Speech(first, chunks, stream)


def _transcode_failed(exc: Exception, request_id: str | None) -> APIError:
    return APIError(
        502,
        f"The upstream audio could not be converted to the requested format: {exc}",
        type="server_error",
        code="bad_upstream_audio",
        request_id=request_id,
    )
