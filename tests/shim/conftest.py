"""In-process fixtures: the shim app over an ``httpx.MockTransport`` upstream."""

from __future__ import annotations

import io
import json
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import av
import httpx
import numpy as np
import pytest

from shim import Config, create_app

CDN = "https://cdn.aimlapi.com"


def make_audio(fmt: str = "wav", seconds: float = 0.5, rate: int = 24_000) -> bytes:
    """Real audio (a 220 Hz tone) encoded by PyAV, as the upstream would send it."""
    muxer, codec = {
        "mp3": ("mp3", "libmp3lame"),
        "opus": ("ogg", "libopus"),
        "aac": ("adts", "aac"),
        "flac": ("flac", "flac"),
        "wav": ("wav", "pcm_s16le"),
        "pcm": ("s16le", "pcm_s16le"),
    }[fmt]
    samples = (np.sin(2 * math.pi * 220 * np.arange(int(rate * seconds)) / rate) * 9000).astype(
        np.int16
    )
    buf = io.BytesIO()
    with av.open(buf, "w", format=muxer) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        fmt_name = stream.codec_context.format.name
        for resampled in av.AudioResampler(format=fmt_name, layout="mono", rate=rate).resample(
            frame
        ):
            out.mux(stream.encode(resampled))
        out.mux(stream.encode(None))
    return buf.getvalue()


def decode(data: bytes, fmt: str) -> tuple[str, float]:
    """(codec name, seconds) of encoded audio; raw PCM is 24 kHz s16le mono."""
    if fmt == "pcm":
        return "pcm_s16le", len(data) / 48_000
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return stream.codec_context.name, samples / stream.codec_context.sample_rate


class FakeUpstream:
    """Plays the AI/ML API (``POST /v1/tts``) and its CDN for ``httpx.MockTransport``.

    ``tts`` and ``cdn`` are queues of responses (or callables, or exceptions) used in
    order; when empty, a normal generation answers. Every request is recorded.
    """

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.tts: list[Any] = []
        self.cdn: list[Any] = []
        self.audio: dict[str, bytes] = {}

    def audio_for(self, fmt: str) -> bytes:
        if fmt not in self.audio:
            self.audio[fmt] = make_audio(fmt)
        return self.audio[fmt]

    def calls(self, path_prefix: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path.startswith(path_prefix)]

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.calls("/v1/tts")]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/v1/tts":
            queue, default = self.tts, self._generation
        else:
            queue, default = self.cdn, self._download
        item = queue.pop(0) if queue else default
        if isinstance(item, Exception):
            raise item
        if callable(item):
            item = item(request)
        assert isinstance(item, httpx.Response)
        return item

    def _generation(self, request: httpx.Request) -> httpx.Response:
        fmt = json.loads(request.content).get("response_format", "mp3")
        return httpx.Response(201, json={"audio": {"url": f"{CDN}/generations/t/1-a.{fmt}"}})

    def _download(self, request: httpx.Request) -> httpx.Response:
        fmt = request.url.path.rsplit(".", 1)[-1]
        return httpx.Response(200, content=self.audio_for(fmt))


@pytest.fixture
def upstream() -> FakeUpstream:
    return FakeUpstream()


ClientFactory = Callable[..., Any]


@pytest.fixture
async def shim(upstream: FakeUpstream) -> AsyncIterator[Callable[..., httpx.AsyncClient]]:
    """``shim(**config)`` -> an ``httpx.AsyncClient`` on a shim app over ``upstream``."""
    clients: list[httpx.AsyncClient] = []

    def factory(**settings: Any) -> httpx.AsyncClient:
        settings.setdefault("tts_retries", 1)
        settings.setdefault("max_retry_wait", 0.01)
        app = create_app(Config(**settings), transport=httpx.MockTransport(upstream))
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app),
            base_url="http://shim",
            headers={"authorization": "Bearer sk-client-key-1234"},
        )
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.aclose()
