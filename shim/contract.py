"""The request contract: typed models of the speech and chat bodies.

One source for both halves of the contract: :meth:`SpeechRequest.from_json` and
:meth:`ChatRequest.from_json` validate with these models, and ``/openapi.json``
(:mod:`shim.openapi`) serves their JSON Schema. Where JSON Schema cannot be derived
from a type (a rule about *which* message is the user's), the rule and its schema are
written side by side below, so a change to one shows in the other.

The OpenAI SDK validates nothing, so every rule OpenAI's server applies is checked here,
before any billed upstream call. Types are strict (``1.0`` is not an integer, ``true``
is not a number); unknown keys are ignored, as OpenAI ignores them. A failure becomes
OpenAI's envelope through :func:`api_error`, which names the field in ``param`` the way
OpenAI does (``messages[0].content[1].text``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    GetCoreSchemaHandler,
    StrictBool,
    Tag,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    WrapValidator,
)
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import PydanticCustomError, core_schema

from shim import errors
from shim.catalog import FORMATS, MODELS, UPSTREAM_VOICES, SpeechModel, resolve_model, unknown_model
from shim.config import MAX_INPUT_CHARS
from shim.errors import APIError, shown, type_name

__all__ = [
    "CHAT_FORMATS",
    "DEFAULT_FORMAT",
    "MAX_INPUT_CHARS",
    "AudioOptions",
    "ChatRequest",
    "ContentPart",
    "Message",
    "SchemaGenerator",
    "SpeechRequest",
    "StreamOptions",
    "TextPart",
    "api_error",
    "param_of",
]

#: Chat's audio formats and the speech format each is made as (``pcm16`` is raw PCM).
CHAT_FORMATS: dict[str, str] = {
    "wav": "wav",
    "aac": "aac",
    "mp3": "mp3",
    "flac": "flac",
    "opus": "opus",
    "pcm16": "pcm",
}
DEFAULT_FORMAT = "wav"
DEFAULT_VOICE = "alloy"  # the upstream's documented default

# JSON Schema for "holds something other than whitespace": a character outside exactly
# the set ``str.isspace`` calls whitespace, spelt out, because what ``\S`` means differs
# between regex dialects (JavaScript's leaves out U+001C-001F and U+0085, and a tool
# reading the schema may read it so), and the schema and ``_not_blank`` must accept the
# same strings.
_NOT_BLANK = (
    "[^\t\n\u000b\f\r\u001c-\u001f \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
)
_VOICE_LIST = ", ".join(UPSTREAM_VOICES)


# -- reusable field types -----------------------------------------------------------


def _explained(hint: str) -> WrapValidator:
    """Any failure of the wrapped type becomes one ``invalid_value`` error with ``hint``
    (what is allowed), so ``speed: "fast"`` and ``speed: 9`` read alike."""

    def validate(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise PydanticCustomError("invalid_value", hint) from None

    return WrapValidator(validate)


def _default_if_none(default: Any, schema_type: Any) -> BeforeValidator:
    """``null`` means "the default" (OpenAI accepts ``null`` for optional fields)."""
    return BeforeValidator(
        lambda value: default if value is None else value, json_schema_input_type=schema_type
    )


@dataclass(frozen=True)
class _OneOf:
    """A string from ``values``; the schema's ``enum`` is ``values``, in order."""

    values: Sequence[str]

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.literal_schema(list(self.values))


def _not_blank(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("empty_string", "'{param}' must not be empty.")
    return value


def input_limit(info: ValidationInfo) -> int:
    """The longest text to speak: the validation context's ``max_chars``, if given."""
    limit: int = (info.context or {}).get("max_chars", MAX_INPUT_CHARS)
    return limit


def _within_limit(value: str, info: ValidationInfo) -> str:
    limit = input_limit(info)
    if len(value) > limit:
        raise PydanticCustomError(
            "string_above_max_length",
            f"'{{param}}' is {len(value)} characters long; at most {limit} are allowed.",
        )
    return value


def _known_model(value: Any) -> str:
    if not isinstance(value, str):
        raise PydanticCustomError("string_type", "a string")
    if resolve_model(value) is None:
        raise PydanticCustomError("model_not_found", "unknown model")
    return value


@dataclass(frozen=True)
class _Served:
    """A served model id (any other string is a 404); the schema's ``enum`` is the
    catalogue. ``resolve``: validate to the catalogue's :class:`SpeechModel`."""

    resolve: bool = False

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        check = (lambda value: MODELS[_known_model(value)]) if self.resolve else _known_model
        return core_schema.no_info_plain_validator_function(
            check, json_schema_input_schema=core_schema.literal_schema(list(MODELS))
        )


def _no_custom_voice(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    if isinstance(value, dict) and set(value) == {"id"}:
        raise PydanticCustomError(
            "custom_voice",
            f"Custom voices ({shown(value['id'])}) are not available through the AI/ML API; "
            f"use one of: {_VOICE_LIST}.",
        )
    return handler(value)


_Voice = Annotated[
    str,
    _OneOf(UPSTREAM_VOICES),
    _explained(f"Supported voices are: {_VOICE_LIST}."),
    WrapValidator(_no_custom_voice),
]
#: A voice; ``null`` or absent is ``alloy``.
_VoiceOrDefault = Annotated[_Voice, _default_if_none(DEFAULT_VOICE, _Voice | None)]
_Text = Annotated[
    str,
    Field(json_schema_extra={"pattern": _NOT_BLANK, "maxLength": MAX_INPUT_CHARS}),
    AfterValidator(_not_blank),
    AfterValidator(_within_limit),
]


class _Body(BaseModel):
    """Strict JSON types; unknown keys ignored; field docstrings become descriptions."""

    model_config = ConfigDict(
        strict=True, extra="ignore", frozen=True, use_attribute_docstrings=True
    )


_Request = TypeVar("_Request", bound="_Body")


def _from_json(cls: type[_Request], body: Any, max_chars: int) -> _Request:
    try:
        return cls.model_validate(body, context={"max_chars": max_chars})
    except ValidationError as exc:
        raise api_error(exc) from None


# -- /v1/audio/speech ---------------------------------------------------------------


class SpeechRequest(_Body):
    """A validated ``POST /v1/audio/speech`` body, in the shim's terms."""

    model: Annotated[SpeechModel, _Served(resolve=True)]
    """``tts-1``, ``tts-1-hd`` or ``gpt-4o-mini-tts``, bare or with ``openai/``."""
    input: _Text
    """The text to speak: at most 4096 characters, not blank."""
    voice: _VoiceOrDefault = DEFAULT_VOICE
    """One of the AI/ML API's voices; ``null`` is ``alloy``."""
    instructions: Annotated[str, Field(max_length=MAX_INPUT_CHARS)] | None = None
    """How to speak (sent upstream as ``style``), at most 4096 characters."""
    response_format: Annotated[
        str, _OneOf(list(FORMATS)), _explained(f"Supported values are: {', '.join(FORMATS)}.")
    ] = "mp3"
    """The audio format."""
    speed: (
        Annotated[
            float,
            Field(ge=0.25, le=4.0, allow_inf_nan=False),
            _explained("It must be a number from 0.25 to 4.0."),
        ]
        | None
    ) = None
    """Sent upstream only when given."""
    stream_format: Annotated[
        str, _OneOf(("audio", "sse")), _explained("Supported values are: audio, sse.")
    ] = "audio"
    """``audio``: the audio bytes; ``sse``: ``speech.audio.delta`` events."""

    @classmethod
    def from_json(cls, body: Any, max_chars: int = MAX_INPUT_CHARS) -> SpeechRequest:
        """Validate a decoded JSON body, or raise the :class:`APIError` OpenAI would send;
        ``input`` may be at most ``max_chars`` long."""
        return _from_json(cls, body, max_chars)


# -- /v1/chat/completions -----------------------------------------------------------


class TextPart(_Body):
    """A ``{"type": "text", "text": ...}`` content part: its text is spoken."""

    type: Literal["text"]
    text: str


#: Any other content part (image, audio, file, refusal): accepted, not spoken.
_OtherPart = Annotated[
    dict[str, Any],
    WithJsonSchema(
        {
            "type": "object",
            "description": "A part of another type (image, audio, file): skipped.",
            "not": {"required": ["type"], "properties": {"type": {"const": "text"}}},
        }
    ),
]


def _part_kind(value: Any) -> str | None:
    if not isinstance(value, dict):
        return None
    return "text-part" if value.get("type") == "text" else "other-part"


# Branch tags carry a hyphen, so :func:`param_of` can tell them from field names.
ContentPart = Annotated[
    Annotated[TextPart, Tag("text-part")] | Annotated[_OtherPart, Tag("other-part")],
    Discriminator(_part_kind, custom_error_type="invalid_type", custom_error_message="an object"),
]


def _content_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "string-content"
    return "part-list" if isinstance(value, list) else None


_Content = Annotated[
    Annotated[str, Tag("string-content")] | Annotated[list[ContentPart], Tag("part-list")],
    Discriminator(
        _content_kind,
        custom_error_type="invalid_type",
        custom_error_message="a string or an array of content parts",
    ),
]

# What a user message must hold: text to speak. The joined length of several text
# parts is checked too (``_speakable``), which JSON Schema cannot state.
_SPEAKABLE_SCHEMA: dict[str, Any] = {
    "if": {"required": ["role"], "properties": {"role": {"const": "user"}}},
    "then": {
        "required": ["content"],
        "properties": {
            "content": {
                "anyOf": [
                    {"type": "string", "pattern": _NOT_BLANK, "maxLength": MAX_INPUT_CHARS},
                    {
                        "type": "array",
                        "contains": {
                            "type": "object",
                            "required": ["type", "text"],
                            "properties": {
                                "type": {"const": "text"},
                                "text": {"type": "string", "pattern": _NOT_BLANK},
                            },
                        },
                    },
                ]
            }
        },
    },
}


class Message(_Body):
    """A chat message. Every ``user`` message must hold text (at most 4096 characters:
    a string, or ``text`` parts joined with newlines); the last one is spoken. Other
    roles are accepted and ignored."""

    model_config = ConfigDict(json_schema_extra=_SPEAKABLE_SCHEMA)

    role: str
    content: _Content | None = None

    @property
    def text(self) -> str:
        """The string content, or the ``text`` parts joined with ``"\\n"``."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        return "\n".join(p.text for p in self.content if isinstance(p, TextPart) and p.text)


def _speakable(messages: list[Message], info: ValidationInfo) -> list[Message]:
    users = [(index, m) for index, m in enumerate(messages) if m.role == "user"]
    if not users:
        raise PydanticCustomError(
            "no_user_message",
            "There is no user message to speak: this shim speaks the text of the last "
            "message with role 'user'.",
        )
    for index, message in users:
        text = message.text
        if not text.strip():
            raise PydanticCustomError(
                "empty_string",
                f"The user message messages[{index}] has no text to speak (the last user "
                "message is spoken, and each must hold text).",
            )
        if len(text) > input_limit(info):
            raise PydanticCustomError(
                "string_above_max_length",
                f"The user message messages[{index}] is {len(text)} characters long; at "
                f"most {input_limit(info)} can be spoken.",
            )
    return messages


_USER_MESSAGE = {"required": ["role"], "properties": {"role": {"const": "user"}}}


def _require_audio(modalities: list[str]) -> list[str]:
    if "audio" not in modalities:
        raise PydanticCustomError(
            "audio_output_required",
            "This shim serves only speech models, which answer with audio: 'modalities' "
            'must include "audio" (or be left out).',
        )
    return modalities


def _chat_format(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    try:
        return handler(value)
    except ValidationError:
        hint = "Raw PCM is 'pcm16' here. " if value == "pcm" else ""
        raise PydanticCustomError(
            "invalid_value", f"{hint}Supported values are: {', '.join(CHAT_FORMATS)}."
        ) from None


class AudioOptions(_Body):
    """Chat's ``audio`` object."""

    voice: _VoiceOrDefault = DEFAULT_VOICE
    """One of the AI/ML API's voices; ``null`` is ``alloy``."""
    format: Annotated[
        str,
        _OneOf(list(CHAT_FORMATS)),
        WrapValidator(_chat_format),
    ] = DEFAULT_FORMAT
    """The audio format (raw PCM is ``pcm16`` here)."""


class StreamOptions(_Body):
    """Chat's ``stream_options``; read only when ``stream`` is true."""

    include_usage: StrictBool = False
    """Send a last chunk with ``usage``."""


def _only_when_streaming(
    value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
) -> Any:
    if not info.data.get("stream"):
        return None  # not looked at, as OpenAI's SDKs may send it either way
    return handler(value)


def _stream_options_rule(schema: dict[str, Any]) -> None:
    """``stream_options`` has a shape only when ``stream`` is true."""
    options = StreamOptions.model_json_schema(schema_generator=SchemaGenerator)
    schema["if"] = {"required": ["stream"], "properties": {"stream": {"const": True}}}
    schema["then"] = {"properties": {"stream_options": {"anyOf": [options, {"type": "null"}]}}}


class ChatRequest(_Body):
    """A validated ``POST /v1/chat/completions`` body: what to speak, and how to answer.

    Fields the shim does not use (sampling, tools, ``response_format``...) are ignored.
    """

    model_config = ConfigDict(json_schema_extra=_stream_options_rule)

    model: Annotated[str, _Served()]
    """A speech model; echoed in the answer as spelled."""
    messages: Annotated[
        list[Message],
        AfterValidator(_speakable),
        Field(json_schema_extra={"contains": _USER_MESSAGE}),
    ]
    """The conversation; the last ``user`` message is spoken."""
    modalities: (
        Annotated[
            list[Annotated[str, _OneOf(("text", "audio"))]],
            _explained('Supported values are arrays of "text" and "audio".'),
            AfterValidator(_require_audio),
            Field(json_schema_extra={"contains": {"const": "audio"}}),
        ]
        | None
    ) = None
    """Must include ``audio``; left out, audio is implied."""
    audio: AudioOptions | None = None
    """Voice and format; left out, ``alloy`` and ``wav``."""
    stream: Annotated[StrictBool, _default_if_none(False, bool | None)] = False
    """Answer with ``chat.completion.chunk`` events."""
    stream_options: Annotated[
        StreamOptions | None,
        WrapValidator(_only_when_streaming),
        WithJsonSchema({"description": "Read only when ``stream`` is true (see ``then``)."}),
    ] = None
    n: (
        Annotated[
            int,
            Field(ge=1, le=1),
            _explained("This shim makes one answer per request; use 1."),
        ]
        | None
    ) = None
    """Only 1: one answer is made."""

    @classmethod
    def from_json(cls, body: Any, max_chars: int = MAX_INPUT_CHARS) -> ChatRequest:
        """Validate a decoded JSON body, or raise the :class:`APIError` OpenAI would send;
        the spoken text may be at most ``max_chars`` long."""
        return _from_json(cls, body, max_chars)

    @property
    def model_id(self) -> str:
        """The model as the client spelled it."""
        return self.model

    @property
    def format(self) -> str:
        """The chat format name (``pcm16``, not ``pcm``)."""
        return self.audio.format if self.audio else DEFAULT_FORMAT

    @property
    def include_usage(self) -> bool:
        return self.stream and self.stream_options is not None and self.stream_options.include_usage

    @cached_property
    def speech(self) -> SpeechRequest:
        """The speech request that says the last user message."""
        spoken = next(m for m in reversed(self.messages) if m.role == "user")
        # Valid by construction (``_speakable`` checked the text), and validating is
        # quicker than ``model_construct``.
        return SpeechRequest.model_validate(
            context={"max_chars": len(spoken.text)},
            obj={
                "model": self.model,
                "input": spoken.text,
                "voice": self.audio.voice if self.audio else DEFAULT_VOICE,
                "response_format": CHAT_FORMATS[self.format],
            },
        )


# -- validation errors, as OpenAI words them ----------------------------------------

# pydantic's type errors -> what the field expects.
_EXPECTED = {
    "string_type": "a string",
    "bool_type": "a boolean",
    "int_type": "an integer",
    "float_type": "a number",
    "list_type": "an array",
    "dict_type": "an object",
    "model_type": "an object",
}
# This module's own errors, whose messages say everything (``{param}`` is filled in).
_OWN = frozenset(
    {
        "empty_string",
        "string_above_max_length",
        "custom_voice",
        "no_user_message",
        "audio_output_required",
    }
)
# pydantic's or this module's error type -> the error with OpenAI's ``code`` for it.
_BY_KIND: dict[str, Callable[[str | None, str], APIError]] = {
    "string_too_long": errors.string_above_max_length,
    "string_above_max_length": errors.string_above_max_length,
    "empty_string": errors.empty_string,
}


def param_of(loc: Sequence[int | str]) -> str | None:
    """OpenAI's ``param`` for a pydantic error location: ``('messages', 0, 'content',
    1, 'text')`` -> ``messages[0].content[1].text``; ``()`` (the body) -> ``None``.

    Union branch tags in ``loc`` are skipped: they are not identifiers (this module's
    tags have a hyphen, pydantic's own look like ``function-after[...]``), while field
    names are.
    """
    param = ""
    for item in loc:
        if isinstance(item, int):
            param += f"[{item}]"
        elif item.isidentifier():
            param += f".{item}" if param else item
    return param or None


def api_error(error: ValidationError) -> APIError:
    """The envelope for a failed validation: its first error (fields are checked in
    the order a reader meets them), with OpenAI's ``param``, message and ``code``.
    An unknown model is OpenAI's 404 ``model_not_found``."""
    first = error.errors(include_url=False)[0]
    kind: str = first["type"]
    value = first["input"]
    param = param_of(first["loc"])
    name = param or "body"
    if kind == "model_not_found":
        return unknown_model(value, name)
    if param is None and kind in _EXPECTED:
        message = f"The request body must be a JSON object, not {type_name(value)}."
    elif kind == "missing":
        message = f"Missing required parameter: '{name}'."
    elif kind in _EXPECTED or kind == "invalid_type":
        expected = _EXPECTED.get(kind) or first["msg"]
        message = f"Invalid type for '{name}': expected {expected}, got {type_name(value)}."
    elif kind == "string_too_long":
        limit = first.get("ctx", {}).get("max_length")
        message = f"'{name}' is {len(value)} characters long; at most {limit} are allowed."
    elif kind in _OWN:
        message = first["msg"].replace("{param}", name)
    else:  # ``invalid_value`` (the message is a hint), or any other pydantic check
        hint = first["msg"] if first["msg"].endswith(".") else f"{first['msg']}."
        message = f"Invalid value for '{name}': {shown(value)}. {hint}"
    return _BY_KIND.get(kind, errors.invalid)(param, message)


class SchemaGenerator(GenerateJsonSchema):
    """JSON Schema as :mod:`shim.openapi` serves it: no generated ``title`` on every
    property (the names say it)."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False
