"""``/healthz`` (liveness) and ``/readyz`` (readiness), outside ``/v1``.

Neither needs a client key, neither takes a speech slot, and neither calls
upstream: a prober must get an answer however busy the shim is, and an AI/ML API
outage should not make an orchestrator restart or unroute every shim (requests
then get honest 502/504 envelopes instead). ``/readyz`` turns 503 once the shim
is shutting down (``"draining"``; it can answer so only during ``--shutdown-delay``, as
the listener closes after it), and while every concurrency slot is taken (``"busy"``:
a load balancer should send new work elsewhere; it turns 200 again as soon as a
slot is free, which ``--send-timeout`` guarantees even for clients that stop reading).
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
    """Ready for traffic unless draining or full; with the load figures (no secrets)."""
    state = state_of(request)
    capacity = state.capacity
    status = "draining" if capacity.leaving else "busy" if capacity.full else "ready"
    body = {
        "status": status,
        **capacity.snapshot(),
        "open_streams": state.upstream.stats.open_streams,
    }
    code = 200 if status == "ready" else 503
    return JSONResponse(body, status_code=code, headers=_NO_STORE)
