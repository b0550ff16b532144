"""``POST /v1/audio/speech``: OpenAI's request in, OpenAI's audio stream out.

The request and its rules are :class:`shim.contract.SpeechRequest`.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response

from shim.bodies import read_json
from shim.cache import tenant_of
from shim.catalog import FORMATS
from shim.contract import MAX_INPUT_CHARS, SpeechRequest
from shim.operations import admit
from shim.responses import AudioResponse, WholeAudio, speech_events
from shim.state import State, state_of
from shim.synthesis import Job, Speech, synthesize

__all__ = ["MAX_INPUT_CHARS", "SpeechRequest", "audio_headers", "create_speech", "job_for"]


async def create_speech(request: Request) -> Response:
    """``POST /v1/audio/speech``: OpenAI's request in, OpenAI's audio stream out."""
    state = state_of(request)
    body = await read_json(request, state.config.max_body_bytes)
    speech = SpeechRequest.from_json(body, state.config.input_limit)
    job = job_for(state, request.headers, speech)
    context = await admit(request, speech.model.id, len(speech.input))  # key limits
    audio = await synthesize(state, job, context)  # budget: on what the cache lacks
    headers = audio_headers(audio)
    if speech.stream_format == "sse":
        # Speech is billed per character, so usage counts characters (see README).
        usage = {"input_tokens": len(speech.input), "output_tokens": 0}
        usage["total_tokens"] = usage["input_tokens"]
        events = speech_events(audio, usage)
        return AudioResponse(events, "text/event-stream", headers, on_close=audio.aclose)
    content_type = FORMATS[speech.response_format].content_type
    if audio.whole is not None:
        await audio.aclose()  # nothing is left to stream: the slot is free now
        return WholeAudio(audio.whole, content_type, headers)
    return AudioResponse(audio, content_type, headers, on_close=audio.aclose)


def job_for(state: State, headers: Headers, speech: SpeechRequest) -> Job:
    """What to generate for a validated request, who pays, and how the cache may be
    used (``Cache-Control: no-cache`` skips the lookup, ``no-store`` the cache)."""
    key = state.keys.upstream_key(headers)
    directives = {d.strip().lower() for d in headers.get("cache-control", "").split(",")}
    no_store = "no-store" in directives
    return Job(
        model=speech.model.upstream_id,
        text=speech.input,
        voice=speech.voice,
        format=speech.response_format,
        key=key,
        instructions=speech.instructions,
        speed=speech.speed,
        # Clients that pay with their own keys share nothing with each other (a hash
        # of the key, made only when there is a cache to share).
        tenant=None
        if state.cache is None
        else tenant_of(key, pass_through=state.config.upstream_key is None),
        cache_read=not no_store and "no-cache" not in directives,
        cache_write=not no_store,
    )


def audio_headers(audio: Speech) -> dict[str, str]:
    """What every audio answer says about itself: the upstream's request id (when
    there is one) and where the audio came from (``x-cache``)."""
    headers = {"x-cache": audio.cache}
    if audio.request_id:
        headers["x-request-id"] = audio.request_id
    return headers
