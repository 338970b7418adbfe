"""Bulk writes as a small pipeline: items -> chunks -> requests -> per-item outcomes.

Only what can succeed later is retried (whole-request 429/502/503/504 and
connection failures; items answered 429 or 503), and only the items that
failed, with capped exponential backoff and jitter, until a deadline. An
HTTP 200 is never taken to mean "all written": every item's status is read.
"""
from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from .cluster import Cluster, ClusterUnreachable
from .errors import ClusterError, RetryDeadlineExceeded

log = logging.getLogger(__name__)

RETRY_REQUEST_STATUSES = frozenset({429, 502, 503, 504})
RETRY_ITEM_STATUSES = frozenset({429, 503})
NDJSON = {"Content-Type": "application/x-ndjson"}


@dataclass(frozen=True)
class BulkItem:
    """One document ready to send: its action line and source, newline-terminated."""

    index: str
    doc_id: str
    lines: bytes


def bulk_item(index: str, doc_id: str, document: dict[str, Any]) -> BulkItem:
    action = json.dumps({"index": {"_index": index, "_id": doc_id}}, ensure_ascii=False)
    source = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    return BulkItem(index, doc_id, f"{action}\n{source}\n".encode("utf-8"))


@dataclass(frozen=True)
class ItemFailure:
    index: str
    doc_id: str
    status: int
    error: Any

    @property
    def reason(self) -> str:
        if isinstance(self.error, dict):
            return f"{self.error.get('type')}: {self.error.get('reason')}"
        return str(self.error)


@dataclass
class WriteResult:
    indexed: int = 0
    retried: int = 0
    failures: list[ItemFailure] = field(default_factory=list)


def chunks(items: Iterable[BulkItem], max_docs: int, max_bytes: int) -> Iterator[list[BulkItem]]:
    """Groups of at most ``max_docs`` items and ``max_bytes`` bytes (a bigger item goes alone)."""
    chunk: list[BulkItem] = []
    size = 0
    for item in items:
        if chunk and (len(chunk) >= max_docs or size + len(item.lines) > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += len(item.lines)
    if chunk:
        yield chunk


class BulkWriter:
    def __init__(
        self,
        cluster: Cluster,
        max_docs: int = 2000,
        max_bytes: int = 5 * 1024 * 1024,
        *,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._cluster = cluster
        self._max_docs = max_docs
        self._max_bytes = max_bytes
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._sleep = sleep
        self._clock = clock
        self._jitter = jitter

    def write(self, items: Iterable[BulkItem], deadline: float) -> WriteResult:
        """Send every item; ``deadline`` is on ``clock``'s scale (monotonic seconds)."""
        result = WriteResult()
        for chunk in chunks(items, self._max_docs, self._max_bytes):
            self._send(chunk, deadline, result)
        return result

    def backoff(self, attempt: int) -> float:
        """Capped exponential delay before retry ``attempt`` (1-based), jittered in [50%, 100%]."""
        ceiling = min(self._backoff_cap, self._backoff_base * 2 ** (attempt - 1))
        return ceiling * (0.5 + 0.5 * self._jitter())

    def _send(self, pending: list[BulkItem], deadline: float, result: WriteResult) -> None:
        attempt = 0
        while pending:
            try:
                response = self._cluster.request(
                    "POST", "/_bulk", data=b"".join(item.lines for item in pending), headers=NDJSON
                )
            except ClusterUnreachable as exc:
                why = str(exc)
            else:
                if response.status_code == 413:
                    self._split(pending, deadline, result)
                    return
                if response.status_code == 200:
                    pending = self._read_items(pending, response, result)
                    why = "throttled or unavailable items"
                elif response.status_code in RETRY_REQUEST_STATUSES:
                    why = f"HTTP {response.status_code}"
                else:
                    raise ClusterError(f"bulk request of {len(pending)} documents refused", response)
            if not pending:
                return
            attempt += 1
            delay = self.backoff(attempt)
            if self._clock() + delay > deadline:
                raise RetryDeadlineExceeded(
                    f"gave up retrying {len(pending)} documents after {attempt} attempts ({why})"
                )
            log.warning(
                "retrying bulk write",
                extra={"documents": len(pending), "attempt": attempt, "delay": round(delay, 3),
                       "reason": why},
            )
            result.retried += len(pending)
            self._sleep(delay)

    def _split(self, pending: list[BulkItem], deadline: float, result: WriteResult) -> None:
        if len(pending) == 1:
            item = pending[0]
            result.failures.append(ItemFailure(
                item.index, item.doc_id, 413,
                f"document of {len(item.lines)} bytes is larger than the cluster accepts",
            ))
            return
        middle = len(pending) // 2
        self._send(pending[:middle], deadline, result)
        self._send(pending[middle:], deadline, result)

    @staticmethod
    def _read_items(pending: list[BulkItem], response: Any, result: WriteResult) -> list[BulkItem]:
        answers = response.json().get("items", [])
        if len(answers) != len(pending):
            raise ClusterError(
                f"bulk answer lists {len(answers)} items for {len(pending)} sent", response
            )
        retry: list[BulkItem] = []
        for item, answer in zip(pending, answers):
            outcome = next(iter(answer.values()))
            status = outcome.get("status", 0)
            if 200 <= status < 300:
                result.indexed += 1
            elif status in RETRY_ITEM_STATUSES:
                retry.append(item)
            else:
                result.failures.append(
                    ItemFailure(item.index, item.doc_id, status, outcome.get("error"))
                )
        return retry
