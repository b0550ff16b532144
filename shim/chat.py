"""``POST /v1/chat/completions`` for the speech models, in OpenAI's audio-output shape.

Much OpenAI SDK code only knows the chat call, so the shim accepts it for the
speech models: the last user message is spoken through the same path as
``/v1/audio/speech`` (same validators, same :func:`~shim.synthesis.synthesize`), and
the audio comes back base64 in ``choices[0].message.audio``, or as
``chat.completion.chunk`` events when ``stream`` is true.

Choices made where OpenAI documents nothing (see README, "Chat completions"):

* The spoken text is the last ``user`` message: its string content, or its ``text``
  parts joined with a newline (other part types are skipped). Every ``user`` message
  must hold text, so that the document can say what is accepted (JSON Schema cannot
  single out the last one). ``system``/``developer`` messages, sampling fields, tools
  and the like are accepted and ignored. ``n`` other than 1 is refused, because only
  one answer is made. The rules are :class:`shim.contract.ChatRequest`.
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

from shim import errors
from shim.bodies import read_json
from shim.contract import CHAT_FORMATS, DEFAULT_FORMAT, ChatRequest
from shim.errors import APIError
from shim.operations import admit
from shim.responses import AudioResponse, sse_event
from shim.speech import audio_headers, job_for
from shim.state import state_of
from shim.synthesis import synthesize
from shim.wholefile import whole_file

__all__ = [
    "AUDIO_LIFETIME",
    "CHAT_FORMATS",
    "DEFAULT_FORMAT",
    "ChatRequest",
    "create_chat_completion",
]

#: Seconds until ``audio.expires_at``. Nothing is stored, so this is nominal.
AUDIO_LIFETIME = 3600


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
            async for data in _whole_samples(audio):
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


#: Fragments of streamed chat audio are cut at multiples of this many bytes: a multiple
#: of 3, so the base64 of every fragment but the last has no padding and the strings
#: join, and of 2, so a ``pcm16`` fragment (and a WAV one after the header, whose chunks
#: are even-sized) holds whole 16-bit samples that play as they arrive.
FRAGMENT_ALIGNMENT = 6


async def _whole_samples(audio: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """Re-cut ``audio`` so every piece but the last is a multiple of
    :data:`FRAGMENT_ALIGNMENT` bytes long. At most five bytes wait for the next chunk."""
    carry = b""
    async for chunk in audio:
        data = carry + chunk
        cut = len(data) - len(data) % FRAGMENT_ALIGNMENT
        carry = data[cut:]
        if cut:
            yield data[:cut]
    if carry:
        yield carry


async def _whole(speech: AsyncIterable[bytes], cap: int) -> bytes:
    """The whole audio of a non-streamed answer, which is held in memory several times
    over (bytes, base64, JSON): so it has a lower cap than streamed audio."""
    parts: list[bytes] = []
    size = 0
    async for chunk in speech:
        size += len(chunk)
        if size > cap:
            raise errors.audio_too_large(
                f"The audio is over {cap} bytes, the most this shim answers in one chat "
                "completion (--max-chat-audio-bytes); ask for it with `stream: true`."
            )
        parts.append(chunk)
    return b"".join(parts)


# -- the handler ------------------------------------------------------------------


async def create_chat_completion(request: Request) -> Response:
    """``POST /v1/chat/completions``: a chat request in, the spoken answer out."""
    state = state_of(request)
    body = await read_json(request, state.config.max_body_bytes)
    chat = ChatRequest.from_json(body, state.config.input_limit)
    job = job_for(state, request.headers, chat.speech)
    context = await admit(request, chat.speech.model.id, len(chat.speech.input))
    speech = await synthesize(state, job, context)
    headers = audio_headers(speech)
    answer = _Answer(chat)
    if chat.stream:
        return AudioResponse(
            answer.events(speech), "text/event-stream", headers, on_close=speech.aclose
        )
    try:
        audio = await _whole(speech, state.config.max_chat_audio_bytes)
    finally:
        await speech.aclose()
    # All of it is known before sending: WAV and FLAC get their real sizes.
    audio = await whole_file(audio, chat.speech.response_format, speech.request_id)
    return JSONResponse(answer.completion(audio), headers=headers)
