"""The circuit breaker and the backoff that consults it, on a fake clock."""
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudtrail_es.core.breaker import CircuitBreaker, ClusterDown
from cloudtrail_es.core.errors import RetryDeadlineExceeded
from cloudtrail_es.core.retry import Backoff


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_opens_only_when_an_outage_lasts_the_limit():
    clock = Clock()
    breaker = CircuitBreaker(10, clock)
    breaker.record(None, "GET / failed: connection refused")
    clock.now += 9.9
    assert not breaker.is_open
    breaker.check()
    clock.now += 0.1
    assert breaker.is_open
    with pytest.raises(ClusterDown, match="for 10 s.*connection refused"):
        breaker.check()


def test_an_answer_ends_the_outage_and_429_is_an_answer():
    clock = Clock()
    breaker = CircuitBreaker(10, clock)
    breaker.record(503)
    clock.now += 8
    breaker.record(429)
    clock.now += 8
    assert not breaker.is_open and breaker.remaining() == 10
    breaker.record(502)
    clock.now += 5
    breaker.record(None, "reset")  # a later failure does not move the outage's start
    clock.now += 5
    assert breaker.is_open and "last failure: reset" in breaker.cause


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([None, 200, 404, 429, 500, 503]),
                          st.floats(0, 20, allow_nan=False)), max_size=30))
def test_open_exactly_when_the_failures_since_the_last_answer_span_the_limit(outcomes):
    clock = Clock()
    breaker = CircuitBreaker(15, clock)
    outage_since = None
    for status, later in outcomes:
        breaker.record(status, "x")
        if status is None or status >= 500:
            outage_since = clock.now if outage_since is None else outage_since
        else:
            outage_since = None
        clock.now += later
        assert breaker.is_open == (outage_since is not None and clock.now - outage_since >= 15)


def test_an_open_breaker_ends_a_retry_wait_at_once_without_sleeping():
    clock = Clock()
    breaker = CircuitBreaker(5, clock)
    backoff = Backoff(sleep=clock.sleep, clock=clock, jitter=lambda: 1.0, breaker=breaker)
    breaker.record(None, "refused")
    clock.now += 6
    slept_before = clock.now
    with pytest.raises(ClusterDown):
        backoff.wait(1, deadline=clock.now + 900, what="bulk")
    assert clock.now == slept_before


def test_a_wait_wakes_when_the_breaker_opens_and_raises():
    clock = Clock()
    breaker = CircuitBreaker(5, clock)
    backoff = Backoff(sleep=clock.sleep, clock=clock, jitter=lambda: 1.0, breaker=breaker)
    breaker.record(None, "refused")
    clock.now += 4
    with pytest.raises(ClusterDown):
        backoff.wait(8, deadline=clock.now + 900, what="bulk")  # a 30 s delay, cut to 1 s
    assert clock.now == pytest.approx(1005.0)


def test_without_an_outage_the_wait_is_the_ordinary_backoff():
    clock = Clock()
    backoff = Backoff(sleep=clock.sleep, clock=clock, jitter=lambda: 1.0,
                      breaker=CircuitBreaker(5, clock))
    backoff.wait(3, deadline=clock.now + 900, what="bulk")
    assert clock.now == pytest.approx(1002.0)
    with pytest.raises(RetryDeadlineExceeded):
        backoff.wait(8, deadline=clock.now + 10, what="bulk")


class YieldingClock(Clock):
    def __call__(self):
        time.sleep(0)  # lets another thread run here
        return self.now


def test_threads_reporting_and_reading_at_once_see_a_consistent_state():
    """Reads that look at the outage twice (is it there? since when?) must see one state. The
    clock hands the interpreter to another thread each time it is read, as a preempted thread
    would, so a read that is not atomic meets another thread's write in between."""
    clock = YieldingClock()
    breaker = CircuitBreaker(5, clock)
    errors: list[BaseException] = []
    seen = {"open": 0, "closed": 0}

    def report(first):
        for n in range(3000):  # outages starting and ending all the time
            breaker.record(first if n % 2 else 200, "x")
            clock.now += 0.001 * (n % 3)

    def read():
        try:
            for _ in range(3000):
                remaining, outage = breaker.remaining(), breaker.outage_seconds()
                assert 0.0 <= remaining <= 5 and outage >= 0.0
                seen["open" if breaker.is_open else "closed"] += 1
                assert breaker.cause.startswith(("the cluster has not answered", "the cluster is answering"))
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread below
            errors.append(exc)

    threads = [threading.Thread(target=report, args=(s,)) for s in (None, 503, None)]
    threads += [threading.Thread(target=read) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]
    assert seen["open"] + seen["closed"] == 9000
