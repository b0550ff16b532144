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

__all__ = ["with_retries"]

_T = TypeVar("_T")
_BACKOFF = wait_random_exponential(multiplier=0.05, max=1.0)


async def with_retries(
    retries: int,
    max_wait: float,
    attempt: Callable[..., Coroutine[Any, Any, _T]],
    *args: Any,
) -> _T:
    """Run ``attempt(*args)``, and up to ``retries`` more times while it raises a retryable
    :class:`APIError`. A ``Retry-After`` is waited out when it is at most
    ``max_wait`` seconds; a longer one ends the retries and reaches the client."""

    def should_retry(exc: BaseException) -> bool:
        if not isinstance(exc, APIError) or not exc.retryable:
            return False
        return exc.retry_after is None or exc.retry_after <= max_wait

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, APIError) and exc.retry_after is not None:
            return exc.retry_after
        return _BACKOFF(state)

    retrying = AsyncRetrying(
        stop=stop_after_attempt(retries + 1),
        retry=retry_if_exception(should_retry),
        wait=wait,
        reraise=True,
    )
    return await retrying(attempt, *args)
