"""Bulk writes as a small pipeline: items -> chunks -> requests -> per-item outcomes.

Only what can succeed later is retried (whole-request 429/502/503/504 and
connection failures; items answered 429 or 503), and only the items that
failed, with capped exponential backoff and jitter, until a deadline. An
HTTP 200 is never taken to mean "all written": every item's status is read.
A request too large for the cluster (413) is split in halves; a document too
large on its own is handed back as a failure, like a rejected one.
"""
from __future__ import annotations

import gzip
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from .cluster import Cluster, ClusterUnreachable
from .errors import ClusterError
from .retry import Backoff

RETRY_REQUEST_STATUSES = frozenset({429, 502, 503, 504})
RETRY_ITEM_STATUSES = frozenset({429, 503})
TOO_LARGE = 413
THROTTLED = 429
#: gzip level 1 costs little CPU and already shrinks CloudTrail NDJSON ~8x.
COMPRESSION_LEVEL = 1


class ClusterBlocked(ClusterError):
    """The cluster or index refuses writes (read-only, disk flood stage): retrying items is futile."""


@dataclass(frozen=True)
class BulkItem:
    """One document ready to send: its action line and source, newline-terminated.

    ``position`` is the event's place in its file, so a failure can be traced back.
    """

    index: str
    doc_id: str
    lines: bytes
    position: int = 0


def bulk_item(index: str, doc_id: str, document: dict[str, Any], position: Any = 0,
              doc_type: str | None = None, with_id: bool = True) -> BulkItem:
    """``doc_type`` for engines with mapping types; ``with_id=False`` where ids are refused."""
    target = {"_index": index}
    if doc_type:
        target["_type"] = doc_type
    if with_id:
        target["_id"] = doc_id
    return BulkItem(index, doc_id, b"%s\n%s\n" % (dumps({"index": target}), dumps(document)),
                    position)


def _dumps_stdlib(document: dict[str, Any]) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


try:  # orjson serialises documents ~5x faster; the standard library stays the fallback
    import orjson

    def dumps(document: dict[str, Any]) -> bytes:
        """Compact UTF-8 JSON of a document (every leaf of ours is a string)."""
        try:
            return orjson.dumps(document)
        except TypeError:  # e.g. an integer beyond 64 bits, which orjson refuses
            return _dumps_stdlib(document)
except ImportError:  # pragma: no cover - exercised by the fallback test
    dumps = _dumps_stdlib


@dataclass(frozen=True)
class ItemFailure:
    item: BulkItem
    status: int
    error: Any

    @property
    def doc_id(self) -> str:
        return self.item.doc_id

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
    #: Retries per group (the first element of a tuple ``position``: the file of a batch).
    retried_by_group: Counter = field(default_factory=Counter)
    #: ``_bulk`` requests sent, and those answered 429 (as a whole or for some items).
    requests: int = 0
    throttled: int = 0


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
        compress: bool = True,
        backoff: Backoff | None = None,
    ) -> None:
        self.cluster = cluster
        self.max_docs = max_docs
        self.max_bytes = max_bytes
        self._compress = compress
        self._backoff = backoff or Backoff()

    def write(self, items: Iterable[BulkItem], deadline: float) -> WriteResult:
        """Send every item; ``deadline`` is on the backoff clock's scale (monotonic seconds)."""
        result = WriteResult()
        for chunk in chunks(items, self.max_docs, self.max_bytes):
            self._send(chunk, deadline, result)
        return result

    def _post(self, pending: list[BulkItem]) -> Any:
        body = b"".join(item.lines for item in pending)
        headers = {"Content-Type": "application/x-ndjson"}
        if self._compress:
            body = gzip.compress(body, COMPRESSION_LEVEL)
            headers["Content-Encoding"] = "gzip"
        return self.cluster.request("POST", "/_bulk", data=body, headers=headers)

    def _send(self, pending: list[BulkItem], deadline: float, result: WriteResult) -> None:
        attempt = 0
        while pending:
            result.requests += 1
            try:
                response = self._post(pending)
            except ClusterUnreachable as exc:
                why = str(exc)
            else:
                result.throttled += response.status_code == THROTTLED
                if response.status_code == TOO_LARGE:
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
            self._backoff.wait(attempt, deadline, f"{len(pending)} documents ({why})")
            result.retried += len(pending)
            result.retried_by_group.update(
                item.position[0] if isinstance(item.position, tuple) else 0 for item in pending)

    def _split(self, pending: list[BulkItem], deadline: float, result: WriteResult) -> None:
        if len(pending) == 1:
            item = pending[0]
            result.failures.append(ItemFailure(
                item, TOO_LARGE,
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
        throttled = False
        for item, answer in zip(pending, answers):
            outcome = next(iter(answer.values()))  # {"index": {...}} or {"create": {...}}
            status = outcome.get("status", 0)
            error = outcome.get("error")
            if 200 <= status < 300:
                result.indexed += 1
            elif isinstance(error, dict) and error.get("type") == "cluster_block_exception":
                raise ClusterBlocked(
                    f"writes to {item.index} are blocked: {error.get('reason')}", response)
            elif status in RETRY_ITEM_STATUSES:
                retry.append(item)
                throttled = throttled or status == THROTTLED
            else:
                result.failures.append(ItemFailure(item, status, error))
        result.throttled += throttled
        return retry
