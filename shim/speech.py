"""``POST /v1/audio/speech``: the request, its translation to the AI/ML body, the handler.

The OpenAI SDK validates nothing, so every rule OpenAI's server applies is checked
here, before any billed upstream call, and answered with OpenAI's envelope.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from shim.bodies import read_json
from shim.catalog import FORMATS, UPSTREAM_VOICES, SpeechModel, resolve_model, unknown_model
from shim.errors import invalid, shown, type_name, wrong_type
from shim.responses import AudioResponse, speech_events
from shim.state import state_of
from shim.synthesis import synthesize

__all__ = [
    "MAX_INPUT_CHARS",
    "SpeechRequest",
    "create_speech",
    "require_model",
    "require_text",
    "require_voice",
]

MAX_INPUT_CHARS = 4096
_STREAM_FORMATS = ("audio", "sse")
_VOICE_LIST = ", ".join(UPSTREAM_VOICES)
_FORMAT_LIST = ", ".join(FORMATS)


def require_model(value: Any) -> SpeechModel:
    if value is None:
        raise invalid("model", "You must provide a model parameter.")
    if not isinstance(value, str):
        raise wrong_type("model", "a string", value)
    model = resolve_model(value)
    if model is None:
        raise unknown_model(value)
    return model


def require_text(value: Any, param: str) -> str:
    if value is None:
        raise invalid(param, f"Missing required parameter: '{param}'.")
    if not isinstance(value, str):
        raise wrong_type(param, "a string", value)
    if not value.strip():
        raise invalid(param, f"'{param}' must not be empty.", code="empty_string")
    if len(value) > MAX_INPUT_CHARS:
        raise invalid(
            param,
            f"'{param}' is {len(value)} characters long; at most {MAX_INPUT_CHARS} are allowed.",
            code="string_above_max_length",
        )
    return value


def require_voice(value: Any, param: str = "voice") -> str:
    if value is None:
        return "alloy"  # the upstream's documented default
    if isinstance(value, dict) and set(value) == {"id"}:
        raise invalid(
            param,
            f"Custom voices ({shown(value['id'])}) are not available through the AI/ML API; "
            f"use one of: {_VOICE_LIST}.",
        )
    if not isinstance(value, str) or value not in UPSTREAM_VOICES:
        raise invalid(
            param,
            f"Invalid value for '{param}': {shown(value)}. Supported voices are: {_VOICE_LIST}.",
        )
    return value


@dataclass(frozen=True)
class SpeechRequest:
    """A validated speech request, in the shim's terms."""

    model: SpeechModel
    input: str
    voice: str
    response_format: str
    stream_format: str
    instructions: str | None = None
    speed: float | None = None

    @classmethod
    def from_json(cls, body: Any) -> SpeechRequest:
        """Validate a decoded JSON body; unknown keys are ignored, as OpenAI does."""
        if not isinstance(body, dict):
            raise invalid(None, f"The request body must be a JSON object, not {type_name(body)}.")
        model = require_model(body.get("model"))
        text = require_text(body.get("input"), "input")
        voice = require_voice(body.get("voice"))

        instructions = body.get("instructions")
        if instructions is not None:
            if not isinstance(instructions, str):
                raise wrong_type("instructions", "a string", instructions)
            if len(instructions) > MAX_INPUT_CHARS:
                raise invalid(
                    "instructions",
                    f"'instructions' may be at most {MAX_INPUT_CHARS} characters long.",
                    code="string_above_max_length",
                )

        response_format = body.get("response_format", "mp3")
        if not isinstance(response_format, str) or response_format not in FORMATS:
            raise invalid(
                "response_format",
                f"Invalid value for 'response_format': {shown(response_format)}. "
                f"Supported values are: {_FORMAT_LIST}.",
            )

        speed = body.get("speed")
        if speed is not None:
            valid_number = isinstance(speed, (int, float)) and not isinstance(speed, bool)
            if not valid_number or not math.isfinite(speed) or not 0.25 <= speed <= 4.0:
                raise invalid(
                    "speed",
                    f"Invalid value for 'speed': {shown(speed)}. "
                    "It must be a number from 0.25 to 4.0.",
                )
            speed = float(speed)

        stream_format = body.get("stream_format", "audio")
        if not isinstance(stream_format, str) or stream_format not in _STREAM_FORMATS:
            raise invalid(
                "stream_format",
                f"Invalid value for 'stream_format': {shown(stream_format)}. "
                "Supported values are: audio, sse.",
            )
        return cls(model, text, voice, response_format, stream_format, instructions, speed)

    def upstream_body(self) -> dict[str, Any]:
        """The AI/ML ``POST /v1/tts`` body: ``input`` -> ``text``, ``instructions`` ->
        ``style``; optional fields are sent only when the client set them."""
        body: dict[str, Any] = {
            "model": self.model.upstream_id,
            "text": self.input,
            "voice": self.voice,
            "response_format": self.response_format,
        }
        if self.instructions is not None:
            body["style"] = self.instructions
        if self.speed is not None:
            body["speed"] = self.speed
        return body


async def create_speech(request: Request) -> Response:
    """``POST /v1/audio/speech``: OpenAI's request in, OpenAI's audio stream out."""
    state = state_of(request)
    speech = SpeechRequest.from_json(await read_json(request, state.config.max_body_bytes))
    key = state.keys.upstream_key(request.headers)
    audio = await synthesize(
        state.upstream,
        speech.upstream_body(),
        speech.response_format,
        key,
        state.config.deadline,
        capacity=state.capacity,
    )
    headers = {"x-request-id": audio.request_id} if audio.request_id else {}
    if speech.stream_format == "sse":
        # Speech is billed per character, so usage counts characters (see README).
        usage = {"input_tokens": len(speech.input), "output_tokens": 0}
        usage["total_tokens"] = usage["input_tokens"]
        events = speech_events(audio, usage)
        return AudioResponse(events, "text/event-stream", headers, on_close=audio.aclose)
    content_type = FORMATS[speech.response_format].content_type
    return AudioResponse(audio, content_type, headers, on_close=audio.aclose)
