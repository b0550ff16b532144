"""Stitching pieces into one file, checked on the decoded audio with PyAV.

The pieces are real clips from the mock's generator (speech-like syllables, a
different voice per piece). The stitched file is decoded and lined up against the
pieces decoded one by one and laid end to end: at the start, right before and right
after every join, and at the end, the best alignment must be the same. A gap or an
overlap at a join would shift everything after it (a negative control checks that
one codec frame of either is caught).
"""

from __future__ import annotations

import asyncio
import io
import struct
import subprocess
import sys
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import pytest

from mockserver.audio import encode
from shim.audio import TranscodeError, convert
from shim.stitch import Piece, stitch

FORMATS = ["mp3", "opus", "aac", "flac", "wav", "pcm"]
RATE = 24_000
# Sample counts that end mid-syllable and mid-codec-frame.
LENGTHS = (2 * RATE + 123, 3 * RATE + 7, RATE)
VOICES = ("alloy", "nova", "onyx")
#: One encode's own delay and padding, once per file (not per join): MP3 1105 + up to
#: a frame, AAC 1024 + up to a frame. The others come out exact.
END_SLACK = {"mp3": 0.1, "aac": 0.1, "opus": 0.0, "flac": 0.0, "wav": 0.0, "pcm": 0.0}

Samples = npt.NDArray[np.float32]


def decode(data: bytes, fmt: str) -> Samples:
    """Decode with PyAV to 24 kHz mono float (Opus decodes at 48 kHz)."""
    options: dict[str, Any] = {}
    if fmt == "pcm":
        options = {"format": "s16le", "options": {"sample_rate": "24000", "ch_layout": "mono"}}
    resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
    parts = []
    with av.open(io.BytesIO(data), **options) as container:
        assert len(container.streams.audio) == 1
        for frame in container.decode(audio=0):
            parts += [f.to_ndarray()[0] for f in resampler.resample(frame)]
    parts += [f.to_ndarray()[0] for f in resampler.resample(None)]
    return np.concatenate(parts)


def lag_at(reference: Samples, decoded: Samples, at: int, width: int = 4800) -> int:
    """Where ``reference[at:at + width]`` best matches ``decoded``, relative to ``at``."""
    search = 3000
    part = reference[at : at + width]
    low = max(0, at - search)
    window = decoded[low : at + search + width]
    score = np.correlate(window, part, mode="valid")
    score /= np.sqrt(np.convolve(window**2, np.ones(width), mode="valid")) + 1e-9
    best = int(np.argmax(score))
    assert score[best] / np.linalg.norm(part) > 0.99  # a real match, not noise
    return low + best - at


def check_joins(pieces: Sequence[Samples], decoded: Samples) -> None:
    """Every join lines up with the start: no gap or overlap anywhere (±2 samples)."""
    reference = np.concatenate(pieces)
    joins = np.cumsum([len(p) for p in pieces])[:-1]
    places = [2400, *(int(j) - 4800 for j in joins), *(int(j) for j in joins)]
    places.append(len(reference) - 6000)
    lags = [lag_at(reference, decoded, at) for at in places]
    assert max(lags) - min(lags) <= 2, lags


def clips(fmt: str, lengths: Sequence[int] = LENGTHS) -> list[bytes]:
    return [encode(voice, n, fmt) for voice, n in zip(VOICES, lengths, strict=False)]


async def chunked(data: bytes, size: int = 4096) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), size):
        await asyncio.sleep(0)  # as a download would, let the loop run between chunks
        yield data[offset : offset + size]


async def as_pieces(clips: Sequence[tuple[str, bytes]]) -> AsyncIterator[Piece]:
    for fmt, data in clips:
        yield Piece(fmt, chunked(data))


async def collect(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in stream])


def ogg_pages(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(header type, granule position, serial, body) of every Ogg page, in order."""
    pages = []
    offset = 0
    while offset < len(data):
        assert data[offset : offset + 4] == b"OggS", offset
        header_type, granule, serial = struct.unpack_from("<BqI", data, offset + 5)
        count = data[offset + 26]
        body_size = sum(data[offset + 27 : offset + 27 + count])
        start = offset + 27 + count
        pages.append((header_type, granule, serial, data[start : start + body_size]))
        offset = start + body_size
    return pages


@pytest.mark.parametrize("fmt", FORMATS)
async def test_three_pieces_become_one_file_with_seamless_joins(fmt: str) -> None:
    parts = clips(fmt)
    out = await collect(stitch(as_pieces([(fmt, p) for p in parts]), fmt))
    pieces = [decode(p, fmt) for p in parts]
    decoded = decode(out, fmt)
    expected = sum(len(p) for p in pieces)
    assert abs(len(decoded) - expected) / RATE <= END_SLACK[fmt]
    check_joins(pieces, decoded)


@pytest.mark.parametrize("fmt", FORMATS)
async def test_pieces_in_other_formats_are_transcoded_into_the_one_stream(fmt: str) -> None:
    # An upstream may ignore the format asked for, and not always the same way.
    sources = ["wav", "mp3", "opus"] if fmt != "mp3" else ["flac", "aac", "mp3"]
    parts = [
        (src, encode(voice, n, src)) for src, voice, n in zip(sources, VOICES, LENGTHS, strict=True)
    ]
    out = await collect(stitch(as_pieces(parts), fmt))
    pieces = [decode(data, src) for src, data in parts]
    decoded = decode(out, fmt)
    assert abs(len(decoded) - sum(len(p) for p in pieces)) / RATE <= END_SLACK[fmt]
    check_joins(pieces, decoded)


async def test_wav_has_one_streaming_header() -> None:
    out = await collect(stitch(as_pieces([("wav", p) for p in clips("wav")]), "wav"))
    assert out.count(b"RIFF") == 1
    assert out.count(b"WAVEfmt ") == 1
    assert out.startswith(b"RIFF\xff\xff\xff\xffWAVE")
    data_at = out.index(b"data")
    assert out[data_at + 4 : data_at + 8] == b"\xff\xff\xff\xff"
    assert len(out) - data_at - 8 == 2 * sum(LENGTHS)  # every sample, once


async def test_flac_is_one_stream() -> None:
    out = await collect(stitch(as_pieces([("flac", p) for p in clips("flac")]), "flac"))
    assert out.startswith(b"fLaC")
    assert out.count(b"fLaC") == 1


async def test_ogg_opus_is_one_logical_stream_with_running_granules() -> None:
    out = await collect(stitch(as_pieces([("opus", p) for p in clips("opus")]), "opus"))
    pages = ogg_pages(out)
    assert len({serial for _, _, serial, _ in pages}) == 1
    types = [header_type for header_type, _, _, _ in pages]
    assert [t & 0x02 for t in types] == [0x02] + [0] * (len(pages) - 1)  # one BOS, first
    assert [t & 0x04 for t in types] == [0] * (len(pages) - 1) + [0x04]  # one EOS, last
    assert sum(body.startswith(b"OpusHead") for _, _, _, body in pages) == 1
    granules = [g for _, g, _, _ in pages if g != -1]
    assert granules == sorted(granules)
    pre_skip = struct.unpack_from("<H", pages[0][3], 10)[0]
    # The last granule, less the pre-skip, is the length at 48 kHz: every sample, once.
    assert granules[-1] - pre_skip == 2 * len(decode(out, "opus")) == 2 * sum(LENGTHS)


@pytest.mark.parametrize("change", ["gap", "overlap"])
def test_the_join_check_catches_a_gap_or_overlap_of_one_frame(change: str) -> None:
    # The negative control: the check above fails on one MP3 frame (1,152 samples,
    # 48 ms) of silence added at a join, or of audio lost at one.
    pieces = [decode(p, "wav") for p in clips("wav")]
    joined = np.concatenate(pieces)
    check_joins(pieces, joined)
    at = len(pieces[0])
    if change == "gap":
        broken = np.concatenate([joined[:at], np.zeros(1152, np.float32), joined[at:]])
    else:
        broken = np.concatenate([joined[:at], joined[at + 1152 :]])
    with pytest.raises(AssertionError):
        check_joins(pieces, broken)


@pytest.mark.parametrize("fmt", FORMATS)
async def test_pieces_are_read_in_order_and_the_first_leaves_before_the_next_is_read(
    fmt: str,
) -> None:
    received = bytearray()
    events: list[str] = []
    before_second: bytes | None = None

    async def piece(index: int, data: bytes) -> AsyncIterator[bytes]:
        nonlocal before_second
        events.append(f"start {index}")
        if index == 1:
            before_second = bytes(received)
        async for chunk in chunked(data):
            yield chunk
        events.append(f"end {index}")

    async def pieces() -> AsyncIterator[Piece]:
        for index, data in enumerate(clips(fmt)):
            yield Piece(fmt, piece(index, data))

    async for chunk in stitch(pieces(), fmt):
        received += chunk
    assert events == ["start 0", "end 0", "start 1", "end 1", "start 2", "end 2"]
    assert before_second is not None
    # All of the first piece but what the encoder holds for the join (under one frame)
    # and the last Ogg page (100 ms) had been sent: at most 150 ms held back.
    assert len(decode(before_second, fmt)) >= LENGTHS[0] - 3600


async def failing_piece(data: bytes, after: int) -> AsyncIterator[bytes]:
    count = 0
    async for chunk in chunked(data):
        if count == after:
            raise ConnectionError("download cut")
        count += 1
        yield chunk


@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_piece_failing_midway_raises(fmt: str) -> None:
    first, second, third = clips(fmt)

    async def pieces() -> AsyncIterator[Piece]:
        yield Piece(fmt, chunked(first))
        yield Piece(fmt, failing_piece(second, after=2 if len(second) > 3 * 4096 else 0))
        yield Piece(fmt, chunked(third))

    received = bytearray()

    async def consume() -> None:
        async for chunk in stitch(pieces(), fmt):
            received.extend(chunk)

    with pytest.raises(ConnectionError, match="download cut"):
        await consume()
    assert received  # the first piece had been sent: this is an abort mid-stream


@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_piece_whose_generation_fails_raises(fmt: str) -> None:
    first = clips(fmt)[0]

    async def pieces() -> AsyncIterator[Piece]:
        yield Piece(fmt, chunked(first))
        raise RuntimeError("generation failed")

    before = set(transcoder_threads())
    with pytest.raises(RuntimeError, match="generation failed"):
        await collect(stitch(pieces(), fmt))
    for thread in set(transcoder_threads()) - before:
        await asyncio.to_thread(thread.join, 10)
        assert not thread.is_alive()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("bad", [b"", b"<html>not audio</html>" * 50])
async def test_a_piece_without_audio_raises(fmt: str, bad: bytes) -> None:
    good = clips("wav", (RATE,))[0]
    source = "wav" if bad else fmt
    parts = [("wav", good), (source, bad), ("wav", good)]
    with pytest.raises(TranscodeError):
        await collect(stitch(as_pieces(parts), fmt))


async def test_pcm_pieces_must_be_whole_samples() -> None:
    parts = [("pcm", b"\x01\x00" * 100), ("pcm", b"\x01\x00\x02"), ("pcm", b"\x01\x00")]
    with pytest.raises(TranscodeError, match="mid-sample"):
        await collect(stitch(as_pieces(parts), "pcm"))


def transcoder_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "tts-shim-transcode"]


@pytest.mark.parametrize("fmt", ["mp3", "opus"])
async def test_closing_early_stops_the_encoder_thread(fmt: str) -> None:
    before = set(transcoder_threads())
    stream = stitch(as_pieces([(fmt, p) for p in clips(fmt)]), fmt)
    assert isinstance(stream, AsyncGenerator)
    await stream.__anext__()
    started = [t for t in transcoder_threads() if t not in before]
    assert len(started) == 1
    await stream.aclose()
    await asyncio.to_thread(started[0].join, 10)
    assert not started[0].is_alive()


async def test_convert_still_passes_matching_formats_through_and_transcodes_others() -> None:
    wav = clips("wav", (RATE,))[0]
    assert await collect(convert(chunked(wav), "wav", "wav")) == wav
    flac = await collect(convert(chunked(wav), "wav", "flac"))
    assert flac.startswith(b"fLaC")
    assert len(decode(flac, "flac")) == RATE


def test_importing_the_audio_module_does_not_load_pyav() -> None:
    code = "import sys, shim.audio, shim.stitch; sys.exit('av' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
