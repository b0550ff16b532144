"""Synthesis, PyAV encoding and the byte-bounded cache."""

from __future__ import annotations

import itertools
import struct
import sys
import tracemalloc
from array import array

import numpy as np
import pytest

from mockserver import audio
from mockserver.audio import (
    CHUNK_SIZE,
    FORMATS,
    SAMPLE_RATE,
    AudioCache,
    encode,
    iter_encoded,
    render,
    samples_for,
    speech_duration,
)
from mockserver.validation import VOICES

from .conftest import decode

# What each format must decode as: (container, codec, sample rate).
EXPECTED = {
    "mp3": ("mp3", "mp3float", 24_000),
    "opus": ("ogg", "opus", 48_000),  # Opus always decodes at 48 kHz
    "aac": ("aac", "aac", 24_000),  # FFmpeg's name for the ADTS demuxer
    "flac": ("flac", "flac", 24_000),
    "wav": ("wav", "pcm_s16le", 24_000),
    "pcm": ("s16le", "pcm_s16le", 24_000),
}
# Codec priming and frame padding make compressed clips a little longer.
TOLERANCE = 0.1


def test_speech_duration_formula() -> None:
    assert speech_duration("a" * 150) == 10.0
    assert speech_duration("a" * 150, 2.0) == 5.0
    assert speech_duration("a" * 150, 0.25) == 40.0
    assert speech_duration("a" * 20) == pytest.approx(1.333)
    assert speech_duration("a" * 4096, 0.25) == pytest.approx(1092.267)


def test_speech_duration_has_a_floor() -> None:
    assert speech_duration("a") == audio.MIN_DURATION
    assert speech_duration("a" * 7, 4.0) == audio.MIN_DURATION


def test_speech_duration_is_rounded_to_milliseconds() -> None:
    seconds = speech_duration("a" * 17, 1.3)
    assert seconds == round(seconds, 3)


def test_samples_for() -> None:
    assert samples_for(1000) == SAMPLE_RATE
    assert samples_for(1) == 24


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_decodes_as_documented(fmt: str) -> None:
    decoded = decode(encode("coral", samples_for(1500), fmt), fmt)
    assert (decoded.container, decoded.codec, decoded.sample_rate) == EXPECTED[fmt]
    assert decoded.channels == 1
    assert decoded.duration == pytest.approx(1.5, abs=TOLERANCE)
    assert decoded.rms > 0.05  # speech-like, not silence


def test_content_types() -> None:
    assert {name: f.content_type for name, f in FORMATS.items()} == {
        "mp3": "audio/mpeg",
        "opus": "audio/opus",
        "aac": "audio/aac",
        "flac": "audio/flac",
        "wav": "audio/wav",
        "pcm": "audio/pcm",
    }


def test_wav_has_a_streaming_header() -> None:
    data = encode("alloy", samples_for(500), "wav")
    riff, riff_size, wave, fmt_tag, fmt_size = struct.unpack("<4sI4s4sI", data[:20])
    assert (riff, wave, fmt_tag, fmt_size) == (b"RIFF", b"WAVE", b"fmt ", 16)
    assert riff_size == 0xFFFFFFFF
    codec, channels, rate, byte_rate, align, bits = struct.unpack("<HHIIHH", data[20:36])
    assert (codec, channels, rate, byte_rate, align, bits) == (1, 1, 24_000, 48_000, 2, 16)
    assert struct.unpack("<4sI", data[36:44]) == (b"data", 0xFFFFFFFF)
    assert len(data) == 44 + 2 * samples_for(500)


def test_pcm_is_raw_samples() -> None:
    total = samples_for(250)
    data = encode("echo", total, "pcm")
    samples = render("echo", total)
    if sys.byteorder == "big":
        samples.byteswap()
    assert data == samples.tobytes()


def test_encoding_is_deterministic() -> None:
    assert encode("sage", samples_for(700), "mp3") == encode("sage", samples_for(700), "mp3")


def test_voices_sound_different() -> None:
    total = samples_for(1000)
    clips = {voice: np.asarray(render(voice, total), np.float64) for voice in VOICES}
    for voice, clip in clips.items():
        for other, other_clip in clips.items():
            if voice < other:
                assert np.mean(np.abs(clip - other_clip)) > 1000, (voice, other)


def test_pitch_follows_the_voice() -> None:
    def dominant_hz(voice: str) -> float:
        clip = np.asarray(render(voice, SAMPLE_RATE * 4), np.float64)
        spectrum = np.abs(np.fft.rfft(clip))
        return float(np.argmax(spectrum) * SAMPLE_RATE / len(clip))

    assert dominant_hz("onyx") < dominant_hz("alloy") < dominant_hz("shimmer")


def test_unknown_voice_sounds_like_alloy() -> None:
    assert render("hedgehog", 4800) == render("alloy", 4800)


def test_render_slices_match_the_whole() -> None:
    total = samples_for(3000)
    whole = render("nova", total)
    parts = [render("nova", total, start, start + 7000) for start in range(0, total, 7000)]
    assert sum(parts, array("h")) == whole


@pytest.mark.parametrize(
    ("start", "stop"), [(0, 10), (30_000, 33_000), (1_000, 100_000), (239_000, 240_000)]
)
def test_any_slice_matches_the_whole(start: int, stop: int) -> None:
    # Slices that start mid-period, cross where the period repeats, hold several periods,
    # and end in the final fade.
    whole = render("coral", 240_000)
    assert render("coral", 240_000, start, stop) == whole[start:stop]


@pytest.mark.parametrize("voice", VOICES)
def test_no_clicks(voice: str) -> None:
    # Over five seconds: every syllable's edges, gaps between words, and the seams where
    # the voice's period repeats. A click is a jump of the order of the peak; the
    # steepest a syllable gets (the highest voice's fourth overtone) is far below that.
    clip = render(voice, samples_for(5000))
    peak = max(map(abs, clip))
    steepest = max(abs(b - a) for a, b in itertools.pairwise(clip))
    assert peak > 10_000
    assert steepest < peak / 5


def test_clip_starts_and_ends_quietly() -> None:
    clip = render("ash", samples_for(1234))
    assert clip[0] == 0
    assert abs(int(clip[-1])) < 200


@pytest.mark.parametrize("fmt", ["mp3", "pcm"])
def test_iter_encoded_yields_bounded_chunks(fmt: str) -> None:
    chunks = list(iter_encoded("fable", samples_for(5000), fmt))
    assert len(chunks) > 1
    assert all(0 < len(chunk) <= CHUNK_SIZE for chunk in chunks)
    assert b"".join(chunks) == encode("fable", samples_for(5000), fmt)


def test_long_pcm_streams_in_constant_memory() -> None:
    total = samples_for(10 * 60 * 1000)  # ten minutes: 28.8 MB
    tracemalloc.start()
    try:
        size = sum(len(chunk) for chunk in iter_encoded("onyx", total, "pcm"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size == 2 * total
    assert peak < 2 * 1024 * 1024


def test_max_duration_depends_on_format() -> None:
    assert audio.max_duration_ms("pcm") == audio.max_duration_ms("wav")
    assert audio.max_duration_ms("mp3") < audio.max_duration_ms("pcm")
    # The longest valid request (4096 characters at speed 0.25) fits every format.
    longest = round(speech_duration("a" * 4096, 0.25) * 1000)
    assert all(longest <= audio.max_duration_ms(fmt) for fmt in FORMATS)


class TestAudioCache:
    def test_put_and_get(self) -> None:
        cache = AudioCache(1000)
        assert cache.put(("alloy", 1, "mp3"), b"x" * 100)
        assert cache.get(("alloy", 1, "mp3")) == b"x" * 100
        assert cache.get(("alloy", 2, "mp3")) is None
        assert (len(cache), cache.size) == (1, 100)

    def test_evicts_least_recently_used_by_bytes(self) -> None:
        cache = AudioCache(1000)
        for n in range(4):
            cache.put(("alloy", n, "mp3"), b"x" * 250)
        cache.get(("alloy", 0, "mp3"))  # now the most recently used
        cache.put(("alloy", 9, "mp3"), b"y" * 250)
        assert ("alloy", 0, "mp3") in cache
        assert ("alloy", 1, "mp3") not in cache
        assert cache.size == 1000

    def test_refuses_entries_over_a_quarter_of_the_budget(self) -> None:
        cache = AudioCache(1000)
        assert not cache.put(("alloy", 1, "wav"), b"x" * 251)
        assert len(cache) == 0

    def test_replacing_an_entry_keeps_the_size_right(self) -> None:
        cache = AudioCache(1000)
        cache.put(("alloy", 1, "wav"), b"x" * 200)
        cache.put(("alloy", 1, "wav"), b"x" * 50)
        assert cache.size == 50

    def test_clear(self) -> None:
        cache = AudioCache(1000)
        cache.put(("alloy", 1, "wav"), b"x")
        cache.clear()
        assert (len(cache), cache.size) == (0, 0)

    def test_iter_bytes_fills_the_cache_when_complete(self) -> None:
        cache = AudioCache(10 * 1024 * 1024)
        total = samples_for(800)
        first = b"".join(cache.iter_bytes("ballad", total, "flac"))
        assert cache.get(("ballad", total, "flac")) == first
        assert b"".join(cache.iter_bytes("ballad", total, "flac")) == first

    def test_iter_bytes_abandoned_midway_caches_nothing(self) -> None:
        cache = AudioCache(10 * 1024 * 1024)
        total = samples_for(3000)
        chunks = cache.iter_bytes("ballad", total, "pcm")
        next(chunks)
        chunks.close()
        assert len(cache) == 0

    def test_iter_bytes_skips_clips_too_big_to_cache(self) -> None:
        cache = AudioCache(4 * CHUNK_SIZE)
        total = samples_for(2000)  # 96 kB of PCM, over a quarter of the budget
        assert len(b"".join(cache.iter_bytes("ballad", total, "pcm"))) == 2 * total
        assert len(cache) == 0
