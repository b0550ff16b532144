"""The Starlette application: routes, error handling, and the state's lifetime."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from shim import errors
from shim.background import Background
from shim.browsers import BrowserGate
from shim.cache import DiskAudioStore, Outage, check_cache_dir, connect, open_cache
from shim.catalog import list_models, list_speech_models, list_voices, retrieve_model
from shim.chat import create_chat_completion
from shim.clients import ClientKeys
from shim.config import Config
from shim.context import context_of
from shim.errors import APIError
from shim.health import healthz, readyz
from shim.keys import Keys
from shim.limits import Capacity
from shim.logs import AccessLogMiddleware
from shim.middleware import GateMiddleware
from shim.openapi import openapi_json
from shim.operations import (
    Operations,
    OperationsMiddleware,
    metrics_endpoint,
    operator_usage_endpoint,
    usage_endpoint,
)
from shim.responses import StreamAborted
from shim.speech import create_speech
from shim.state import State
from shim.upstream import Upstream
from shim.upstream.clients import check_trust_store

__all__ = ["create_app", "routes"]

logger = logging.getLogger("tts_shim")

#: Most background tasks (pieces finished into the cache) when --max-concurrency is 0.
_MAX_BACKGROUND = 64
#: Seconds the app's shutdown waits for requests still cleaning up (a cut request
#: takes milliseconds; this bounds one that ignored its cancellation).
_CLEAN_UP_WAIT = 5.0


def _request_id(request: Request) -> str:
    return context_of(request).request_id


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return exc.response(_request_id(request))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        error = errors.not_found(f"Unknown request URL: {request.method} {request.url.path}.")
    elif exc.status_code == 405:
        error = errors.http_error(
            405, f"Method {request.method} is not allowed on {request.url.path}."
        )
    else:
        error = errors.http_error(exc.status_code, str(exc.detail))
    # Starlette's own headers (``Allow`` on a 405, say) go out with it.
    return error.response(_request_id(request), exc.headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    # Starlette calls this even after the response started; an abort is already
    # logged where it happened, and this response is never sent.
    if not isinstance(exc, StreamAborted):
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
    error = errors.internal_error(
        "The shim hit an internal error; the details are in its log.", retryable=True
    )
    return error.response(_request_id(request))


def routes() -> list[BaseRoute]:
    """Every route the shim serves (``/openapi.json`` documents the others)."""
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
        # Operators (shim/operations.py)
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/usage", operator_usage_endpoint, methods=["GET"]),
        Route("/v1/usage", usage_endpoint, methods=["GET"]),
    ]


def create_app(config: Config | None = None) -> Starlette:
    """Build the shim.

    The upstream sessions and the speech slots are made in the app's lifespan, so the
    app must be run by a server (uvicorn) or inside ``app.router.lifespan_context``.
    """
    config = config or Config()
    keys = Keys(config)
    clients = ClientKeys.from_config(config)  # a bad keys file stops start-up here
    config = check_cache_dir(config)  # so does a --cache-dir that cannot be written
    check_trust_store(config)  # and a --ca-bundle that cannot be read

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Whatever was opened is closed again, also when a later step fails: a failed
        # start-up leaves no upstream session open.
        async with contextlib.AsyncExitStack() as opened:
            upstream = Upstream(config)
            opened.push_async_callback(upstream.aclose)
            # Here, so that each worker process opens its own; one Redis pool (and its
            # breaker) serves the cache, its single flight and the limit counters.
            redis = None
            if config.redis_url:
                redis = connect(config.redis_url, timeout=config.redis_timeout)
            cache = open_cache(config, redis)
            if cache is not None:
                opened.push_async_callback(cache.aclose)
            ops = Operations.open(config, clients, redis=redis)
            opened.push_async_callback(ops.aclose)
            outage = None
            if redis is not None:
                outage = Outage.of(redis)
                opened.push_async_callback(outage.aclose)  # first: stops the PINGs
                # A Redis that does not answer is a warning now, not at the first request
                # (the shim starts and serves without it).
                await outage.check()
            store = cache.store if cache is not None else None
            disk = store.writes if isinstance(store, DiskAudioStore) else None
            ops.metrics.watch(redis=outage, disk=disk)
            # Closed first (last in): what it finishes needs the upstream and the cache.
            background = Background(limit=config.max_concurrency or _MAX_BACKGROUND)
            opened.push_async_callback(background.aclose, config.graceful_timeout)
            capacity = Capacity.from_config(config)
            state = State(config, keys, upstream, capacity, cache, ops, background)
            app.state.shim = state
            yield
            # The server cancels what is still running at the end of --graceful-timeout,
            # and shuts the app down at once: let those requests finish cleaning up
            # (downloads closed, cache entries dropped, their bills closed) first.
            with anyio.move_on_after(_CLEAN_UP_WAIT):
                await state.capacity.idle()
            if state.capacity.requests:
                logger.warning(
                    "%d request(s) still running at shutdown; closing their clients",
                    state.capacity.requests,
                )

    app = Starlette(
        routes=routes(),
        middleware=[
            Middleware(AccessLogMiddleware),
            Middleware(OperationsMiddleware),
            Middleware(BrowserGate, config=config),
            Middleware(
                GateMiddleware, keys=keys, clients=clients, send_timeout=config.send_timeout
            ),
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
    return app
