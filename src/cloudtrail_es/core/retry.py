"""The one retry loop: capped exponential backoff with jitter, bounded by a deadline.

What is worth retrying is decided in one place too: a whole request answered 429, 502,
503 or 504, or not answered at all (``ClusterUnreachable``); a bulk item answered 429
or 503, or with an error that says the cluster was busy rather than that the document is
wrong (``TRANSIENT_ITEM_ERRORS``: a dynamic mapping update that timed out under load, say).
Anything else is final.
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from cloudtrail_es.core.errors import ClusterUnreachable, RetryDeadlineExceeded

if TYPE_CHECKING:
    from cloudtrail_es.core.breaker import CircuitBreaker

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_REQUEST_STATUSES = frozenset({429, 502, 503, 504})
RETRY_ITEM_STATUSES = frozenset({429, 503})
#: Bulk item error types (any status) meaning "busy, try again", with the words of the reason
#: that say so ("" for any reason): the cluster did not judge the document.
TRANSIENT_ITEM_ERRORS = {
    "mapper_exception": "timed out while waiting for a dynamic mapping update",
    "process_cluster_event_timeout_exception": "",
    "es_rejected_execution_exception": "",
}


class Backoff:
    """Delay before retry n (1-based): min(cap, base * 2**(n-1)), jittered to 50-100 % of it.

    With the defaults (0.5 s, cap 30 s) the delays are about 0.5, 1, 2, 4, 8,
    16, 30, 30 ... seconds; the jitter spreads concurrent Lambdas apart.
    """

    def __init__(
        self,
        base: float = 0.5,
        cap: float = 30.0,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
        breaker: "CircuitBreaker | None" = None,
    ) -> None:
        self.base = base
        self.cap = cap
        self.sleep = sleep
        self.clock = clock
        self.jitter = jitter
        #: An open breaker ends the wait at once with ClusterDown (see breaker.py).
        self.breaker = breaker

    def delay(self, attempt: int) -> float:
        ceiling = min(self.cap, self.base * 2 ** (attempt - 1))
        return ceiling * (0.5 + 0.5 * self.jitter())

    def wait(self, attempt: int, deadline: float, what: str) -> None:
        """Sleep before retry ``attempt``, or raise if that would pass ``deadline``.

        With a breaker: raises ClusterDown when it is open, and wakes when it would open.
        """
        if self.breaker is not None:
            self.breaker.check()
        delay = self.delay(attempt)
        if self.clock() + delay > deadline:
            error = RetryDeadlineExceeded(f"gave up retrying {what} after {attempt} attempts")
            error.retries = attempt - 1
            raise error
        log.warning("retrying", extra={"what": what, "attempt": attempt,
                                       "delay": round(delay, 3)})
        if self.breaker is not None:
            self.sleep(min(delay, self.breaker.remaining()))
            self.breaker.check()
        else:
            self.sleep(delay)


@dataclass(frozen=True)
class Retry:
    """An attempt's answer meaning "not yet": ``why``, and what is still to do when it changed."""

    why: str
    what: str | None = None


def retrying(attempt: Callable[[int], T | Retry], backoff: Backoff, deadline: float,
             what: str) -> T:
    """Call ``attempt(retries_so_far)`` until it answers something other than ``Retry``.

    Between attempts, ``backoff`` waits; past ``deadline`` it raises RetryDeadlineExceeded
    naming ``what`` (or the ``Retry``'s own ``what``) and the last reason.
    """
    retries = 0
    while True:
        answer = attempt(retries)
        if not isinstance(answer, Retry):
            return answer
        retries += 1
        backoff.wait(retries, deadline, f"{answer.what or what} ({answer.why})")


def retryable_item(status: int, error: Any = None) -> bool:
    """Whether a bulk item answered ``status`` (and ``error``, the item's ``error`` object) may
    succeed if sent again."""
    if status in RETRY_ITEM_STATUSES:
        return True
    if not isinstance(error, dict):
        return False
    words = TRANSIENT_ITEM_ERRORS.get(str(error.get("type")))
    return words is not None and words in str(error.get("reason"))


def transient(send: Callable[[], Any]) -> Any:
    """``send()``'s response, or ``Retry`` when nothing answered or the status is retryable."""
    try:
        response = send()
    except ClusterUnreachable as exc:
        return Retry(str(exc))
    if response.status_code in RETRY_REQUEST_STATUSES:
        return Retry(f"HTTP {response.status_code}")
    return response
