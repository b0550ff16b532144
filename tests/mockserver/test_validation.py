"""The request body rules, as the three reference OpenAPI documents state them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mockserver.validation import (
    FORMATS,
    MODELS,
    VOICES,
    BodyValidationError,
    SpeechRequest,
    parse_speech_request,
    validate_speech_request,
)

from .conftest import body

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "aimlapi"


def issues(data: object) -> list[str]:
    with pytest.raises(BodyValidationError) as info:
        validate_speech_request(data)
    return [str(issue) for issue in info.value.issues]


def test_defaults_are_applied() -> None:
    request = validate_speech_request({"model": "openai/tts-1-hd", "text": "Hi"})
    assert request == SpeechRequest(
        model="openai/tts-1-hd",
        text="Hi",
        voice="alloy",
        style=None,
        response_format="mp3",
        speed=1.0,
        stream=False,
    )


def test_every_field_set() -> None:
    data = body(
        model="openai/gpt-4o-mini-tts",
        voice="verse",
        style="cheerful",
        response_format="flac",
        speed=2,
        stream=False,
    )
    request = validate_speech_request(data)
    assert (request.model, request.voice, request.style) == (data["model"], "verse", "cheerful")
    assert (request.response_format, request.speed, request.stream) == ("flac", 2.0, False)


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="reference documents not present")
def test_enums_match_the_reference_documents() -> None:
    models = []
    for path in sorted(REFERENCE.glob("*.openapi.json")):
        schema = json.loads(path.read_text())["paths"]["/v1/tts"]["post"]["requestBody"]
        properties = schema["content"]["application/json"]["schema"]["properties"]
        models += properties["model"]["enum"]
        assert tuple(properties["voice"]["enum"]) == VOICES
        assert tuple(properties["response_format"]["enum"]) == FORMATS
        assert properties["text"]["minLength"] == 1
        assert properties["text"]["maxLength"] == 4096
        assert (properties["speed"]["minimum"], properties["speed"]["maximum"]) == (0.25, 4)
        assert properties["stream"]["enum"] == [False]
    assert sorted(models) == sorted(MODELS)


@pytest.mark.parametrize("model", MODELS)
def test_each_model_is_accepted(model: str) -> None:
    assert validate_speech_request(body(model=model)).model == model


@pytest.mark.parametrize("field", ["model", "text"])
def test_required_fields(field: str) -> None:
    data = body()
    del data[field]
    assert issues(data) == [f'Required at "{field}"']


def test_unknown_model_names_the_choices() -> None:
    (message,) = issues(body(model="tts-1"))
    assert message == (
        "Invalid enum value. Expected 'openai/tts-1' | 'openai/tts-1-hd' | "
        "'openai/gpt-4o-mini-tts', received 'tts-1' at \"model\""
    )


@pytest.mark.parametrize(("length", "ok"), [(0, False), (1, True), (4096, True), (4097, False)])
def test_text_length_boundaries(length: int, ok: bool) -> None:
    data = body(text="a" * length)
    if ok:
        assert len(validate_speech_request(data).text) == length
    else:
        (message,) = issues(data)
        assert message.endswith(f'received {length} at "text"')
        assert ("at least 1" if length == 0 else "at most 4096") in message


def test_text_length_counts_code_points() -> None:
    # JSON Schema counts characters, not UTF-16 units or bytes.
    assert validate_speech_request(body(text="😀" * 4096)).text == "😀" * 4096


@pytest.mark.parametrize("voice", VOICES)
def test_each_voice_is_accepted(voice: str) -> None:
    assert validate_speech_request(body(voice=voice)).voice == voice


def test_bad_voice_message_names_field_expected_and_received() -> None:
    (message,) = issues(body(voice="bob"))
    expected = " | ".join(f"'{v}'" for v in VOICES)
    assert message == f"Invalid enum value. Expected {expected}, received 'bob' at \"voice\""


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_is_accepted(fmt: str) -> None:
    assert validate_speech_request(body(response_format=fmt)).response_format == fmt


@pytest.mark.parametrize(
    ("field", "value"),
    [("voice", "Alloy"), ("response_format", "ogg"), ("response_format", "pcm16")],
)
def test_enum_values_are_exact(field: str, value: str) -> None:
    (message,) = issues(body(**{field: value}))
    assert message.startswith("Invalid enum value.")
    assert message.endswith(f"received '{value}' at \"{field}\"")


@pytest.mark.parametrize(
    ("speed", "ok"),
    [(0.2499, False), (0.25, True), (1, True), (4, True), (4.0, True), (4.0001, False)],
)
def test_speed_boundaries(speed: float, ok: bool) -> None:
    if ok:
        assert validate_speech_request(body(speed=speed)).speed == speed
    else:
        (message,) = issues(body(speed=speed))
        assert message.endswith(f'received {speed} at "speed"')
        assert ("greater than or equal to 0.25" if speed < 1 else "less than or equal to 4") in (
            message
        )


@given(st.floats(min_value=0.25, max_value=4.0))
def test_any_speed_in_range_is_accepted(speed: float) -> None:
    assert validate_speech_request(body(speed=speed)).speed == speed


@given(st.floats(allow_nan=False).filter(lambda s: not 0.25 <= s <= 4.0))
def test_any_speed_out_of_range_is_rejected(speed: float) -> None:
    with pytest.raises(BodyValidationError):
        validate_speech_request(body(speed=speed))


@pytest.mark.parametrize(
    ("field", "value", "received"),
    [
        ("speed", True, "boolean"),
        ("speed", "1", "string"),
        ("speed", None, "null"),
        ("text", 42, "number"),
        ("text", ["hi"], "array"),
        ("model", None, "null"),
        ("voice", {"id": "voice_1"}, "object"),
        ("style", 0, "number"),
        ("stream", "false", "string"),
    ],
)
def test_wrong_types(field: str, value: Any, received: str) -> None:
    (message,) = issues(body(**{field: value}))
    assert message.startswith("Expected ")
    assert message.endswith(f'received {received} at "{field}"')


def test_stream_only_false() -> None:
    assert validate_speech_request(body(stream=False)).stream is False
    assert issues(body(stream=True)) == [
        'Invalid literal value, expected false, received true at "stream"'
    ]


def test_unknown_keys_are_ignored() -> None:
    request = validate_speech_request(body(instructions="whisper", extra={"a": 1}))
    assert request.text == body()["text"]


def test_all_issues_are_reported_in_field_order() -> None:
    found = issues({"text": "", "voice": "bob", "speed": 9, "stream": True})
    assert [m.rsplit(" at ", 1)[1] for m in found] == [
        '"model"',
        '"text"',
        '"voice"',
        '"speed"',
        '"stream"',
    ]


@pytest.mark.parametrize(
    ("data", "received"), [([], "array"), ("x", "string"), (None, "null"), (1, "number")]
)
def test_body_must_be_an_object(data: object, received: str) -> None:
    assert issues(data) == [f"Expected object, received {received}"]


def test_error_message_starts_with_the_documented_text() -> None:
    with pytest.raises(BodyValidationError) as info:
        validate_speech_request(body(voice="bob"))
    assert info.value.message.startswith("Body validation error! Invalid enum value.")
    assert str(info.value) == info.value.message


@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b"\xff\xfe", b'{"speed": NaN}'])
def test_parse_rejects_what_is_not_json(raw: bytes) -> None:
    with pytest.raises(BodyValidationError) as info:
        parse_speech_request(raw)
    assert "received invalid JSON" in info.value.message


def test_parse_reads_a_non_json_content_type_as_an_empty_body() -> None:
    raw = json.dumps(body()).encode()
    assert parse_speech_request(raw, "application/json; charset=utf-8").text == body()["text"]
    with pytest.raises(BodyValidationError) as info:
        parse_speech_request(raw, "text/plain")
    assert [str(i) for i in info.value.issues] == ['Required at "model"', 'Required at "text"']
