"""``/healthz`` (liveness) and ``/readyz`` (readiness), outside ``/v1``.

Neither needs a client key, neither takes a speech slot, and neither calls
upstream: a prober must get an answer however busy the shim is, and an AI/ML API
outage should not make an orchestrator restart or unroute every shim (requests
then get honest 502/504 envelopes instead). ``/readyz`` turns 503 once the shim
is draining for shutdown.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from shim.state import state_of

__all__ = ["healthz", "readyz"]

_NO_STORE = {"cache-control": "no-store"}


async def healthz(request: Request) -> Response:
    """The process is up and its event loop answers."""
    return JSONResponse({"status": "ok"}, headers=_NO_STORE)


async def readyz(request: Request) -> Response:
    """Ready for traffic unless draining; with the load figures (no secrets)."""
    state = state_of(request)
    capacity = state.capacity
    body = {
        "status": "draining" if capacity.draining else "ready",
        **capacity.snapshot(),
        "open_streams": state.upstream.stats.open_streams,
    }
    return JSONResponse(body, status_code=503 if capacity.draining else 200, headers=_NO_STORE)
