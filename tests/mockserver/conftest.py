"""In-process fixtures for the mock: the app behind ``httpx.ASGITransport``, and a decoder."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import av
import httpx
import numpy as np
import numpy.typing as npt
import pytest
from starlette.applications import Starlette

from mockserver import MockConfig, create_app

ROOT = "http://mock.test"
KEY = "sk-test-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
TEXT = "The quick brown fox jumps over the lazy dog."  # 44 characters: about 2.9 s


def body(**overrides: Any) -> dict[str, Any]:
    """A valid ``POST /v1/tts`` body with ``overrides`` applied."""
    return {"model": "openai/tts-1", "text": TEXT, **overrides}


@dataclass
class Decoded:
    container: str
    codec: str
    sample_rate: int
    channels: int
    samples: npt.NDArray[np.float64]  # mono, scaled to -1..1

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate

    @property
    def rms(self) -> float:
        return float(np.sqrt(np.mean(self.samples**2)))


def decode(data: bytes, fmt: str) -> Decoded:
    """Decode with PyAV; raw PCM is read as 24 kHz s16le mono, as documented."""
    options: dict[str, Any] = {}
    if fmt == "pcm":
        options = {"format": "s16le", "options": {"sample_rate": "24000", "ch_layout": "mono"}}
    with av.open(io.BytesIO(data), **options) as container:
        stream = container.streams.audio[0]
        pieces = []
        for frame in container.decode(stream):
            array = frame.to_ndarray()
            # Planar formats give (channels, n); packed ones (1, n * channels).
            pieces.append(array[0].astype(np.float64))
            kind = array.dtype
        samples = np.concatenate(pieces)
        if kind.kind == "i":
            samples /= float(np.iinfo(kind).max) + 1
        return Decoded(
            container=container.format.name,
            codec=stream.codec_context.name,
            sample_rate=stream.codec_context.sample_rate,
            channels=stream.codec_context.layout.nb_channels,
            samples=samples,
        )


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the mock's sleeps instead of sleeping: delays checked without timing."""
    recorded: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        recorded.append(seconds)

    monkeypatch.setattr(anyio, "sleep", fake_sleep)
    return recorded


@pytest.fixture
def config() -> MockConfig:
    return MockConfig()


@pytest.fixture
def app(config: MockConfig) -> Starlette:
    return create_app(config)


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=ROOT) as client:
        yield client
