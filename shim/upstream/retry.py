"""When the shim tries an upstream call again, and how long it waits first.

The policy is the same for both calls; what differs is which failures are marked
retryable where they happen: the billed generation call only when it provably never
reached the AI/ML API or was answered 429/5xx with a status line
(:mod:`shim.upstream.generation`), the free CDN download more freely
(:mod:`shim.upstream.download`).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
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

    tenacity decides every step through its public async API: whether to try again, how
    long to wait, when to stop; the last error is raised as it was.
    """

    def __init__(self, retries: int, max_wait: float) -> None:
        self.retries = retries
        self.max_wait = max_wait
        self._retrying = AsyncRetrying(
            stop=stop_after_attempt(retries + 1),
            retry=retry_if_exception(self._should_retry),
            wait=self._wait,
            reraise=True,
        )

    async def run(self, attempt: Callable[..., Coroutine[Any, Any, _T]], *args: Any) -> _T:
        """``await attempt(*args)``, retried as the policy says."""
        # A copy per run: a controller holds the state of the run it drives.
        async for trying in self._retrying.copy():
            with trying:
                return await attempt(*args)
        raise AssertionError("unreachable: tenacity returns or raises")  # pragma: no cover

    def _should_retry(self, exc: BaseException) -> bool:
        if not isinstance(exc, APIError) or not exc.retryable:
            return False
        return exc.retry_after is None or exc.retry_after <= self.max_wait

    @staticmethod
    def _wait(state: RetryCallState) -> float:  # tenacity's documented callback argument
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, APIError) and exc.retry_after is not None:
            return exc.retry_after
        return _BACKOFF(state)
