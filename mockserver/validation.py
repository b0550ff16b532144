"""The ``POST /v1/tts`` request body, checked as the AI/ML OpenAPI documents describe it.

The three documents (``openai/tts-1``, ``openai/tts-1-hd``, ``openai/gpt-4o-mini-tts``)
share one schema that differs only in the ``model`` enum, so the endpoint accepts
their union. Messages follow the wording the real service uses ("Invalid enum value.
Expected ..., received ..."), each naming the field it is about.

Keys the schema does not list are accepted and ignored: the schema does not set
``additionalProperties: false``, and OpenAI SDK users can add keys with ``extra_body``.
Lengths are counted in Unicode code points, as JSON Schema's ``maxLength`` is.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FORMATS",
    "MAX_SPEED",
    "MAX_TEXT_LENGTH",
    "MIN_SPEED",
    "MODELS",
    "VOICES",
    "BodyValidationError",
    "Issue",
    "SpeechRequest",
    "parse_speech_request",
    "validate_speech_request",
]

MODELS = ("openai/tts-1", "openai/tts-1-hd", "openai/gpt-4o-mini-tts")
VOICES = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "nova",
    "onyx",
    "sage",
    "shimmer",
    "verse",
)
FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
MAX_TEXT_LENGTH = 4096
MIN_SPEED = 0.25
MAX_SPEED = 4.0


@dataclass(frozen=True)
class SpeechRequest:
    """A valid request body, defaults applied."""

    model: str
    text: str
    voice: str = "alloy"
    style: str | None = None
    response_format: str = "mp3"
    speed: float = 1.0
    stream: bool = False


@dataclass(frozen=True)
class Issue:
    """One problem with the body: where it is and what is wrong."""

    path: str
    message: str

    def __str__(self) -> str:
        return f'{self.message} at "{self.path}"' if self.path else self.message


class BodyValidationError(ValueError):
    """The body breaks the schema; ``message`` is the documented 400 text."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = tuple(issues)
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return "Body validation error! " + "; ".join(str(issue) for issue in self.issues)


def _js_type(value: object) -> str:
    """The type name a JavaScript validator would report for a JSON value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _js_repr(value: object) -> str:
    """``value`` written the way the real service's messages write received values."""
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        if value.is_integer() and abs(value) < 1e16:
            return str(int(value))
        return repr(value)
    return json.dumps(value)


def _enum(
    data: Mapping[str, Any], key: str, choices: tuple[str, ...], issues: list[Issue]
) -> str | None:
    value = data[key]
    if not isinstance(value, str):
        issues.append(Issue(key, f"Expected string, received {_js_type(value)}"))
        return None
    if value not in choices:
        expected = " | ".join(f"'{choice}'" for choice in choices)
        issues.append(
            Issue(key, f"Invalid enum value. Expected {expected}, received {_js_repr(value)}")
        )
        return None
    return value


def validate_speech_request(data: object) -> SpeechRequest:
    """Check a decoded JSON body; raise :class:`BodyValidationError` listing every issue."""
    if not isinstance(data, dict):
        raise BodyValidationError([Issue("", f"Expected object, received {_js_type(data)}")])
    issues: list[Issue] = []

    model: str | None = None
    if "model" not in data:
        issues.append(Issue("model", "Required"))
    else:
        model = _enum(data, "model", MODELS, issues)

    text: str | None = None
    if "text" not in data:
        issues.append(Issue("text", "Required"))
    elif not isinstance(data["text"], str):
        issues.append(Issue("text", f"Expected string, received {_js_type(data['text'])}"))
    elif len(data["text"]) < 1:
        issues.append(Issue("text", "String must contain at least 1 character(s), received 0"))
    elif len(data["text"]) > MAX_TEXT_LENGTH:
        issues.append(
            Issue(
                "text",
                f"String must contain at most {MAX_TEXT_LENGTH} character(s), "
                f"received {len(data['text'])}",
            )
        )
    else:
        text = data["text"]

    voice = _enum(data, "voice", VOICES, issues) if "voice" in data else "alloy"
    response_format = (
        _enum(data, "response_format", FORMATS, issues) if "response_format" in data else "mp3"
    )

    style: str | None = None
    if "style" in data:
        if isinstance(data["style"], str):
            style = data["style"]
        else:
            issues.append(Issue("style", f"Expected string, received {_js_type(data['style'])}"))

    speed = 1.0
    if "speed" in data:
        value = data["speed"]
        # bool is an int subclass in Python but not a number in JSON Schema.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            issues.append(Issue("speed", f"Expected number, received {_js_type(value)}"))
        elif value < MIN_SPEED:
            issues.append(
                Issue(
                    "speed",
                    f"Number must be greater than or equal to {MIN_SPEED}, "
                    f"received {_js_repr(value)}",
                )
            )
        elif value > MAX_SPEED:
            issues.append(
                Issue(
                    "speed",
                    f"Number must be less than or equal to {_js_repr(MAX_SPEED)}, "
                    f"received {_js_repr(value)}",
                )
            )
        else:
            speed = float(value)

    if "stream" in data:
        value = data["stream"]
        if not isinstance(value, bool):
            issues.append(Issue("stream", f"Expected boolean, received {_js_type(value)}"))
        elif value:
            issues.append(Issue("stream", "Invalid literal value, expected false, received true"))

    if issues:
        raise BodyValidationError(issues)
    # No issues means every field was set.
    assert model is not None
    assert text is not None
    assert voice is not None
    assert response_format is not None
    return SpeechRequest(
        model=model,
        text=text,
        voice=voice,
        style=style,
        response_format=response_format,
        speed=speed,
    )


def _reject_constant(name: str) -> float:
    # Python's json module accepts NaN and Infinity; JSON (and the real service) does not.
    raise ValueError(f"{name} is not valid JSON")


def parse_speech_request(
    body: bytes, content_type: str | None = "application/json"
) -> SpeechRequest:
    """Decode and check a raw request body.

    A body not sent as JSON is read as an empty object, as the JSON body parser in
    front of the real service does, so it fails with "Required" issues.
    """
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        return validate_speech_request({})
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BodyValidationError(
            [Issue("", f"Expected object, received invalid JSON ({exc})")]
        ) from None
    return validate_speech_request(data)
