"""Bulk writes as a small pipeline: items -> chunks -> requests -> one outcome per item.

Only what can succeed later is retried (``retry``'s classification: whole-request
429/502/503/504 and connection failures; items answered 429 or 503, or busy), and only the
items that failed, with capped exponential backoff and jitter, until a deadline. An
HTTP 200 is never taken to mean "all written": every item's status is read.
A request too large for the cluster (413) is split in halves; a document too
large on its own comes back as a failed outcome, like a rejected one.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from typing import Any, Iterable, Iterator, NamedTuple, Protocol, Sequence, TypeVar

from cloudtrail_es.core import gzipped
from cloudtrail_es.documents import transform
from cloudtrail_es.write.cluster import Cluster
from cloudtrail_es.core.errors import ClusterBlocked, ClusterError
from cloudtrail_es.core.retry import Backoff, Retry, retryable_item, retrying, transient

TOO_LARGE = 413
THROTTLED = 429
#: ``_bulk`` answering only each item's status and error: a tenth of the full answer's bytes
#: for the cluster to write and for us to parse. URL-encoded already, as SigV4 signs it.
COMPACT_BULK_PATH = "/_bulk?filter_path=items.%2A.status%2Citems.%2A.error"


class Position(NamedTuple):
    """Where an item's event came from: the file's place in its batch, the event's in its file."""

    file: int = 0
    event: int = 0


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs ~5x as much per event
class BulkItem:
    """One document ready to send: its action line and source, newline-terminated.

    ``position`` is the event's place in its batch, so an outcome can be traced back.
    """

    index: str
    doc_id: str
    lines: bytes
    position: Position = Position()
    #: Its text had to be repaired to be sent (``transform.utf8_json``): counted, not silent.
    repaired: bool = False


NO_POSITION = Position()


def bulk_item(index: str, doc_id: str, document: dict[str, Any], position: Position = NO_POSITION,
              doc_type: str | None = None, with_id: bool = True) -> BulkItem:
    """``doc_type`` for engines with mapping types; ``with_id=False`` where ids are refused.

    The action line is ``dumps({"index": {"_index": ..., "_type": ..., "_id": ...}})``, its
    constant start kept per index.
    """
    start = _ACTION_STARTS.get((index, doc_type, with_id))
    if start is None:
        start = _action_start(index, doc_type, with_id)
    repaired = False
    try:
        source = _orjson_dumps(document)  # type: ignore[misc]
    except TypeError:  # an integer beyond 64 bits, a lone surrogate, nesting past 254; or no orjson
        source, repaired = transform.utf8_json(document)
    if with_id:
        try:
            id_text = _orjson_dumps(doc_id)  # type: ignore[misc]
        except TypeError:
            id_text = _dumps_stdlib(doc_id)  # type: ignore[arg-type]
        return BulkItem(index, doc_id, b"%s%s}}\n%s\n" % (start, id_text, source), position, repaired)
    return BulkItem(index, doc_id, b"%s}}\n%s\n" % (start, source), position, repaired)


#: (index, doc_type, with_id) -> the action line up to its ``_id``'s value (or its end, less ``}}``).
_ACTION_STARTS: dict[tuple[str, str | None, bool], bytes] = {}


def _action_start(index: str, doc_type: str | None, with_id: bool) -> bytes:
    target: dict[str, Any] = {"_index": index}
    if doc_type:
        target["_type"] = doc_type
    if with_id:
        target["_id"] = ""
    whole = dumps({"index": target})
    start = whole[:-len(b'""}}')] if with_id else whole[:-len(b"}}")]
    if len(_ACTION_STARTS) < 10_000:
        _ACTION_STARTS[(index, doc_type, with_id)] = start
    return start


def _dumps_stdlib(document: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON at any depth; lone surrogates (not UTF-8) become U+FFFD, noted.

    A repaired document says so in ``repaired_reason`` (``transform.REPAIRED_REASON``).
    """
    if isinstance(document, dict):
        return transform.utf8_json(document)[0]
    return transform.LONE_SURROGATE.sub("\ufffd", transform.json_text(document)).encode("utf-8")


try:  # orjson serialises documents ~5x faster; the standard library stays the fallback
    from orjson import dumps as _orjson_dumps

    def dumps(document: dict[str, Any]) -> bytes:
        """Compact UTF-8 JSON of a document (every leaf of ours is a string)."""
        try:
            return _orjson_dumps(document)
        except TypeError:  # an integer beyond 64 bits, a lone surrogate, nesting past 254
            return _dumps_stdlib(document)
    from orjson import loads as _json
except ImportError:  # pragma: no cover - exercised by the fallback test
    dumps = _dumps_stdlib
    _json = json.loads  # type: ignore[assignment]

    def _orjson_dumps(document: Any) -> bytes:  # type: ignore[misc]
        raise TypeError("orjson is not installed")


class ItemOutcome(NamedTuple):
    """What became of one item: the cluster's status (and error) and how often it was retried."""

    item: BulkItem
    status: int
    error: Any = None
    retries: int = 0

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def doc_id(self) -> str:
        return self.item.doc_id

    @property
    def reason(self) -> str:
        if isinstance(self.error, dict):
            return f"{self.error.get('type')}: {self.error.get('reason')}"
        return str(self.error)


#: ``ItemOutcome((item, status, error, retries))`` without a Python frame (one per document).
_new_outcome = partial(tuple.__new__, ItemOutcome)

@dataclass
class Traffic:
    """``_bulk`` requests sent, and those answered 429 (as a whole or for some items)."""

    requests: int = 0
    throttled: int = 0


class _Sized(Protocol):
    @property
    def lines(self) -> bytes: ...


S = TypeVar("S", bound=_Sized)


def chunks(items: Iterable[S], max_docs: int, max_bytes: int) -> Iterator[list[S]]:
    """Groups of at most ``max_docs`` items and ``max_bytes`` bytes (a bigger item goes alone).

    The one chunker: the processor's stream of documents and the writer's requests both
    go through it, so a chunk the processor hands on is sent as one request.
    """
    chunk: list[S] = []
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
        compact_answers: bool = True,
    ) -> None:
        self.cluster = cluster
        self.max_docs = max_docs
        self.max_bytes = max_bytes
        self._compress = compress
        self._path = COMPACT_BULK_PATH if compact_answers else "/_bulk"
        self._backoff = backoff or Backoff()

    def outcomes(self, items: Iterable[BulkItem], deadline: float,
                 traffic: Traffic | None = None) -> Iterator[ItemOutcome]:
        """One outcome per item, in request order (retried items come last).

        ``deadline`` is on the backoff clock's scale (monotonic seconds). Raises when the
        cluster refuses a request as a whole, blocks writes or stays throttled past it.
        The requests sent (and those throttled) are added to ``traffic``.
        """
        traffic = traffic if traffic is not None else Traffic()
        for chunk in chunks(items, self.max_docs, self.max_bytes):
            yield from self._send(chunk, deadline, 0, traffic)

    def _post(self, pending: Sequence[BulkItem]) -> Any:
        body = b"".join(item.lines for item in pending)
        headers = {"Content-Type": "application/x-ndjson"}
        if self._compress:
            body = gzipped.compress(body)
            headers["Content-Encoding"] = "gzip"
        return self.cluster.request("POST", self._path, data=body, headers=headers)

    def _counted_post(self, pending: Sequence[BulkItem], traffic: Traffic) -> Any:
        traffic.requests += 1
        response = self._post(pending)
        traffic.throttled += response.status_code == THROTTLED
        return response

    def _send(self, chunk: list[BulkItem], deadline: float, retried: int,
              traffic: Traffic) -> list[ItemOutcome]:
        """The outcomes of one chunk; ``retried``: how often its items were retried already."""
        done: list[ItemOutcome] = []
        pending = chunk

        def attempt(retries: int) -> list[ItemOutcome] | Retry:
            nonlocal pending
            response = transient(lambda: self._counted_post(pending, traffic))
            if isinstance(response, Retry):
                return Retry(response.why, f"{len(pending)} documents")
            if response.status_code == TOO_LARGE:
                return done + self._split(pending, deadline, retried + retries, traffic)
            if response.status_code != 200:
                raise ClusterError(f"bulk request of {len(pending)} documents refused", response)
            pending = self._read_items(pending, response, retried + retries, done, traffic)
            if pending:
                return Retry("throttled or unavailable items", f"{len(pending)} documents")
            return done

        return retrying(attempt, self._backoff, deadline, "bulk request")

    def _split(self, pending: list[BulkItem], deadline: float, retried: int,
               traffic: Traffic) -> list[ItemOutcome]:
        if len(pending) == 1:
            item = pending[0]
            return [ItemOutcome(item, TOO_LARGE,
                                f"document of {len(item.lines)} bytes is larger than the cluster accepts",
                                retried)]
        middle = len(pending) // 2
        return (self._send(pending[:middle], deadline, retried, traffic)
                + self._send(pending[middle:], deadline, retried, traffic))

    @staticmethod
    def _read_items(pending: list[BulkItem], response: Any, retries: int,
                    done: list[ItemOutcome], traffic: Traffic) -> list[BulkItem]:
        """Adds the settled items' outcomes to ``done``; returns the items to retry (a response
        with an item answered 429 counts as throttled in ``traffic``)."""
        answers = _json(response.content).get("items", [])
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
            if error is None and 200 <= status < 300:  # nearly every item: kept cheap
                done.append(_new_outcome((item, status, None, retries)))
                continue
            if isinstance(error, dict) and error.get("type") == "cluster_block_exception":
                raise ClusterBlocked(
                    f"writes to {item.index} are blocked: {error.get('reason')}", response)
            if retryable_item(status, error):
                retry.append(item)
                throttled = throttled or status == THROTTLED
            else:
                done.append(ItemOutcome(item, status, error, retries))
        traffic.throttled += throttled
        return retry
