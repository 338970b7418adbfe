"""Capped exponential backoff with jitter, bounded by a deadline."""
from __future__ import annotations

import logging
import random
import time
from typing import TYPE_CHECKING, Callable

from .errors import RetryDeadlineExceeded

if TYPE_CHECKING:
    from .breaker import CircuitBreaker

log = logging.getLogger(__name__)


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
            raise RetryDeadlineExceeded(f"gave up retrying {what} after {attempt} attempts")
        log.warning("retrying", extra={"what": what, "attempt": attempt,
                                       "delay": round(delay, 3)})
        if self.breaker is not None:
            self.sleep(min(delay, self.breaker.remaining()))
            self.breaker.check()
        else:
            self.sleep(delay)
