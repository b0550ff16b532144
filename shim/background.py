"""Work that outlives the request that started it.

When a split request fails or its client goes away, the pieces already paid for are
still downloaded into the cache (:mod:`shim.synthesis`), so that the client's retry
pays only for what was never generated. That work runs here: as tasks the app's state
holds, at most ``limit`` at a time (beyond it the work is dropped, as it would have
been before), waited for at shutdown and cancelled once the grace period is over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

__all__ = ["Background"]

logger = logging.getLogger("tts_shim")


class Background:
    """Tasks that finish what a request left behind; built in the app's lifespan."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, work: Coroutine[Any, Any, None]) -> bool:
        """Run ``work`` in the background; ``False`` (and ``work`` never run) when
        ``limit`` tasks are running already or the app is shutting down."""
        if self._closing or len(self._tasks) >= self.limit:
            work.close()
            return False
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return True

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("background work failed", exc_info=task.exception())

    async def aclose(self, grace: float) -> None:
        """Take no more work; wait up to ``grace`` seconds for what runs, then cancel it."""
        self._closing = True
        if not self._tasks:
            return
        pending = set(self._tasks)
        _, late = await asyncio.wait(pending, timeout=grace)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)
