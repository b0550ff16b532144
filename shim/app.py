"""The Starlette application: routes, error handling, and the upstream's lifetime."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from shim.bodies import read_json
from shim.browsers import BrowserGate
from shim.catalog import FORMATS
from shim.chat import create_chat_completion
from shim.config import Config
from shim.errors import APIError
from shim.health import healthz, readyz
from shim.keys import Keys
from shim.limits import Capacity
from shim.logs import AccessLogMiddleware
from shim.middleware import GateMiddleware
from shim.models import list_models, list_speech_models, list_voices, retrieve_model
from shim.openapi import openapi_json
from shim.responses import AudioResponse, StreamAborted, speech_events
from shim.speech import SpeechRequest
from shim.synthesis import synthesize
from shim.upstream import Upstream

__all__ = ["ShimState", "create_app"]

logger = logging.getLogger("tts_shim")


@dataclass
class ShimState:
    """What every handler needs, built once per app (``app.state.shim``)."""

    config: Config
    keys: Keys
    upstream: Upstream
    capacity: Capacity = field(default_factory=lambda: Capacity(0, 0, 0.0))


def _state(request: Request) -> ShimState:
    state: ShimState = request.app.state.shim
    return state


def _request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


async def create_speech(request: Request) -> Response:
    """``POST /v1/audio/speech``: OpenAI's request in, OpenAI's audio stream out."""
    shim = _state(request)
    speech = SpeechRequest.from_json(await read_json(request, shim.config.max_body_bytes))
    key = shim.keys.upstream_key(request.headers)
    audio = await synthesize(
        shim.upstream,
        speech.upstream_body(),
        speech.response_format,
        key,
        shim.config.deadline,
        capacity=shim.capacity,
    )
    headers = {"x-request-id": audio.request_id or _request_id(request)}
    if speech.stream_format == "sse":
        # Speech is billed per character, so usage counts characters (see README).
        usage = {"input_tokens": len(speech.input), "output_tokens": 0}
        usage["total_tokens"] = usage["input_tokens"]
        events = speech_events(audio, usage)
        return AudioResponse(events, "text/event-stream", headers, on_close=audio.aclose)
    content_type = FORMATS[speech.response_format].content_type
    return AudioResponse(audio, content_type, headers, on_close=audio.aclose)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return exc.response(_request_id(request))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        error = APIError(404, f"Unknown request URL: {request.method} {request.url.path}.")
    elif exc.status_code == 405:
        error = APIError(405, f"Method {request.method} is not allowed on {request.url.path}.")
    else:
        error = APIError(exc.status_code, str(exc.detail))
    if exc.headers:
        error.headers.update(exc.headers)  # ``Allow`` on a 405, say
    return error.response(_request_id(request))


async def _unexpected(request: Request, exc: Exception) -> Response:
    # Starlette calls this even after the response started; an abort is already
    # logged where it happened, and this response is never sent.
    if not isinstance(exc, StreamAborted):
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
    error = APIError(
        500,
        "The shim hit an internal error; the details are in its log.",
        type="server_error",
        retryable=True,
    )
    return error.response(_request_id(request))


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/audio/speech", create_speech, methods=["POST"]),
        Route("/v1/chat/completions", create_chat_completion, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", retrieve_model, methods=["GET"]),
        Route("/v1/audio/voices", list_voices, methods=["GET"]),
        Route("/v1/audio/models", list_speech_models, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
    ]


def create_app(
    config: Config | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Starlette:
    """Build the shim.

    ``transport`` replaces the network under the upstream clients: tests pass
    ``httpx.ASGITransport(mockserver.create_app())`` to run everything in-process.
    """
    config = config or Config()
    keys = Keys(config)
    upstream = Upstream(config, transport)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await upstream.aclose()

    app = Starlette(
        routes=routes(),
        middleware=[
            Middleware(AccessLogMiddleware),
            Middleware(BrowserGate, config=config),
            Middleware(GateMiddleware, keys=keys, send_timeout=config.send_timeout),
        ],
        exception_handlers={
            APIError: _api_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
        lifespan=lifespan,
    )
    # A slash redirect's Location would be built from the client's Host header.
    app.router.redirect_slashes = False
    app.state.shim = ShimState(config, keys, upstream, Capacity.from_config(config))
    return app
