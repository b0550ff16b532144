"""In-process fixtures for the mock: the app behind ``httpx.ASGITransport``, and a decoder."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import numpy as np
import numpy.typing as npt
import pytest
from starlette.applications import Starlette

from mockserver import MockConfig, create_app
from shim.testing import decode_audio

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
    """Decode with PyAV (:func:`shim.testing.decode_audio`, the project's one decoder for
    tests); raw PCM is read as 24 kHz s16le mono, as documented."""
    audio = decode_audio(data, fmt, samples=True)
    assert audio.samples is not None
    return Decoded(audio.container, audio.codec, audio.sample_rate, audio.channels, audio.samples)


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
