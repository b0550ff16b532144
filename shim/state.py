"""What every handler needs, built once per running app in its lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.requests import Request

from shim.background import Background
from shim.cache import AudioCache
from shim.config import Config
from shim.keys import Keys
from shim.limits import Capacity
from shim.operations import Operations
from shim.upstream import Upstream

__all__ = ["State", "state_of"]


@dataclass
class State:
    """The per-app state: settings, keys, the upstream clients, the speech slots, the
    audio cache (``None`` when off) and the work requests leave behind.

    Built by the app's lifespan (so an app can be started, stopped and started again)
    and kept as ``app.state.shim``; handlers reach it through :func:`state_of`.
    """

    config: Config
    keys: Keys
    upstream: Upstream
    capacity: Capacity
    cache: AudioCache | None = None
    #: Metrics, client keys with limits, usage (shim/operations.py).
    ops: Operations | None = None
    #: Paid-for pieces finished into the cache after their request ended (shim/synthesis.py).
    background: Background = field(default_factory=lambda: Background(limit=0))


def state_of(request: Request) -> State:
    """The running app's :class:`State`."""
    state: State = request.app.state.shim
    return state
