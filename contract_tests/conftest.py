"""Contract tests: the real ``openai`` SDK driving the shim on loopback.

The servers come from the package's own pytest plugin (``tts_mock``, ``tts_shim``,
``tts_shim_factory``), the same fixtures users get.
"""

from __future__ import annotations

import inspect
import io
from collections.abc import Iterator
from typing import Any

import av
import openai
import pytest

from shim.plugin import ShimServer


class SDK:
    """One face over ``openai.OpenAI`` and ``openai.AsyncOpenAI``, so each contract
    case runs against both: ``await sdk.call("audio.speech.create", ...)``."""

    def __init__(self, kind: str, shim: ShimServer, **options: Any) -> None:
        self.kind = kind
        options.setdefault("api_key", "sk-test-key-0000")
        options.setdefault("max_retries", 0)
        cls = openai.OpenAI if kind == "sync" else openai.AsyncOpenAI
        self.client: Any = cls(base_url=shim.base_url, **options)

    def method(self, path: str) -> Any:
        target = self.client
        for name in path.split("."):
            target = getattr(target, name)
        return target

    async def call(self, path: str, **params: Any) -> Any:
        result = self.method(path)(**params)
        return await result if inspect.isawaitable(result) else result

    async def speech(self, **params: Any) -> bytes:
        params.setdefault("model", "tts-1-hd")
        params.setdefault("voice", "coral")
        response = await self.call("audio.speech.create", **params)
        content: bytes = response.content
        return content

    async def aclose(self) -> None:
        result = self.client.close()
        if inspect.isawaitable(result):
            await result


@pytest.fixture(params=["sync", "async"])
async def sdk(request: pytest.FixtureRequest, tts_shim: ShimServer) -> Any:
    client = SDK(request.param, tts_shim)
    yield client
    await client.aclose()


def decode(data: bytes, fmt: str) -> tuple[str, int, float]:
    """(codec, sample rate, seconds) of encoded audio, decoded with PyAV."""
    if fmt in ("pcm", "pcm16"):
        return "pcm_s16le", 24_000, len(data) / 48_000
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        rate = stream.codec_context.sample_rate
        return stream.codec_context.name, rate, samples / rate


@pytest.fixture
def journal(tts_shim: ShimServer) -> Iterator[Any]:
    return lambda route=None: [
        e for e in tts_shim.upstream.requests if route is None or e["route"] == route
    ]
