"""CDN links: their shape, and reading them back."""

from __future__ import annotations

import re
import time

import pytest

from mockserver.cdn import DEFAULT_DURATION_MS, AudioPathError, audio_url, parse_audio_path

REAL_EXAMPLE = "1760948051400-99effd93-a38a-43d5-b4e4-76b42afb6e67.mp3"


def test_link_shape_mirrors_the_real_cdn() -> None:
    before = int(time.time() * 1000)
    url = audio_url("http://127.0.0.1:8100/", "nova", "opus", 2345)
    match = re.fullmatch(
        r"http://127\.0\.0\.1:8100/generations/nova/(\d{13})-([0-9a-f-]{36})\.opus"
        r"\?duration_ms=2345",
        url,
    )
    assert match is not None, url
    assert before <= int(match[1]) <= int(time.time() * 1000)
    assert audio_url("http://x", "nova", "opus", 1) != audio_url("http://x", "nova", "opus", 1)


def test_links_read_back() -> None:
    url = audio_url("http://x", "verse", "flac", 4321)
    bucket, rest = url.removeprefix("http://x/generations/").split("/")
    name, query = rest.split("?duration_ms=")
    spec = parse_audio_path(bucket, name, query)
    assert (spec.voice, spec.duration_ms, spec.format, spec.samples) == (
        "verse",
        4321,
        "flac",
        103_704,
    )


def test_the_real_example_reads_as_a_default_clip() -> None:
    spec = parse_audio_path("hedgehog", REAL_EXAMPLE, None)
    assert (spec.voice, spec.duration_ms, spec.format) == ("alloy", DEFAULT_DURATION_MS, "mp3")


@pytest.mark.parametrize(
    ("bucket", "name", "duration"),
    [
        ("alloy", "1-2.mp4", None),
        ("alloy", "x-2.mp3", None),
        ("a/b", "1-2.mp3", None),
        ("alloy", "1-2.mp3", "-5"),
        ("alloy", "1-2.mp3", "1e3"),
        ("alloy", "1-2.mp3", "0"),
        ("alloy", "1-2.mp3", "99999999999999"),
        ("alloy", "1-2.flac", str(21 * 60 * 1000)),
    ],
)
def test_bad_paths(bucket: str, name: str, duration: str | None) -> None:
    with pytest.raises(AudioPathError, match="no such object"):
        parse_audio_path(bucket, name, duration)


def test_raw_formats_may_be_hours_long() -> None:
    assert parse_audio_path("alloy", "1-2.wav", str(3 * 3600 * 1000)).duration_ms == 10_800_000
