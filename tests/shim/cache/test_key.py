from __future__ import annotations

import dataclasses
import hashlib

import pytest

from shim.cache import CacheKey, tenant_of

BASE = CacheKey(
    model="tts-1-hd",
    voice="alloy",
    text="Your call is important to us.",
    format="mp3",
    instructions="calm",
    speed=1.25,
    tenant=None,
)


def test_equal_requests_have_one_digest() -> None:
    again = CacheKey("tts-1-hd", "alloy", "Your call is important to us.", "mp3", "calm", 1.25)

    assert again.digest == BASE.digest
    assert len(BASE.digest) == 64
    int(BASE.digest, 16)


@pytest.mark.parametrize(
    "change",
    [
        {"model": "tts-1"},
        {"voice": "nova"},
        {"text": "Your call is important to us. "},
        {"text": "your call is important to us."},
        {"format": "opus"},
        {"instructions": None},
        {"instructions": "calm "},
        {"speed": None},
        {"speed": 1.0},
        {"tenant": "a" * 64},
    ],
)
def test_everything_that_changes_the_sound_changes_the_digest(change: dict[str, object]) -> None:
    assert dataclasses.replace(BASE, **change).digest != BASE.digest  # type: ignore[arg-type]


def test_fields_do_not_run_into_each_other() -> None:
    # A naive concatenation would make these two one key.
    one = CacheKey("m", "v", "ab", "mp3", instructions="c")
    other = CacheKey("m", "v", "a", "mp3", instructions="bc")

    assert one.digest != other.digest


def test_chat_pcm16_is_speech_pcm_and_speed_one_is_one_point_zero() -> None:
    assert dataclasses.replace(BASE, format="pcm16").digest == (
        dataclasses.replace(BASE, format="pcm").digest
    )
    assert dataclasses.replace(BASE, speed=1).digest == dataclasses.replace(BASE, speed=1.0).digest


def test_server_key_shares_one_cache_and_pass_through_keys_are_hashed() -> None:
    assert tenant_of("server-key", pass_through=False) is None
    tenant_a = tenant_of("sk-client-a", pass_through=True)
    tenant_b = tenant_of("sk-client-b", pass_through=True)

    assert tenant_a == hashlib.sha256(b"sk-client-a").hexdigest()
    assert tenant_a != tenant_b
    assert dataclasses.replace(BASE, tenant=tenant_a).digest != (
        dataclasses.replace(BASE, tenant=tenant_b).digest
    )


def test_pass_through_without_a_key_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="paying key"):
        tenant_of(None, pass_through=True)


def test_repr_shows_neither_text_nor_tenant() -> None:
    key = dataclasses.replace(BASE, text="private words", tenant="f" * 64)

    assert "private words" not in repr(key)
    assert "f" * 64 not in repr(key)
    assert key.digest[:16] in repr(key)
