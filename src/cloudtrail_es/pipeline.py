"""The write path of a batch of files: events -> documents -> chunks -> requests -> outcomes.

Each stage hands the next an iterator, so only one chunk's events are held at a time.
Every event read settles exactly once, where it settles, on its own file: indexed as it
is, indexed in its degraded form (the cluster rejected the full one), or dead-lettered
with the reason. Whatever goes wrong while one file's events are read, decoded,
transformed or serialised fails that file alone; a failure of the cluster fails every
file of the batch not yet failed, since none of them is known to be complete.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Generator, Iterable, Iterator

from . import deadletter, transform
from .bulk import TOO_LARGE, BulkItem, BulkWriter, ItemOutcome, Position, bulk_item, chunks
from .decoded import OversizedEvent
from .engine import Engine
from .errors import AccountingError, FileFailed, LoaderError
from .refs import ObjectRef

log = logging.getLogger(__name__)

#: Longest ``_id`` the cluster accepts, in UTF-8 bytes.
MAX_ID_BYTES = 512

INDEXED, DEGRADED, DEAD, FAILED = "indexed", "degraded", "dead_lettered", "failed"


@dataclass
class FileResult:
    bucket: str
    key: str
    index: str
    events_read: int = 0
    indexed: int = 0
    degraded: int = 0
    dead_lettered: int = 0
    retried: int = 0
    #: Events whose eventID an earlier, different event of the file already had.
    duplicate_ids: int = 0
    seconds: float = 0.0
    dead_letter: str | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket, "key": self.key, "index": self.index,
            "events_read": self.events_read, "indexed": self.indexed, "degraded": self.degraded,
            "dead_lettered": self.dead_lettered, "retried": self.retried,
            "duplicate_ids": self.duplicate_ids, "seconds": round(self.seconds, 3),
            **({"dead_letter": self.dead_letter} if self.dead_letter else {}),
        }


def check_accounting(result: FileResult) -> None:
    accounted = result.indexed + result.degraded + result.dead_lettered
    if accounted != result.events_read:
        raise AccountingError(
            f"{result.events_read} events read but {accounted} accounted for "
            f"({result.indexed} indexed, {result.degraded} degraded, "
            f"{result.dead_lettered} dead-lettered)")


@dataclass(frozen=True)
class Settled:
    """Where one event ended: its fate, retries, and for a dead one the cluster's answer."""

    position: Position
    fate: str
    retries: int = 0
    outcome: ItemOutcome | None = None
    reason: str = ""
    event: Any = None
    error: BaseException | None = None


@dataclass
class FileLoad:
    """One file of a batch while it loads: its counts, dead letters, and failure if any."""

    ref: ObjectRef
    result: FileResult
    failure: FileFailed | None = None
    dead: list[dict[str, Any]] = field(default_factory=list)
    #: doc id -> fingerprint of the first document sent under it (duplicates told apart).
    seen: dict[str, int] = field(default_factory=dict)
    #: Ids to use instead of ``transform.document_id`` (a redrive keeps the recorded ones).
    ids: list[str] | None = None

    @classmethod
    def of(cls, ref: ObjectRef, index: str = "") -> "FileLoad":
        return cls(ref, FileResult(ref.bucket, ref.key, index))

    def fail(self, cause: BaseException, logged: bool = False) -> None:
        """The file fails with ``cause`` (its first failure wins); a surprise is logged with its
        trace, unless that was done already (``logged``)."""
        if self.failure is not None:
            return
        self.result.retried += getattr(cause, "retries", 0)
        if isinstance(cause, LoaderError):
            reason = str(cause)
        else:
            reason = f"{type(cause).__name__}: {cause}"
            if not logged:
                log.error("unexpected error", exc_info=cause,
                          extra={"bucket": self.ref.bucket, "key": self.ref.key})
        self.failure = FileFailed(self.ref.bucket, self.ref.key, reason)
        self.failure.__cause__ = cause

    def count(self, settled: Settled) -> None:
        self.result.retried += settled.retries
        if settled.fate == INDEXED:
            self.result.indexed += 1
        elif settled.fate == DEGRADED:
            self.result.degraded += 1
        elif settled.fate == DEAD:
            outcome = settled.outcome
            self.dead_letter(settled.reason, outcome.status if outcome else 0,
                             outcome.error if outcome else None,
                             outcome.item.index if outcome else self.result.index,
                             outcome.doc_id if outcome else "", settled.event)
        elif settled.error is not None:
            self.fail(settled.error)

    def dead_letter(self, reason: str, status: int, error: Any, index: str, doc_id: str,
                    event: dict[str, Any] | None, head: str | None = None) -> None:
        self.dead.append(deadletter.record(
            reason=reason, status=status, error=error, bucket=self.ref.bucket, key=self.ref.key,
            index=index, doc_id=doc_id, event=event, head=head))


def derived_id(doc_id: str, lines: bytes) -> str:
    """A deterministic id for a different event under an id already taken: id + content digest."""
    suffix = "~" + hashlib.sha256(lines).hexdigest()[:32]
    head = doc_id.encode("utf-8")[:MAX_ID_BYTES - len(suffix)].decode("utf-8", "ignore")
    return head + suffix


#: How a batch gets each file's events: (its place in the batch, the file) -> events.
EventsOf = Callable[[int, FileLoad], Iterable[Any]]


class Pipeline:
    """Writes the events of a batch of files through one writer, in shared ``_bulk`` chunks."""

    def __init__(self, writer: BulkWriter, engine: Engine,
                 max_event_bytes: int | None = None) -> None:
        self.writer = writer
        self.engine = engine
        self.max_event_bytes = max_event_bytes

    def load(self, files: list[FileLoad], events_of: EventsOf, deadline: float) -> None:
        """Every file's events written, and each one's outcome counted on its file."""
        events: dict[Position, Any] = {}  # the events of the documents not yet settled
        documents = self._documents(files, events_of, events)
        try:
            for chunk in chunks(documents, self.writer.max_docs, self.writer.max_bytes):
                for settled in self._deliver(chunk, events, deadline):
                    files[settled.position.file].count(settled)
                for item in chunk:
                    events.pop(item.position, None)
        except Exception as exc:  # the cluster's failure (or ours): no file is known complete
            if not isinstance(exc, LoaderError):
                log.error("unexpected error", exc_info=exc)
            for file in files:
                file.fail(exc, logged=True)
        finally:
            documents.close()

    def _documents(self, files: list[FileLoad], events_of: EventsOf,
                   events: dict[Position, Any]) -> Generator[BulkItem, None, None]:
        """Each file's documents in turn; a file whose events cannot all be had fails alone."""
        for number, file in enumerate(files):
            try:
                for n, event in enumerate(events_of(number, file)):
                    file.result.events_read += 1
                    item = self._document(file, Position(number, n), event)
                    if item is not None:
                        events[item.position] = event
                        yield item
            except Exception as exc:  # the error boundary of one file, whatever broke
                file.fail(exc)

    def _document(self, file: FileLoad, position: Position, event: Any) -> BulkItem | None:
        if isinstance(event, OversizedEvent):
            limit = f", limit {self.max_event_bytes}" if self.max_event_bytes else ""
            file.dead_letter(f"event too large ({event.size} bytes{limit})", 0, None,
                             file.result.index, event.event_id or "", None, event.head)
            return None
        doc_id = file.ids[position.event] if file.ids else transform.document_id(event)
        document = transform.document_for(event)
        item = bulk_item(file.result.index, doc_id, document, position,
                         self.engine.doc_type, self.engine.accepts_ids)
        if not self.engine.accepts_ids:
            return item
        return self._unique(file, item, document)

    def _unique(self, file: FileLoad, item: BulkItem, document: dict[str, Any]) -> BulkItem:
        """The item, or when an earlier different event of the file took its id, one with a
        derived id. An identical event (a redelivery) keeps the id: it lands as one document."""
        fingerprint = hash(item.lines)
        if file.seen.setdefault(item.doc_id, fingerprint) == fingerprint:
            return item
        doc_id = derived_id(item.doc_id, item.lines)
        if doc_id not in file.seen:  # else: a redelivery of the same different event
            file.seen[doc_id] = fingerprint
            file.result.duplicate_ids += 1
        return bulk_item(item.index, doc_id, document, item.position,
                         self.engine.doc_type, self.engine.accepts_ids)

    def _deliver(self, chunk: list[BulkItem], events: dict[Position, Any],
                 deadline: float) -> Iterator[Settled]:
        """Send a chunk; send the rejected documents again in degraded form; settle each."""
        first = list(self.writer.outcomes(chunk, deadline))
        degraded: list[BulkItem] = []
        unbuildable: dict[Position, BaseException] = {}
        for outcome in first:
            if not outcome.ok and outcome.status != TOO_LARGE:
                try:
                    degraded.append(self._degraded(outcome, events[outcome.item.position]))
                except Exception as exc:  # that event's file fails, alone
                    unbuildable[outcome.item.position] = exc
        second = {o.item.position: o for o in self.writer.outcomes(degraded, deadline)}
        for outcome in first:
            position = outcome.item.position
            if outcome.ok:
                yield Settled(position, INDEXED, outcome.retries)
            elif outcome.status == TOO_LARGE:
                yield Settled(position, DEAD, outcome.retries, outcome, outcome.reason, events[position])
            elif position in unbuildable:
                yield Settled(position, FAILED, error=unbuildable[position])
            elif second[position].ok:
                yield Settled(position, DEGRADED, outcome.retries + second[position].retries)
            else:
                again = second[position]
                yield Settled(position, DEAD, outcome.retries + again.retries, again,
                              f"{outcome.reason}; degraded form: {again.reason}", events[position])

    def _degraded(self, rejected: ItemOutcome, event: dict[str, Any]) -> BulkItem:
        item = rejected.item
        return bulk_item(item.index, item.doc_id,
                         transform.degraded_document_for(event, rejected.reason), item.position,
                         self.engine.doc_type, self.engine.accepts_ids)
