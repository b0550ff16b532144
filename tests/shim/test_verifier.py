"""The audio checks on bytes, with the real decoder (PyAV): good audio of every format
and voice passes, whole or streamed in chunks of any size; HTML, text and junk behind a
signature, or after good frames, do not; and the signature sniffing's PCM rule."""

from __future__ import annotations

import random
import threading

import pytest

from mockserver.audio import SAMPLE_RATE, encode
from mockserver.validation import VOICES
from shim.catalog import FORMATS
from shim.upstream.stream import identify
from shim.upstream.verifier import (
    MAX_HEAD_BYTES,
    BadAudio,
    Verifier,
    _Framing,
    check_whole,
    first_frames,
)

HTML = (
    b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>"
    b"<body><h1>502 Bad Gateway</h1><hr><center>nginx</center></body></html>\n"
)
SIGNATURES = {
    "mp3": b"ID3\x04\x00\x00\x00\x00\x00\x00",
    "opus": b"OggS\x00\x02",
    "aac": b"\xff\xf1\x58\x40",
    "flac": b"fLaC\x00\x00\x00\x22",
    "wav": b"RIFF\xff\xff\xff\xffWAVEfmt ",
    "pcm": b"",
}


def clip(fmt: str, seconds: float = 4.0, voice: str = "nova") -> bytes:
    return encode(voice, int(seconds * SAMPLE_RATE), fmt)


async def streamed(data: bytes, fmt: str, chunk: int = 8192, decode_all: bool = True) -> None:
    """``data`` through the hot path and the streaming check, as a download would be."""
    size = 128
    while (start := await first_frames(data[:size], fmt)) is None:
        if size >= len(data):  # all of it in hand: checked at once, as open_stream does
            await check_whole(data, fmt, decode_all=decode_all)
            return
        size *= 2
    verifier = Verifier(fmt, start, decode_all=decode_all)
    try:
        for offset in range(0, len(data), chunk):
            await verifier.feed(data[offset : offset + chunk])
        await verifier.finish()
    finally:
        verifier.close()


# -- good audio passes ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("voice", VOICES)
async def test_every_voice_in_every_format_passes_whole(fmt: str, voice: str) -> None:
    await check_whole(clip(fmt, 6.0, voice), fmt, decode_all=True)


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("chunk", [1000, 32 * 1024])
async def test_good_audio_passes_streamed_in_any_chunks(fmt: str, chunk: int) -> None:
    await streamed(clip(fmt, 12.0), fmt, chunk)


@pytest.mark.parametrize("fmt", list(FORMATS))
async def test_the_first_frames_need_only_the_start(fmt: str) -> None:
    data = clip(fmt, 30.0)
    start = await first_frames(data[: 32 * 1024], fmt)
    assert start is not None
    assert 0 <= start < 16 * 1024  # the header's length: the first frame follows it


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav"])
async def test_a_start_too_short_for_a_frame_asks_for_more(fmt: str) -> None:
    assert await first_frames(clip(fmt)[:128], fmt) is None


# -- bad audio does not -------------------------------------------------------------------


def variants() -> list[tuple[str, str, bytes]]:
    cases = []
    for fmt in FORMATS:
        good = clip(fmt)
        half = good[: len(good) // 2]
        cases += [
            (fmt, "html", HTML * 2),
            (fmt, "signature+html", SIGNATURES[fmt] + HTML * 2),
            (fmt, "half+html", half + HTML),
            (fmt, "whole+html", good + HTML),
        ]
        if fmt not in ("wav", "pcm", "flac"):  # see test_what_is_not_caught
            cases.append((fmt, "half+random", half + random.Random(fmt).randbytes(3000)))
    return cases


@pytest.mark.parametrize(("fmt", "name", "data"), variants(), ids=lambda v: str(v)[:16])
async def test_html_text_and_junk_are_bad_audio(fmt: str, name: str, data: bytes) -> None:
    with pytest.raises(BadAudio):
        await check_whole(data, fmt, decode_all=True)
    with pytest.raises(BadAudio):
        await streamed(data, fmt)


@pytest.mark.parametrize(("fmt", "name", "data"), variants(), ids=lambda v: str(v)[:16])
async def test_without_decoding_all_the_start_and_the_framing_are_still_checked(
    fmt: str, name: str, data: bytes
) -> None:
    # Audio that is not cached has only its first frames decoded: what spoils its
    # start, and the framing checks (text, Ogg pages) on every byte, still refuse it;
    # junk later in MP3 and AAC, which only decoding finds, does not.
    only_decoding_finds = fmt in ("mp3", "aac") and name.startswith(("half", "whole"))
    checks = (
        lambda: check_whole(data, fmt, decode_all=False),
        lambda: streamed(data, fmt, decode_all=False),
    )
    for check in checks:
        if only_decoding_finds:
            await check()
        else:
            with pytest.raises(BadAudio):
                await check()


async def test_what_is_not_caught() -> None:
    # Documented limits: random bytes are valid samples; bytes after a whole FLAC file's
    # last frame are folded into it by FFmpeg's parser and ignored by its decoder.
    junk = random.Random(7).randbytes(3000)
    await check_whole(clip("wav") + junk, "wav", decode_all=True)
    await check_whole(clip("pcm") + junk, "pcm", decode_all=True)
    await check_whole(clip("flac") + junk, "flac", decode_all=True)


async def test_raw_pcm_must_end_on_a_whole_sample() -> None:
    with pytest.raises(BadAudio, match="middle of a sample"):
        await check_whole(clip("pcm") + b"\x00", "pcm", decode_all=False)


async def test_a_body_with_no_frame_in_its_first_megabyte_is_not_audio() -> None:
    # The hot path reads on while no frame decodes; stream.open_stream stops at this cap.
    junk = b"ID3" + bytes(MAX_HEAD_BYTES)
    assert await first_frames(junk, "mp3") is None
    with pytest.raises(BadAudio):
        await check_whole(junk, "mp3", decode_all=False)


@pytest.mark.parametrize("fmt", ["mp3", "aac", "flac", "opus"])
async def test_junk_after_the_first_frames_is_left_to_the_stream_check(fmt: str) -> None:
    good = clip(fmt, 12.0)
    spoiled = good[: len(good) // 2] + HTML * 40
    # The first frames decode, so the first bytes may go out ...
    assert await first_frames(spoiled[:32768], fmt) is not None
    # ... and the stream check, which reads it all, refuses it before it can end.
    with pytest.raises(BadAudio):
        await streamed(spoiled, fmt)


# -- the checks FFmpeg does not make --------------------------------------------------------


@pytest.mark.parametrize("cut", [1, 5, 26, 27, 28, 40, 63, 64, 65, 200])
def test_ogg_pages_and_text_are_followed_across_any_chunk_boundary(cut: int) -> None:
    good = clip("opus")
    framing = _Framing("opus", 0)
    for offset in range(0, len(good), cut):
        framing.feed(good[offset : offset + cut])
    framing.finish()

    pcm = clip("pcm")
    framing = _Framing("pcm", 0)
    for offset in range(0, len(pcm), cut):
        framing.feed(pcm[offset : offset + cut])
    text = HTML[:100]  # in two halves, neither a run of text by itself
    framing.feed(text[:50])
    with pytest.raises(BadAudio, match="text"):
        framing.feed(text[50:])


def test_an_ogg_stream_cut_inside_a_page_is_refused() -> None:
    good = clip("opus")
    framing = _Framing("opus", 0)
    framing.feed(good[:-10])
    with pytest.raises(BadAudio, match="ends inside the Ogg page"):
        framing.finish()


def test_text_in_the_header_is_not_searched() -> None:
    # Tags and comments before the first frame may be text; frames may not.
    header = b"fLaC" + b"x" * 500
    framing = _Framing("flac", len(header))
    framing.feed(header)
    with pytest.raises(BadAudio):
        framing.feed(b"x" * 64)


# -- the decoding thread ------------------------------------------------------------------


def _verifying() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "tts-shim-verify"]


def _settle() -> None:
    """Wait for verifying threads already told to stop (by earlier tests) to end."""
    for thread in _verifying():
        thread.join(timeout=10)
    assert not _verifying()


async def test_closing_a_verifier_midway_stops_its_thread() -> None:
    _settle()
    data = clip("mp3", 30.0)
    verifier = Verifier("mp3", 0, decode_all=True)
    await verifier.feed(data[:20_000])
    await verifier.feed(data[20_000:40_000])
    assert len(_verifying()) == 1
    verifier.close()
    _settle()


async def test_a_finished_verifier_leaves_no_thread() -> None:
    _settle()
    await streamed(clip("aac"), "aac")
    _settle()


# -- what the signature says ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "named", "fmt"),
    [
        ("audio/pcm", None, "pcm"),
        ("audio/mpeg", "pcm", "pcm"),  # audio, no signature, the link says PCM
        ("application/octet-stream", "pcm", "pcm"),
        ("binary/octet-stream", "pcm", "pcm"),
        ("", "pcm", None),  # says nothing: refused
        ("text/html", "pcm", None),
        ("text/plain", "pcm", None),
        ("application/json", "pcm", None),
        ("application/ogg", "pcm", None),  # says Ogg, holds no Ogg
        ("audio/mpeg", None, None),  # no signature, nothing names PCM
    ],
)
def test_raw_pcm_only_from_a_reply_that_says_it_is_audio(
    content_type: str, named: str | None, fmt: str | None
) -> None:
    assert identify(clip("pcm")[:128], content_type, named) == fmt
