"""A circuit breaker: when the cluster has not answered (or answered only 5xx) for too long, stop.

Every request's outcome is reported to it: an answer below 500 closes it (the outage,
if any, is over); no answer or a 5xx starts an outage, unless one is already running.
Once an outage has lasted ``open_after`` seconds the breaker is open: a retry wait
raises ``ClusterDown`` at once instead of sleeping out the retry limit, and the backfill
takes no new file. A shorter outage is ridden out by the ordinary retries.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

from cloudtrail_es.core.errors import ClusterDown

__all__ = ["CircuitBreaker", "ClusterDown"]

#: An outage this long opens the breaker by default (``BREAKER_SECONDS``).
DEFAULT_OPEN_AFTER = 120.0


class CircuitBreaker:
    """Thread-safe; ``clock`` is monotonic seconds (the backoff's scale)."""

    def __init__(self, open_after: float = DEFAULT_OPEN_AFTER,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.open_after = open_after
        self._clock = clock
        self._lock = threading.Lock()
        self._outage_since: float | None = None
        self._last_failure = ""

    def succeeded(self) -> None:
        """The cluster answered (below 500): any outage is over."""
        with self._lock:
            self._outage_since = None

    def failed(self, why: str) -> None:
        """No answer, or a 5xx: the outage starts now unless it already had."""
        with self._lock:
            if self._outage_since is None:
                self._outage_since = self._clock()
            self._last_failure = why

    def record(self, status: int | None, why: str = "") -> None:
        """An HTTP status (None: nothing answered)."""
        if status is None or status >= 500:
            self.failed(why or f"HTTP {status}")
        else:
            self.succeeded()

    def outage_seconds(self) -> float:
        with self._lock:
            return 0.0 if self._outage_since is None else self._clock() - self._outage_since

    def remaining(self) -> float:
        """Seconds until the current outage opens the breaker (``open_after`` when there is none)."""
        with self._lock:
            if self._outage_since is None:
                return self.open_after
            return max(0.0, self.open_after - (self._clock() - self._outage_since))

    @property
    def is_open(self) -> bool:
        with self._lock:
            return (self._outage_since is not None
                    and self._clock() - self._outage_since >= self.open_after)

    @property
    def cause(self) -> str:
        """What the outage looks like, for the user: how long, and the last failure seen."""
        with self._lock:
            if self._outage_since is None:
                return "the cluster is answering"
            return (f"the cluster has not answered (or answered only 5xx) for "
                    f"{self._clock() - self._outage_since:.0f} s, breaker limit {self.open_after:g} s; "
                    f"last failure: {self._last_failure}")

    def check(self) -> None:
        """Raise ``ClusterDown`` when the breaker is open."""
        if self.is_open:
            raise ClusterDown(self.cause)
