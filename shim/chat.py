"""``POST /v1/chat/completions`` for the speech models, in OpenAI's audio-output shape.

Much OpenAI SDK code only knows the chat call, so the shim accepts it for the
speech models: the last user message is spoken through the same path as
``/v1/audio/speech`` (same validators, same :func:`~shim.synthesis.synthesize`), and
the audio comes back base64 in ``choices[0].message.audio``, or as
``chat.completion.chunk`` events when ``stream`` is true.

Choices made where OpenAI documents nothing (see README, "Chat completions"):

* The spoken text is the last ``user`` message: its string content, or its ``text``
  parts joined with a newline (other part types are skipped). Earlier messages,
  ``system``/``developer`` messages, sampling fields, tools and the like are accepted
  and ignored. ``n`` other than 1 is refused, because only one answer is made.
* Without ``audio`` the voice is ``alloy`` and the format ``wav`` (a file every player
  opens); without ``modalities`` audio is implied. ``modalities`` that leave out
  ``"audio"`` are refused: this shim cannot write text answers.
* Usage counts characters, as ``/v1/audio/speech`` does: speech is billed per input
  character, so ``prompt_tokens`` is the length of the spoken text and the audio adds
  no tokens (``completion_tokens`` = 0).
* Streamed ``delta.audio.data`` fragments each decode on their own, and their
  concatenation decodes too: every fragment but the last carries a multiple of three
  bytes, so no fragment has ``=`` padding in the middle of the joined string.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from shim.bodies import read_json
from shim.errors import APIError, invalid, shown, type_name, wrong_type
from shim.responses import AudioResponse, sse_event
from shim.speech import MAX_INPUT_CHARS, SpeechRequest, require_model, require_voice
from shim.state import state_of
from shim.synthesis import synthesize

__all__ = [
    "AUDIO_LIFETIME",
    "CHAT_FORMATS",
    "DEFAULT_FORMAT",
    "ChatRequest",
    "create_chat_completion",
    "spoken_text",
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
#: Seconds until ``audio.expires_at``. Nothing is stored, so this is nominal.
AUDIO_LIFETIME = 3600
_MODALITIES = ("text", "audio")
_FORMAT_LIST = ", ".join(CHAT_FORMATS)


# -- the request ------------------------------------------------------------------


def spoken_text(messages: Any) -> str:
    """The text to speak: the last ``user`` message's string content, or its
    ``text`` parts joined with ``"\\n"``."""
    if messages is None:
        raise invalid("messages", "Missing required parameter: 'messages'.")
    if not isinstance(messages, list):
        raise wrong_type("messages", "an array", messages)
    last: tuple[int, dict[str, Any]] | None = None
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise invalid(
                f"messages[{index}]",
                f"Invalid value for 'messages[{index}]': each message must be an object "
                "with a string 'role'.",
            )
        if message["role"] == "user":
            last = (index, message)
    if last is None:
        raise invalid(
            "messages",
            "There is no user message to speak: this shim speaks the text of the last "
            "message with role 'user'.",
        )
    index, message = last
    text = _content_text(message.get("content"), f"messages[{index}].content")
    if not text.strip():
        raise invalid(
            "messages",
            f"The last user message (messages[{index}]) has no text to speak.",
            code="empty_string",
        )
    if len(text) > MAX_INPUT_CHARS:
        raise invalid(
            "messages",
            f"The last user message is {len(text)} characters long; at most "
            f"{MAX_INPUT_CHARS} can be spoken.",
            code="string_above_max_length",
        )
    return text


def _content_text(content: Any, param: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise wrong_type(param, "a string or an array of content parts", content)
    texts: list[str] = []
    for number, part in enumerate(content):
        if not isinstance(part, dict):
            raise invalid(
                f"{param}[{number}]", f"Invalid value for '{param}[{number}]': expected an object."
            )
        if part.get("type") != "text":
            continue  # images, audio and files cannot be spoken
        text = part.get("text")
        if not isinstance(text, str):
            raise wrong_type(f"{param}[{number}].text", "a string", text)
        if text:
            texts.append(text)
    return "\n".join(texts)


def _require_audio_output(modalities: Any) -> None:
    if modalities is None:
        return
    if not isinstance(modalities, list) or not all(m in _MODALITIES for m in modalities):
        raise invalid(
            "modalities",
            f"Invalid value for 'modalities': {shown(modalities)}. Supported values are arrays "
            'of "text" and "audio".',
        )
    if "audio" not in modalities:
        raise invalid(
            "modalities",
            "This shim serves only speech models, which answer with audio: 'modalities' "
            'must include "audio" (or be left out).',
        )


def _audio_options(audio: Any) -> tuple[str, str]:
    """``(voice, chat format)`` from the ``audio`` object; either may be left out."""
    if audio is None:
        audio = {}
    if not isinstance(audio, dict):
        raise wrong_type("audio", "an object with 'voice' and 'format'", audio)
    voice = require_voice(audio.get("voice"), "audio.voice")
    fmt = audio.get("format", DEFAULT_FORMAT)
    if not isinstance(fmt, str) or fmt not in CHAT_FORMATS:
        hint = " (raw PCM is 'pcm16' here)" if fmt == "pcm" else ""
        raise invalid(
            "audio.format",
            f"Invalid value for 'audio.format': {shown(fmt)}{hint}. Supported values are: "
            f"{_FORMAT_LIST}.",
        )
    return voice, fmt


def _stream_options(body: dict[str, Any]) -> tuple[bool, bool]:
    """``(stream, include_usage)``; ``stream_options`` only matter when streaming."""
    stream = body.get("stream")
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise wrong_type("stream", "a boolean", stream)
    options = body.get("stream_options")
    if not stream or options is None:
        return stream, False
    if not isinstance(options, dict):
        raise wrong_type("stream_options", "an object", options)
    include_usage = options.get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise wrong_type("stream_options.include_usage", "a boolean", include_usage)
    return stream, include_usage


def _require_one_choice(n: Any) -> None:
    if n is not None and (isinstance(n, bool) or n != 1):
        raise invalid(
            "n",
            f"Invalid value for 'n': {shown(n)}. This shim makes one answer per request; use 1.",
        )


@dataclass(frozen=True)
class ChatRequest:
    """A validated chat request: what to speak, and how to answer."""

    model_id: str  # as the client spelled it; echoed in the answer
    speech: SpeechRequest
    format: str  # the chat format name (``pcm16``, not ``pcm``)
    stream: bool
    include_usage: bool

    @classmethod
    def from_json(cls, body: Any) -> ChatRequest:
        """Validate a decoded JSON body; fields the shim does not use are ignored."""
        if not isinstance(body, dict):
            raise invalid(None, f"The request body must be a JSON object, not {type_name(body)}.")
        model = require_model(body.get("model"))
        text = spoken_text(body.get("messages"))
        _require_audio_output(body.get("modalities"))
        voice, fmt = _audio_options(body.get("audio"))
        stream, include_usage = _stream_options(body)
        _require_one_choice(body.get("n"))
        speech = SpeechRequest(model, text, voice, CHAT_FORMATS[fmt], "audio")
        return cls(body["model"], speech, fmt, stream, include_usage)


# -- the answer -------------------------------------------------------------------


def _usage(text: str) -> dict[str, Any]:
    """Characters, as ``/v1/audio/speech`` counts them: the AI/ML API bills speech
    per input character, and the audio itself costs no extra."""
    characters = len(text)
    return {
        "prompt_tokens": characters,
        "completion_tokens": 0,
        "total_tokens": characters,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


@dataclass
class _Answer:
    """The ids and times one answer carries, in its whole or its streamed form."""

    chat: ChatRequest
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    audio_id: str = field(default_factory=lambda: f"audio_{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def expires_at(self) -> int:
        return self.created + AUDIO_LIFETIME

    def completion(self, audio: bytes) -> dict[str, Any]:
        """The ``chat.completion`` object for the whole of ``audio``."""
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None,
            "refusal": None,
            "annotations": [],
            "audio": {
                "id": self.audio_id,
                "expires_at": self.expires_at,
                "data": base64.b64encode(audio).decode("ascii"),
                "transcript": self.chat.speech.input,
            },
        }
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.chat.model_id,
            "choices": [
                {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}
            ],
            "usage": _usage(self.chat.speech.input),
            "system_fingerprint": None,
        }

    async def events(self, audio: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        """The ``chat.completion.chunk`` events, audio sent as it arrives."""
        yield self._chunk({"role": "assistant", "content": None, "refusal": None})
        yield self._chunk({"audio": {"id": self.audio_id, "transcript": self.chat.speech.input}})
        try:
            async for data in _whole_triplets(audio):
                yield self._chunk({"audio": {"data": base64.b64encode(data).decode("ascii")}})
        except APIError as exc:
            # Tell the SDK why (it raises on an ``error`` event) before the cut.
            yield sse_event({"error": exc.body()["error"]})
            raise
        yield self._chunk({"audio": {"expires_at": self.expires_at}})
        yield self._chunk({}, finish_reason="stop")
        if self.chat.include_usage:
            yield sse_event(
                {**self._head(), "choices": [], "usage": _usage(self.chat.speech.input)}
            )
        yield b"data: [DONE]\n\n"

    def _head(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.chat.model_id,
            "system_fingerprint": None,
        }

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        chunk = {
            **self._head(),
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if self.chat.include_usage:
            chunk["usage"] = None  # as OpenAI does: null on every chunk but the last
        return sse_event(chunk)


async def _whole_triplets(audio: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """Re-cut ``audio`` so every piece but the last is a multiple of 3 bytes long: its
    base64 then has no padding, and joined fragments still decode. At most two bytes
    wait for the next chunk."""
    carry = b""
    async for chunk in audio:
        data = carry + chunk
        cut = len(data) - len(data) % 3
        carry = data[cut:]
        if cut:
            yield data[:cut]
    if carry:
        yield carry


# -- the handler ------------------------------------------------------------------


async def create_chat_completion(request: Request) -> Response:
    """``POST /v1/chat/completions``: a chat request in, the spoken answer out."""
    state = state_of(request)
    chat = ChatRequest.from_json(await read_json(request, state.config.max_body_bytes))
    key = state.keys.upstream_key(request.headers)
    speech = await synthesize(
        state.upstream,
        chat.speech.upstream_body(),
        chat.speech.response_format,
        key,
        state.config.deadline,
        capacity=state.capacity,
    )
    headers = {"x-request-id": speech.request_id} if speech.request_id else {}
    answer = _Answer(chat)
    if chat.stream:
        return AudioResponse(
            answer.events(speech), "text/event-stream", headers, on_close=speech.aclose
        )
    try:
        audio = b"".join([chunk async for chunk in speech])
    finally:
        await speech.aclose()
    return JSONResponse(answer.completion(audio), headers=headers)
