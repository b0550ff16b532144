"""The request contract: the models' rules, OpenAI's ``param``/message/``code`` for each
failure, and the served schema agreeing with the models body by body."""

from __future__ import annotations

from typing import Any, Literal

import pytest
from jsonschema import Draft202012Validator
from pydantic import TypeAdapter, ValidationError

from shim.catalog import MODELS, UPSTREAM_VOICES
from shim.contract import MAX_INPUT_CHARS, ChatRequest, SpeechRequest, api_error, param_of
from shim.errors import APIError
from shim.openapi import document
from tests.shim.conftest import generations

_DROP = object()
SPEECH = {"model": "tts-1-hd", "input": "Hello there.", "voice": "coral"}
USER = [{"role": "user", "content": "Hello there."}]
CHAT: dict[str, Any] = {
    "model": "tts-1-hd",
    "modalities": ["text", "audio"],
    "audio": {"voice": "coral", "format": "wav"},
    "messages": USER,
}


def _speech(**changes: Any) -> dict[str, Any]:
    body = {**SPEECH, **changes}
    return {k: v for k, v in body.items() if v is not _DROP}


def _chat(**changes: Any) -> dict[str, Any]:
    body = {**CHAT, **changes}
    return {k: v for k, v in body.items() if v is not _DROP}


def _user(content: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": content}]


def _refused(model: type[SpeechRequest | ChatRequest], body: Any) -> dict[str, Any]:
    with pytest.raises(APIError) as caught:
        model.from_json(body)
    error = caught.value
    assert error.type == "invalid_request_error"
    assert error.message
    assert not error.retryable
    return {"status": error.status, **error.body()["error"]}


# -- param_of -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("loc", "param"),
    [
        ((), None),
        (("model",), "model"),
        (("audio", "voice"), "audio.voice"),
        (("messages", 0), "messages[0]"),
        (("messages", 0, "content", 1, "text"), "messages[0].content[1].text"),
        # Union branch tags (this module's, and pydantic's own) are not fields.
        (
            ("messages", 0, "content", "part-list", 1, "text-part", "text"),
            "messages[0].content[1].text",
        ),
        (("speed", "function-wrap[validate()]"), "speed"),
        ((0,), "[0]"),
    ],
)
def test_param_of_names_the_field_as_openai_does(loc: tuple[Any, ...], param: str | None) -> None:
    assert param_of(loc) == param


# -- the speech request ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        (_speech(input=_DROP), 400, "input", None),
        (_speech(input=""), 400, "input", "empty_string"),
        (_speech(input="   "), 400, "input", "empty_string"),
        (_speech(input="\u3000\n"), 400, "input", "empty_string"),
        (_speech(input=42), 400, "input", None),
        (_speech(input="x" * 4097), 400, "input", "string_above_max_length"),
        (_speech(voice="bob"), 400, "voice", None),
        (_speech(voice="marin"), 400, "voice", None),
        (_speech(voice={"id": "voice_123"}), 400, "voice", None),
        (_speech(voice=["alloy"]), 400, "voice", None),
        (_speech(response_format="ogg"), 400, "response_format", None),
        (_speech(response_format=None), 400, "response_format", None),
        (_speech(response_format=[]), 400, "response_format", None),
        (_speech(speed=0.24), 400, "speed", None),
        (_speech(speed=4.01), 400, "speed", None),
        (_speech(speed="fast"), 400, "speed", None),
        (_speech(speed=True), 400, "speed", None),
        (_speech(speed=float("inf")), 400, "speed", None),
        (_speech(speed=float("nan")), 400, "speed", None),
        (_speech(instructions=7), 400, "instructions", None),
        (_speech(instructions="x" * 4097), 400, "instructions", "string_above_max_length"),
        (_speech(stream_format="chunks"), 400, "stream_format", None),
        (_speech(stream_format=["sse"]), 400, "stream_format", None),
        (_speech(model=_DROP), 400, "model", None),
        (_speech(model=3), 400, "model", None),
        (_speech(model="gpt-4o"), 404, "model", "model_not_found"),
        (_speech(model="openai/whisper-1"), 404, "model", "model_not_found"),
        # The model is checked first: a wrong model is a 404 whatever else is wrong.
        (_speech(model="gpt-4o", input=""), 404, "model", "model_not_found"),
    ],
)
def test_invalid_speech_bodies(
    body: dict[str, Any], status: int, param: str, code: str | None
) -> None:
    error = _refused(SpeechRequest, body)

    assert (error["status"], error["param"], error["code"]) == (status, param, code)


@pytest.mark.parametrize("body", [[1, 2], "text", None, 3])
def test_a_body_that_is_not_an_object(body: Any) -> None:
    for model in (SpeechRequest, ChatRequest):
        error = _refused(model, body)

        assert error["param"] is None
        assert "must be a JSON object" in error["message"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        # Quoted in the README.
        ({"speed": 9}, "Invalid value for 'speed': 9. It must be a number from 0.25 to 4.0."),
        ({"speed": "fast"}, "Invalid value for 'speed': 'fast'. It must be a number from 0.25"),
        ({"input": "  "}, "'input' must not be empty."),
        ({"input": "x" * 4097}, "'input' is 4097 characters long; at most 4096 are allowed."),
        ({"input": 42}, "Invalid type for 'input': expected a string, got int."),
        ({"input": _DROP}, "Missing required parameter: 'input'."),
        ({"voice": "bob"}, "Invalid value for 'voice': 'bob'. Supported voices are: alloy, ash,"),
        (
            {"voice": {"id": "voice_123"}},
            "Custom voices ('voice_123') are not available through the AI/ML API; use one of: "
            "alloy,",
        ),
        (
            {"response_format": "ogg"},
            "Invalid value for 'response_format': 'ogg'. Supported values are: mp3, opus, aac,",
        ),
        ({"model": "gpt-4o"}, "The model `gpt-4o` does not exist"),
    ],
)
def test_speech_messages(changes: dict[str, Any], message: str) -> None:
    assert _refused(SpeechRequest, _speech(**changes))["message"].startswith(message)


def test_values_are_quoted_short_however_deep_or_long() -> None:
    deep: Any = "x" * 10_000
    for _ in range(500):
        deep = [deep]

    for body in (_speech(response_format=deep), _speech(voice={"id": "v" * 10_000})):
        assert len(_refused(SpeechRequest, body)["message"]) < 300


@pytest.mark.parametrize(
    "changes",
    [
        {"input": "x" * MAX_INPUT_CHARS},
        {"input": "x"},
        {"speed": 0.25},
        {"speed": 4},
        {"speed": None},
        {"voice": None},
        {"instructions": "x" * MAX_INPUT_CHARS},
        {"instructions": None},
        {"stream_format": "sse"},
        {"some_future_field": {"ignored": True}},
        *({"model": model} for model in MODELS),
        *({"voice": voice} for voice in UPSTREAM_VOICES),
    ],
)
def test_valid_speech_bodies(changes: dict[str, Any]) -> None:
    speech = SpeechRequest.from_json(_speech(**changes))

    assert speech.input == _speech(**changes)["input"]


def test_null_is_the_default_and_the_model_is_the_catalogues() -> None:
    # (What reaches the upstream is tested end to end in test_speech.py.)
    body = {"model": "openai/tts-1", "input": "Hi", "voice": None, "speed": None}
    speech = SpeechRequest.from_json(body)

    assert speech.model is MODELS["tts-1"]
    assert (speech.voice, speech.response_format, speech.stream_format) == ("alloy", "mp3", "audio")
    assert (speech.instructions, speech.speed) == (None, None)


# -- the chat request -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        (_chat(model=_DROP), 400, "model", None),
        (_chat(model=4), 400, "model", None),
        (_chat(model="gpt-4o"), 404, "model", "model_not_found"),
        (_chat(model="openai/gpt-4o-audio-preview"), 404, "model", "model_not_found"),
        (_chat(messages=_DROP), 400, "messages", None),
        (_chat(messages="Hello"), 400, "messages", None),
        (_chat(messages=[]), 400, "messages", None),
        (_chat(messages=[{"role": "system", "content": "Be brief."}]), 400, "messages", None),
        (_chat(messages=[{"role": "assistant", "content": "Hi"}]), 400, "messages", None),
        (_chat(messages=["Hello"]), 400, "messages[0]", None),
        (_chat(messages=[{"content": "Hello"}]), 400, "messages[0].role", None),
        (_chat(messages=[{"role": 5, "content": "Hello"}]), 400, "messages[0].role", None),
        (_chat(messages=_user("")), 400, "messages", "empty_string"),
        (_chat(messages=_user("  \n ")), 400, "messages", "empty_string"),
        (_chat(messages=_user(None)), 400, "messages", "empty_string"),
        (_chat(messages=[{"role": "user"}]), 400, "messages", "empty_string"),
        (_chat(messages=_user([])), 400, "messages", "empty_string"),
        (
            _chat(messages=_user([{"type": "image_url", "image_url": {"url": "x"}}])),
            400,
            "messages",
            "empty_string",
        ),
        (_chat(messages=_user([{"type": "text", "text": " "}])), 400, "messages", "empty_string"),
        (_chat(messages=_user(5)), 400, "messages[0].content", None),
        (_chat(messages=_user(["Hello"])), 400, "messages[0].content[0]", None),
        (
            _chat(messages=_user([{"type": "text", "text": "a"}, {"type": "text", "text": 5}])),
            400,
            "messages[0].content[1].text",
            None,
        ),
        (
            _chat(messages=_user([{"type": "text"}])),
            400,
            "messages[0].content[0].text",
            None,
        ),
        (
            # Every message's shape is checked, not only the spoken one's.
            _chat(messages=[{"role": "system", "content": 5}, *USER]),
            400,
            "messages[0].content",
            None,
        ),
        (_chat(messages=_user("x" * 4097)), 400, "messages", "string_above_max_length"),
        (
            # Parts are joined with newlines; the joined text must fit.
            _chat(messages=_user([{"type": "text", "text": "x" * 2048}] * 2)),
            400,
            "messages",
            "string_above_max_length",
        ),
        (
            # Every user message must hold text; the last one is spoken.
            _chat(messages=[*USER, {"role": "user", "content": ""}]),
            400,
            "messages",
            "empty_string",
        ),
        (
            _chat(messages=[{"role": "user", "content": ""}, *USER]),
            400,
            "messages",
            "empty_string",
        ),
        (_chat(audio="coral"), 400, "audio", None),
        (_chat(audio={"voice": "bob", "format": "wav"}), 400, "audio.voice", None),
        (_chat(audio={"voice": "marin"}), 400, "audio.voice", None),
        (_chat(audio={"voice": {"id": "voice_123"}}), 400, "audio.voice", None),
        (_chat(audio={"voice": "coral", "format": "pcm"}), 400, "audio.format", None),
        (_chat(audio={"voice": "coral", "format": "ogg"}), 400, "audio.format", None),
        (_chat(audio={"voice": "coral", "format": None}), 400, "audio.format", None),
        (_chat(audio={"format": ["wav"]}), 400, "audio.format", None),
        (_chat(modalities=["text"]), 400, "modalities", None),
        (_chat(modalities=[]), 400, "modalities", None),
        (_chat(modalities="audio"), 400, "modalities", None),
        (_chat(modalities=["audio", "video"]), 400, "modalities", None),
        (_chat(stream="yes"), 400, "stream", None),
        (_chat(stream=1), 400, "stream", None),
        (_chat(stream=True, stream_options="usage"), 400, "stream_options", None),
        (
            _chat(stream=True, stream_options={"include_usage": "yes"}),
            400,
            "stream_options.include_usage",
            None,
        ),
        (_chat(n=2), 400, "n", None),
        (_chat(n=True), 400, "n", None),
        (_chat(n=1.0), 400, "n", None),
        (_chat(n={"a": 1}), 400, "n", None),
    ],
)
def test_invalid_chat_bodies(
    body: dict[str, Any], status: int, param: str, code: str | None
) -> None:
    error = _refused(ChatRequest, body)

    assert (error["status"], error["param"], error["code"]) == (status, param, code)


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"model": "gpt-4o"}, "only the speech models"),
        ({"modalities": ["text"]}, 'must include "audio"'),
        ({"audio": {"format": "pcm"}}, "Raw PCM is 'pcm16' here."),
        ({"messages": [{"role": "system", "content": "x"}]}, "no user message to speak"),
        ({"messages": _user(" ")}, "messages[0] has no text to speak"),
        ({"messages": _user("x" * 4097)}, "4097 characters long; at most 4096 can be spoken"),
        ({"n": 2}, "one answer per request; use 1"),
    ],
)
def test_chat_messages_say_why(changes: dict[str, Any], fragment: str) -> None:
    assert fragment in _refused(ChatRequest, _chat(**changes))["message"]


@pytest.mark.parametrize(
    ("messages", "spoken"),
    [
        # (The common cases are tested end to end, transcript and all, in test_chat.py.)
        (
            _user([{"kind": "no type at all"}, {"type": "text", "text": "Typed."}]),
            "Typed.",
        ),
        (
            [
                {"role": "user", "content": "Earlier question."},
                {"role": "assistant", "content": None, "tool_calls": []},
                {"role": "tool", "content": [{"type": "text", "text": ""}]},
                {"role": "user", "content": "The last one."},
            ],
            "The last one.",
        ),
        (_user("x" * MAX_INPUT_CHARS), "x" * MAX_INPUT_CHARS),
    ],
)
def test_the_last_user_message_is_spoken(messages: list[dict[str, Any]], spoken: str) -> None:
    assert ChatRequest.from_json(_chat(messages=messages)).speech.input == spoken


def test_a_chat_request_in_the_shims_terms() -> None:
    body = _chat(
        model="openai/tts-1",
        audio={"voice": "sage", "format": "pcm16"},
        stream=True,
        stream_options={"include_usage": True},
        n=1,
    )
    chat = ChatRequest.from_json(body)

    assert (chat.model_id, chat.format, chat.stream, chat.include_usage) == (
        "openai/tts-1",
        "pcm16",
        True,
        True,
    )
    speech = chat.speech
    assert (speech.model.upstream_id, speech.input, speech.voice, speech.response_format) == (
        "openai/tts-1",
        "Hello there.",
        "sage",
        "pcm",
    )
    assert chat.speech.stream_format == "audio"


@pytest.mark.parametrize(
    "changes",
    [
        {"audio": _DROP, "modalities": _DROP},
        {"audio": None, "modalities": None, "stream": None, "n": None},
        {"audio": {}},
        {"audio": {"voice": None}},
    ],
)
def test_omitted_chat_fields_take_the_documented_defaults(changes: dict[str, Any]) -> None:
    chat = ChatRequest.from_json(_chat(**changes))

    assert (chat.format, chat.stream, chat.include_usage) == ("wav", False, False)
    assert (chat.speech.voice, chat.speech.response_format) == ("alloy", "wav")


def test_stream_options_are_not_looked_at_unless_streaming() -> None:
    chat = ChatRequest.from_json(_chat(stream=False, stream_options={"include_usage": "x"}))

    assert chat.include_usage is False


# -- the served schema says what the models do ------------------------------------------


def _schema(name: str) -> Draft202012Validator:
    components = document()["components"]
    return Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": components})


def _accepted(model: type[SpeechRequest | ChatRequest], body: Any) -> bool:
    try:
        model.from_json(body)
    except APIError:
        return False
    return True


@pytest.mark.parametrize(
    "body",
    [
        SPEECH,
        _speech(input="   "),
        _speech(input="\t\u00a0"),
        _speech(input="x" * 4097),
        _speech(speed=True),
        _speech(speed=1),
        _speech(voice=None),
        _speech(voice={"id": "v"}),
        _speech(response_format=None),
        _speech(model="gpt-4o"),
        _speech(extra=1),
    ],
)
def test_the_speech_schema_accepts_exactly_what_the_model_does(body: dict[str, Any]) -> None:
    assert _schema("SpeechRequest").is_valid(body) == _accepted(SpeechRequest, body)


@pytest.mark.parametrize(
    "body",
    [
        # (Not ``n: 1.0``: JSON Schema counts it an integer, the strict model does not,
        # and no generator sends it as one.)
        CHAT,
        _chat(n=1),
        _chat(n=True),
        _chat(messages=[]),
        _chat(messages=[{"role": "system", "content": "x"}]),
        _chat(messages=_user("  ")),
        _chat(messages=_user("x" * 4097)),
        _chat(messages=_user([{"type": "text", "text": "Hi"}, {"type": "image_url"}])),
        _chat(messages=_user([{"type": "text", "text": " "}, {"type": "image_url"}])),
        _chat(messages=_user([{"type": "text", "text": 5}])),
        _chat(messages=_user(["Hi"])),
        _chat(messages=[*USER, {"role": "user", "content": None}]),
        _chat(messages=[{"role": "system", "content": 5}, *USER]),
        _chat(modalities=["text"]),
        _chat(modalities=["audio", "text"]),
        _chat(stream=None),
        _chat(stream=False, stream_options="anything"),
        _chat(stream=True, stream_options="usage"),
        _chat(stream=True, stream_options={"include_usage": True}),
        _chat(audio={"format": "pcm"}),
    ],
)
def test_the_chat_schema_accepts_exactly_what_the_model_does(body: dict[str, Any]) -> None:
    assert _schema("ChatRequest").is_valid(body) == _accepted(ChatRequest, body)


# -- through the app ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/audio/speech", _speech(speed=9), "speed"),
        ("/v1/chat/completions", _chat(n=2), "n"),
    ],
)
async def test_a_refused_body_is_openais_envelope_and_nothing_is_billed(
    shim: Any, upstream: Any, path: str, body: dict[str, Any], param: str
) -> None:
    response = await shim().post(path, json=body)

    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    assert response.headers["x-should-retry"] == "false"
    assert response.headers["x-request-id"].startswith("req_")
    assert generations(upstream) == 0


def test_any_other_pydantic_check_still_reads_as_openais_wording() -> None:
    with pytest.raises(ValidationError) as caught:
        TypeAdapter(dict[str, Literal["a"]]).validate_python({"k": "b"})

    error = api_error(caught.value)

    assert (error.status, error.param, error.code) == (400, "k", None)
    assert error.message == "Invalid value for 'k': 'b'. Input should be 'a'."
