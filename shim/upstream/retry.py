"""When the shim tries an upstream call again, and how long it waits first.

The policy is the same for both calls; what differs is which failures are marked
retryable where they happen: the billed generation call only when it provably never
reached the AI/ML API or was answered 429/5xx with a status line
(:mod:`shim.upstream.generation`), the free CDN download more freely
(:mod:`shim.upstream.download`).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from tenacity import (
    DoAttempt,
    DoSleep,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from shim.errors import APIError

__all__ = ["RetryPolicy"]

_T = TypeVar("_T")
_BACKOFF = wait_random_exponential(multiplier=0.05, max=1.0)


class RetryPolicy:
    """Run an attempt, and up to ``retries`` more times while it raises a retryable
    :class:`APIError`. A ``Retry-After`` is waited out when it is at most ``max_wait``
    seconds; a longer one ends the retries and reaches the client.

    tenacity decides every step, the first attempt included: whether to try (again),
    how long to wait, when to stop, what to raise. The shim only awaits what it is told
    to. It drives tenacity's synchronous controller (``Retrying.iter``) rather than
    ``AsyncRetrying``, which asks ``inspect`` at every step whether each of its own
    callbacks is a coroutine function: half the cost of a run, twice per request
    (``bench/micro.py``). One controller serves every run: a step (``iter``) runs to its
    end without yielding to the event loop, so its scratch state never spans an
    ``await``, and the state of each run lives in that run's own ``RetryCallState``.
    (The controller's ``statistics`` mix all runs; nothing reads them.)
    """

    def __init__(self, retries: int, max_wait: float) -> None:
        self.retries = retries
        self.max_wait = max_wait
        self._retrying = Retrying(
            stop=stop_after_attempt(retries + 1),
            retry=retry_if_exception(self._should_retry),
            wait=self._wait,
            reraise=True,
        )

    async def run(self, attempt: Callable[..., Coroutine[Any, Any, _T]], *args: Any) -> _T:
        """``await attempt(*args)``, retried as the policy says."""
        retrying = self._retrying
        retrying.begin()  # its statistics, which its steps update
        state = RetryCallState(retrying, fn=None, args=(), kwargs={})
        while True:
            step = retrying.iter(state)  # raises the last error when it says stop
            if isinstance(step, DoAttempt):
                try:
                    result = await attempt(*args)
                except BaseException:
                    state.set_exception(sys.exc_info())  # type: ignore[arg-type]
                else:
                    state.set_result(result)
            elif isinstance(step, DoSleep):
                state.prepare_for_next_attempt()
                await asyncio.sleep(step)
            else:
                return step  # type: ignore[no-any-return]

    def _should_retry(self, exc: BaseException) -> bool:
        if not isinstance(exc, APIError) or not exc.retryable:
            return False
        return exc.retry_after is None or exc.retry_after <= self.max_wait

    @staticmethod
    def _wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, APIError) and exc.retry_after is not None:
            return exc.retry_after
        return _BACKOFF(state)
