"""What operators see and set: metrics, named keys with limits, usage.

One :class:`Operations` per running app (built in its lifespan, kept on the
:class:`~shim.state.State`), and four small hooks into the request path:

* the gate names the client on the request's context (:mod:`shim.context`);
* the handlers call :func:`admit` after validation, before any upstream call: the key's
  rate limits are checked and the request's :class:`~shim.quota.Bill` opened, kept on
  its context, which the data path (:func:`shim.synthesis.synthesize`) reserves against
  the budgets, once it knows what it will generate, and charges as each generation
  goes out;
* :class:`OperationsMiddleware` updates the metrics from the request's context when
  the response has ended;
* routes: ``GET /metrics`` (:func:`metrics_endpoint`), ``GET /v1/usage`` (a client's
  own usage, :func:`usage_endpoint`) and ``GET /usage`` (every key, for operators,
  guarded like ``/metrics``; ``tts-shim usage`` reads it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
import signal
import threading
import time
from typing import Any

from redis.asyncio import Redis
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from shim import errors
from shim.clients import Client, ClientKeys
from shim.config import Config
from shim.context import RequestContext, context_of
from shim.errors import APIError
from shim.keys import bearer_token
from shim.limits import Capacity, draining_error
from shim.metrics import CONTENT_TYPE_LATEST, Metrics
from shim.prices import MICRO, Prices
from shim.quota import Clock, Quota, Usage
from shim.responses import ShutdownCut

__all__ = [
    "Operations",
    "OperationsMiddleware",
    "admit",
    "metrics_endpoint",
    "openapi_paths",
    "operator_usage_endpoint",
    "usage_endpoint",
]

logger = logging.getLogger("tts_shim")

_NO_STORE = {"cache-control": "no-store"}
#: Longest usage report, days.
MAX_REPORT_DAYS = 92


class Operations:
    """The metrics, the client keys and the quota of one running app."""

    def __init__(
        self, config: Config, clients: ClientKeys | None, quota: Quota, prices: Prices
    ) -> None:
        self.config = config
        self.clients = clients
        self.quota = quota
        self.prices = prices
        self.metrics = Metrics(prices)
        self._sighup = False

    @classmethod
    def open(
        cls,
        config: Config,
        clients: ClientKeys | None,
        *,
        clock: Clock = time.time,
        redis: Redis | None = None,
    ) -> Operations:
        """Build them for ``config`` (counters in Redis with ``config.redis_url``, through
        ``redis`` if given: the client the cache uses) and, with a keys file, re-read it on
        SIGHUP. Call from the app's lifespan."""
        quota = Quota.open(config.redis_url, clock, redis)
        ops = cls(config, clients, quota, Prices(config.prices))
        if clients is not None and clients.path is not None:
            ops._install_sighup()
        return ops

    def _install_sighup(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # an app run in a thread (tests): reload() can still be called
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError, AttributeError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload)
            self._sighup = True

    def reload(self) -> bool:
        """Re-read the keys file (SIGHUP); a bad file is logged and the old one kept."""
        return self.clients.reload() if self.clients is not None else False

    async def aclose(self) -> None:
        if self._sighup:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        await self.quota.aclose()


def _ops(scope: Scope) -> Operations | None:
    app = scope.get("app")
    shim = getattr(getattr(app, "state", None), "shim", None)
    ops = getattr(shim, "ops", None)
    return ops if isinstance(ops, Operations) else None


async def admit(request: Request, model: str, characters: int) -> RequestContext:
    """The admission stage: note the request's model and size on its context, check its
    key's rate limits (or raise a 429) and open its bill there, for ``synthesize``,
    which checks the budgets on what it will generate. Returns the context.

    Call after validation and before any upstream call."""
    context = context_of(request)
    client = context.client
    model = Prices.name(model)
    context.model, context.characters = model, characters
    ops = _ops(request.scope)
    if ops is None:
        return context
    try:
        context.bill = await ops.quota.admit(
            client,
            characters,
            functools.partial(ops.prices.micros, model),
            functools.partial(ops.metrics.billed, model, client.name),
        )
    except APIError as exc:
        if exc.status == 429:
            context.refused = exc.code
        raise
    return context


class OperationsMiddleware:
    """When a request ends: update the metrics from its context (:mod:`shim.context`).
    (Money is not counted here: the data path does that as it spends, see
    :class:`~shim.quota.Bill`, reached through the context too.)

    It also counts the requests in progress (:meth:`shim.limits.Capacity.enter`), which
    the app's shutdown waits for, and ends a request the server cancels while the shim
    drains (the end of ``--graceful-timeout``) with one warning instead of a traceback:
    a 503 if its response had not started, else an aborted transfer.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        context = context_of(scope)
        capacity = _capacity(scope)
        if capacity is not None:
            capacity.enter()
        try:
            await self.app(scope, receive, send)
        except asyncio.CancelledError:
            if capacity is None or not capacity.draining:
                raise
            await _cut_by_shutdown(scope, receive, send, context)
        finally:
            try:
                ops = _ops(scope)
                if ops is not None:
                    self._finish(ops, scope, context)
            finally:
                if capacity is not None:
                    capacity.leave()

    @staticmethod
    def _finish(ops: Operations, scope: Scope, context: RequestContext) -> None:
        route = getattr(scope.get("route"), "path", None)
        ops.metrics.observe(context, route if isinstance(route, str) else "unmatched")
        capacity = _capacity(scope)
        if capacity is not None:
            ops.metrics.load(capacity.in_flight, capacity.queued)


def _capacity(scope: Scope) -> Capacity | None:
    capacity = getattr(getattr(scope["app"].state, "shim", None), "capacity", None)
    return capacity if isinstance(capacity, Capacity) else None


async def _cut_by_shutdown(
    scope: Scope, receive: Receive, send: Send, context: RequestContext
) -> None:
    # The cancellation is answered here, by the request's own outermost handler of it:
    # only uvicorn's end of the task follows, so nothing needs it taken back.
    rid = context.request_id
    logger.warning("request %s cut: the graceful shutdown period ended before it did", rid)
    if context.status is None:
        await draining_error().response(rid)(scope, receive, send)
        return
    raise ShutdownCut("the graceful shutdown period ended")


def _operator_check(request: Request, config: Config) -> None:
    if config.metrics_key is None:
        return
    token = (bearer_token(request.headers) or "").encode()
    if not hmac.compare_digest(token, config.metrics_key.encode()):
        raise errors.invalid_api_key(
            "This route needs the shim's metrics key (--metrics-key) as the bearer token."
        )


async def metrics_endpoint(request: Request) -> Response:
    """``GET /metrics``: Prometheus text format; open unless ``--metrics-key`` is set."""
    ops = _ops(request.scope)
    assert ops is not None
    _operator_check(request, ops.config)
    capacity = request.app.state.shim.capacity
    ops.metrics.load(capacity.in_flight, capacity.queued)
    return Response(ops.metrics.exposition(), media_type=CONTENT_TYPE_LATEST, headers=_NO_STORE)


def _usage_json(usage: Usage) -> dict[str, Any]:
    return {"requests": usage.requests, "characters": usage.characters, "usd": usage.usd}


def _limit_json(client: Client) -> dict[str, Any]:
    return client.limits.model_dump()


async def usage_endpoint(request: Request) -> Response:
    """``GET /v1/usage``: the calling key's own usage today and this month (UTC), and
    its limits."""
    ops = _ops(request.scope)
    assert ops is not None
    # Without client keys (pass-through) every caller is ``anonymous`` and sees that total.
    client = context_of(request).client
    found = await ops.quota.usage(client.name)
    remaining: dict[str, float | None] = {}
    budgets = {"day": client.limits.usd_per_day, "month": client.limits.usd_per_month}
    for window, budget in budgets.items():
        left = None if budget is None else (round(budget * MICRO) - found[window].micros) / MICRO
        remaining[window] = None if left is None else max(0.0, left)
    body = {
        "object": "usage",
        "key": client.name,
        "day": _usage_json(found["day"]),
        "month": _usage_json(found["month"]),
        "limits": _limit_json(client),
        "remaining_usd": remaining,
        "prices_per_1k_characters": dict(ops.prices.per_1k),
    }
    return JSONResponse(body, headers=_NO_STORE)


async def operator_usage_endpoint(request: Request) -> Response:
    """``GET /usage?days=N``: every key's usage per UTC day (default 7, newest first);
    guarded like ``/metrics``."""
    ops = _ops(request.scope)
    assert ops is not None
    _operator_check(request, ops.config)
    raw = request.query_params.get("days", "7")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_REPORT_DAYS:
        raise errors.invalid("days", f"'days' must be a whole number from 1 to {MAX_REPORT_DAYS}.")
    report = await ops.quota.report(int(raw))
    days = [
        {"day": day, "keys": {name: _usage_json(u) for name, u in sorted(keys.items())}}
        for day, keys in report.items()
    ]
    return JSONResponse({"object": "usage.report", "days": days}, headers=_NO_STORE)


def openapi_paths() -> dict[str, Any]:
    """The operator routes' entries for ``/openapi.json`` (shim/openapi.py adds them)."""
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    window = {
        "type": "object",
        "properties": {
            "requests": {"type": "integer"},
            "characters": {"type": "integer"},
            "usd": {"type": "number"},
        },
        "required": ["requests", "characters", "usd"],
    }
    operator_error = {"description": "--metrics-key is set and was not sent.", **error}
    return {
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics (text exposition format).",
                "security": [{"bearer": []}, {}],
                "responses": {
                    "200": {
                        "description": "Every `tts_shim_*` metric.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "401": operator_error,
                },
            }
        },
        "/usage": {
            "get": {
                "operationId": "usageReport",
                "summary": "Every client key's usage per UTC day (for operators).",
                "parameters": [
                    {
                        "name": "days",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_REPORT_DAYS},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "Days, newest first, each with usage by key name.",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "object": {"const": "usage.report"},
                                        "days": {
                                            "type": "array",
                                            "items": {
                                                "type": "object",
                                                "properties": {
                                                    "day": {"type": "string"},
                                                    "keys": {
                                                        "type": "object",
                                                        "additionalProperties": window,
                                                    },
                                                },
                                            },
                                        },
                                    },
                                    "required": ["object", "days"],
                                }
                            }
                        },
                    },
                    "400": {"description": "`days` is not 1 to 92.", **error},
                    "401": operator_error,
                },
            }
        },
        "/v1/usage": {
            "get": {
                "operationId": "usage",
                "summary": "The calling key's usage today and this month (UTC), and limits.",
                "responses": {
                    "200": {
                        "description": "Usage, limits and the budget left.",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "object": {"const": "usage"},
                                        "key": {"type": "string"},
                                        "day": window,
                                        "month": window,
                                        "limits": {"type": "object"},
                                        "remaining_usd": {"type": "object"},
                                    },
                                    "required": ["object", "key", "day", "month", "limits"],
                                }
                            }
                        },
                    },
                    "401": {"description": "A client key is required and was wrong.", **error},
                },
            }
        },
    }
