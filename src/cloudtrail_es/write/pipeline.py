"""The write path of a batch of files: events -> documents -> chunks -> requests -> outcomes.

Each stage hands the next an iterator, so only one chunk's events are held at a time.
Every event read settles exactly once, where it settles, on its own file: indexed as it
is, indexed in its degraded form (the cluster rejected the full one), dead-lettered
with the reason, or filtered out by an exclusion rule (``filters``: never transformed
nor sent). Whatever goes wrong while one file's events are read, decoded,
transformed or serialised fails that file alone; a failure of the cluster fails every
file of the batch not yet failed, since none of them is known to be complete.
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Generator, Iterable, Iterator, NamedTuple

from cloudtrail_es.core import results
from cloudtrail_es.core.results import FileResult
from cloudtrail_es.write import deadletter, fieldlimit
from cloudtrail_es.documents import transform
from cloudtrail_es.write.bulk import (TOO_LARGE, BulkItem, BulkWriter, ItemOutcome, Position, Traffic,
                                      bulk_item, chunks)
from cloudtrail_es.read.decoder import OversizedEvent
from cloudtrail_es.write.engine import Engine
from cloudtrail_es.core.errors import FileFailed, LoaderError
from cloudtrail_es.core.filters import EventFilter
from cloudtrail_es.core.refs import ObjectRef

log = logging.getLogger(__name__)

#: Longest ``_id`` the cluster accepts, in UTF-8 bytes.
MAX_ID_BYTES = 512

DEGRADED, DEAD, FAILED = "degraded", "dead_lettered", "failed"


class Settled(NamedTuple):
    """Where one event ended: its fate, retries, and for a dead one the cluster's answer."""

    position: Position
    fate: str
    retries: int = 0
    outcome: ItemOutcome | None = None
    reason: str = ""
    event: Any = None
    error: BaseException | None = None
    #: The document that landed had its text repaired (``BulkItem.repaired``).
    repaired: bool = False


@dataclass
class FileLoad:
    """One file of a batch while it loads: its counts, dead letters, and failure if any."""

    ref: ObjectRef
    result: FileResult
    failure: FileFailed | None = None
    #: Its dead-letter records, spooled out as each is decided (memory flat however many).
    dead: deadletter.Spool = field(default_factory=deadletter.Spool)
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
        """One event settled otherwise than indexed as it is (``Pipeline._deliver`` counts those)."""
        self.result.retried += settled.retries
        self.result.repaired += settled.repaired
        if settled.fate == DEGRADED:
            self.result.degraded += 1
            self.count_field_limit(settled.outcome)
        elif settled.fate == DEAD:
            outcome = settled.outcome
            self.dead_letter(settled.reason, outcome.status if outcome else 0,
                             outcome.error if outcome else None,
                             outcome.item.index if outcome else self.result.index,
                             outcome.doc_id if outcome else "", settled.event)
        elif settled.error is not None:
            self.fail(settled.error)

    def count_field_limit(self, rejected: ItemOutcome | None) -> None:
        """A degraded event whose full form hit the index's total-fields limit: counted apart,
        and the index warned about once (``fieldlimit``)."""
        if rejected is not None and fieldlimit.is_field_limit(rejected.error):
            self.result.degraded_field_limit += 1
            fieldlimit.warn_once(rejected.item.index, rejected.error)

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


#: ``Position((file, event))`` without a Python frame (one per event).
_new_position = partial(tuple.__new__, Position)

#: How a batch gets each file's events: (its place in the batch, the file) -> events.
EventsOf = Callable[[int, FileLoad], Iterable[Any]]


class Pipeline:
    """Writes the events of a batch of files through one writer, in shared ``_bulk`` chunks."""

    def __init__(self, writer: BulkWriter | None, engine: Engine,
                 max_event_bytes: int | None = None,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.writer = writer  # None: documents only, sent nowhere (an export)
        self.engine = engine
        self._doc_type = engine.doc_type  # a property: read once, not per event
        self.max_event_bytes = max_event_bytes
        self._wall_clock = wall_clock

    def load(self, files: list[FileLoad], events_of: EventsOf, deadline: float,
             exclude: EventFilter | None = None) -> None:
        """Every file's events written, and each one's outcome counted on its file.

        An event ``exclude`` drops is counted ``filtered`` on its file, never transformed or sent.
        """
        if self.writer is None:
            raise TypeError("this pipeline has no writer: it makes documents, never sends them")
        events: dict[Position, Any] = {}  # the events of the documents not yet settled
        documents = self._documents(files, events_of, events, exclude)
        try:
            for chunk in chunks(documents, self.writer.max_docs, self.writer.max_bytes):
                traffic = Traffic()
                for settled in self._deliver(chunk, files, events, deadline, traffic):
                    files[settled.position.file].count(settled)
                self._count_traffic(files, chunk, traffic)
                for item in chunk:
                    events.pop(item.position, None)
        except Exception as exc:  # the cluster's failure (or ours): no file is known complete
            if not isinstance(exc, LoaderError):
                log.error("unexpected error", exc_info=exc)
            for file in files:
                file.fail(exc, logged=True)
        finally:
            documents.close()

    def documents(self, files: list[FileLoad], events_of: EventsOf,
                  exclude: EventFilter | None = None) -> Iterator[BulkItem]:
        """The documents ``load`` would send for these files, in its order, under the ids it
        would give them (a different event under an id already taken gets the derived one);
        sent nowhere. An event too large is dead-lettered on its file as a load does; a file
        that cannot be read fails alone (``file.failure``). The export's one code path."""
        events: dict[Position, Any] = {}
        documents = self._documents(files, events_of, events, exclude)
        try:
            for item in documents:
                events.pop(item.position, None)
                yield item
        finally:
            documents.close()

    def _count_traffic(self, files: list[FileLoad], chunk: list[BulkItem], traffic: Traffic) -> None:
        """A chunk's requests count on the file that opened it; every file in it is searchable now."""
        opener = files[chunk[0].position.file].result
        opener.bulk_requests += traffic.requests
        opener.throttled += traffic.throttled
        answered_at = self._wall_clock()
        for number in {item.position.file for item in chunk}:
            files[number].result.searchable_at = answered_at

    def _documents(self, files: list[FileLoad], events_of: EventsOf, events: dict[Position, Any],
                   exclude: EventFilter | None) -> Generator[BulkItem, None, None]:
        """Each file's documents in turn; a file whose events cannot all be had fails alone."""
        for number, file in enumerate(files):
            try:
                for n, event in enumerate(events_of(number, file)):
                    file.result.events_read += 1
                    if exclude and type(event) is dict and self._excluded(file.result, event, exclude):
                        continue
                    item = self._document(file, _new_position((number, n)), event)
                    if item is not None:
                        events[item.position] = event
                        yield item
            except Exception as exc:  # the error boundary of one file, whatever broke
                file.fail(exc)

    @staticmethod
    def _excluded(result: FileResult, event: dict[str, Any], exclude: EventFilter) -> bool:
        rule = exclude.excluding(event)
        if rule is None:
            return False
        result.filtered += 1
        result.filtered_by_rule[rule.text] += 1
        return True

    def _document(self, file: FileLoad, position: Position, event: Any) -> BulkItem | None:
        if isinstance(event, OversizedEvent):
            limit = f", limit {self.max_event_bytes}" if self.max_event_bytes else ""
            file.dead_letter(f"event too large ({event.size} bytes{limit})", 0, None,
                             file.result.index, event.event_id or "", None, event.head)
            return None
        results.note_event_time(file.result, event)
        doc_id = file.ids[position.event] if file.ids else transform.document_id(event)
        document = transform.document_for(event)
        item = bulk_item(file.result.index, doc_id, document, position,
                         self._doc_type, self.engine.accepts_ids)
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
                         self._doc_type, self.engine.accepts_ids)

    def _deliver(self, chunk: list[BulkItem], files: list[FileLoad], events: dict[Position, Any],
                 deadline: float, traffic: Traffic) -> Iterator[Settled]:
        """Send a chunk; send the rejected documents again in degraded form; settle each.

        A document indexed as it is is counted on its file here, without a ``Settled`` (the
        common case, kept cheap); every other outcome is yielded.
        """
        assert self.writer is not None  # load() refuses to run without one
        first = list(self.writer.outcomes(chunk, deadline, traffic))
        degraded: list[BulkItem] = []
        unbuildable: dict[Position, BaseException] = {}
        for outcome in first:
            if not outcome.ok and outcome.status != TOO_LARGE:
                try:
                    degraded.append(self._degraded(outcome, events[outcome.item.position]))
                except Exception as exc:  # that event's file fails, alone
                    unbuildable[outcome.item.position] = exc
        second = {o.item.position: o for o in self.writer.outcomes(degraded, deadline, traffic)}
        for outcome in first:
            item = outcome.item
            position = item.position
            if 200 <= outcome.status < 300:  # outcome.ok, inlined
                result = files[position.file].result
                result.indexed += 1
                result.retried += outcome.retries
                result.repaired += item.repaired
            elif outcome.status == TOO_LARGE:
                yield Settled(position, DEAD, outcome.retries, outcome, outcome.reason, events[position])
            elif position in unbuildable:
                yield Settled(position, FAILED, error=unbuildable[position])
            elif second[position].ok:
                yield Settled(position, DEGRADED, outcome.retries + second[position].retries,
                              outcome, repaired=second[position].item.repaired)
            else:
                again = second[position]
                yield Settled(position, DEAD, outcome.retries + again.retries, again,
                              f"{outcome.reason}; degraded form: {again.reason}", events[position])

    def _degraded(self, rejected: ItemOutcome, event: dict[str, Any]) -> BulkItem:
        item = rejected.item
        return bulk_item(item.index, item.doc_id,
                         transform.degraded_document_for(event, rejected.reason), item.position,
                         self._doc_type, self.engine.accepts_ids)
