"""``POST /v1/audio/speech``: OpenAI's request in, OpenAI's audio stream out.

The request and its rules are :class:`shim.contract.SpeechRequest`.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from shim.bodies import read_json
from shim.catalog import FORMATS
from shim.contract import MAX_INPUT_CHARS, SpeechRequest
from shim.operations import admit
from shim.responses import AudioResponse, speech_events
from shim.state import state_of
from shim.synthesis import synthesize

__all__ = ["MAX_INPUT_CHARS", "SpeechRequest", "create_speech"]


async def create_speech(request: Request) -> Response:
    """``POST /v1/audio/speech``: OpenAI's request in, OpenAI's audio stream out."""
    state = state_of(request)
    speech = SpeechRequest.from_json(await read_json(request, state.config.max_body_bytes))
    key = state.keys.upstream_key(request.headers)
    await admit(request, speech.model.id, len(speech.input))  # key limits, budget (issue 13)
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
