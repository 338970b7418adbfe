"""The write path of a batch of files: events -> documents -> chunks -> requests -> outcomes.

Each stage hands the next an iterator. A chunk is sent from a thread of its own while the
next one is built (at most one chunk ahead: two chunks' events are held at a time); before
it goes, the fields its documents bring that their index lacks are declared (``fields``).
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
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Generator, Iterable, Iterator, NamedTuple, Protocol

from cloudtrail_es.core import results
from cloudtrail_es.core.results import FileResult
from cloudtrail_es.write import deadletter, fieldlimit
from cloudtrail_es.documents import transform
from cloudtrail_es.documents.ecs import ingested_text
from cloudtrail_es.write.bulk import (TOO_LARGE, BulkItem, BulkWriter, ItemOutcome, Position, Traffic,
                                      bulk_item, chunks)
from cloudtrail_es.read.decoder import OversizedEvent
from cloudtrail_es.write.engine import Engine
from cloudtrail_es.write.fields import Fields, Mapped, scan
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
    #: ``event.ingested`` of the file's documents: one time per file, so that its documents
    #: (and a redelivered event's) stay alike; set when its first document is built.
    ingested: str | None = None
    #: ECS fields its index cannot take (``IndexCreator.withheld``), left out of its documents;
    #: those of its events before ``withheld_from`` were built before that was known.
    withheld: frozenset[str] = frozenset()
    withheld_from: int = 0

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


def _without_ingested(document: dict[str, Any]) -> dict[str, Any]:
    ecs_event = document.get("event")
    if type(ecs_event) is not dict or "ingested" not in ecs_event:
        return document
    return {**document, "event": {k: v for k, v in ecs_event.items() if k != "ingested"}}


#: ``Position((file, event))`` without a Python frame (one per event).
_new_position = partial(tuple.__new__, Position)

#: How a batch gets each file's events: (its place in the batch, the file) -> events.
EventsOf = Callable[[int, FileLoad], Iterable[Any]]


class Indexes(Protocol):
    """Where the pipeline's documents go: what each index has mapped, and making it ready."""

    def known(self, index: str) -> Mapped: ...

    def prepare(self, index: str, fields: Fields | None, deadline: float) -> None:
        """Create ``index`` (with ``fields``) or declare ``fields`` in it; check it takes writes."""

    def withheld(self, index: str) -> frozenset[str]:
        """The ECS fields ``index`` cannot take (an index made by an earlier version holds them
        otherwise): known once it is prepared; left out of its documents."""


class _Sent(NamedTuple):
    """A chunk in flight: its first outcomes to come, its traffic."""

    chunk: list[BulkItem]
    outcomes: "Future[tuple[list[ItemOutcome], float]]"
    traffic: Traffic


class Pipeline:
    """Writes the events of a batch of files through one writer, in shared ``_bulk`` chunks."""

    def __init__(self, writer: BulkWriter | None, engine: Engine,
                 max_event_bytes: int | None = None,
                 wall_clock: Callable[[], float] = time.time,
                 indexes: Indexes | None = None) -> None:
        self.writer = writer  # None: documents only, sent nowhere (an export)
        self.indexes = indexes
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
        brought: dict[str, Fields] = {}  # index -> the fields of documents built, not yet declared
        prepared: set[str] = set()
        documents = self._documents(files, events_of, events, exclude, brought)
        sender = ThreadPoolExecutor(1, thread_name_prefix="bulk")
        sent: _Sent | None = None
        try:
            for chunk in chunks(documents, self.writer.max_docs, self.writer.max_bytes):
                if sent is not None:  # the chunk before, sent while this one was built
                    self._settle(sent, files, events, deadline)
                    sent = None
                chunk = self._prepare(chunk, files, brought, prepared, deadline, events)
                if chunk:
                    traffic = Traffic()
                    sent = _Sent(chunk, sender.submit(self._first_outcomes, chunk, deadline, traffic),
                                 traffic)
            if sent is not None:
                self._settle(sent, files, events, deadline)
                sent = None
            self._prepare_unwritten(files, prepared, deadline)
        except Exception as exc:  # the cluster's failure (or ours): no file is known complete
            if not isinstance(exc, LoaderError):
                log.error("unexpected error", exc_info=exc)
            for file in files:
                file.fail(exc, logged=True)
        finally:
            documents.close()
            sender.shutdown(wait=True)

    def documents(self, files: list[FileLoad], events_of: EventsOf,
                  exclude: EventFilter | None = None) -> Iterator[BulkItem]:
        """The documents ``load`` would send for these files, in its order, under the ids it
        would give them (a different event under an id already taken gets the derived one);
        sent nowhere. An event too large is dead-lettered on its file as a load does; a file
        that cannot be read fails alone (``file.failure``). The export's one code path."""
        events: dict[Position, Any] = {}
        documents = self._documents(files, events_of, events, exclude, {})
        try:
            for item in documents:
                events.pop(item.position, None)
                yield item
        finally:
            documents.close()

    def _first_outcomes(self, chunk: list[BulkItem], deadline: float,
                        traffic: Traffic) -> tuple[list[ItemOutcome], float]:
        """The chunk sent (in the sender's thread): its outcomes, and when they were answered."""
        assert self.writer is not None  # load() refuses to run without one
        outcomes = list(self.writer.outcomes(chunk, deadline, traffic))
        return outcomes, self._wall_clock()

    def _settle(self, sent: _Sent, files: list[FileLoad], events: dict[Position, Any],
                deadline: float) -> None:
        first, answered_at = sent.outcomes.result()
        for settled in self._deliver(first, files, events, deadline, sent.traffic):
            files[settled.position.file].count(settled)
        self._count_traffic(files, sent.chunk, sent.traffic, answered_at)
        for item in sent.chunk:
            events.pop(item.position, None)

    def _prepare(self, chunk: list[BulkItem], files: list[FileLoad], brought: dict[str, Fields],
                 prepared: set[str], deadline: float, events: dict[Position, Any]) -> list[BulkItem]:
        """Each index of the chunk ready for it, with the fields the chunk brings declared.

        An index that cannot be made ready fails the files of its documents, alone; their
        documents are left out of the chunk. Documents built before their index was found to
        withhold some ECS fields (one made by an earlier version) are built again without them.
        """
        if self.indexes is None:
            return chunk
        failed = False
        for index in {item.index for item in chunk}:
            try:
                fields = brought.get(index)
                self.indexes.prepare(index, fields, deadline)
                prepared.add(index)
                if fields:
                    fields.clear()  # in place: the documents still being built add to it
                self._note_withheld(index, self.indexes.withheld(index), files, events)
            except Exception as exc:  # the error boundary of the files writing to that index
                failed = True
                for number in {item.position.file for item in chunk if item.index == index}:
                    files[number].fail(exc)
        if any(file.withheld for file in files):
            chunk = [self._rebuilt(item, files[item.position.file], events[item.position])
                     if item.position.event < files[item.position.file].withheld_from else item
                     for item in chunk]
        if failed or any(file.failure is not None for file in files):
            return [item for item in chunk if files[item.position.file].failure is None]
        return chunk

    @staticmethod
    def _note_withheld(index: str, withheld: frozenset[str], files: list[FileLoad],
                       events: dict[Position, Any]) -> None:
        """Files of ``index`` learn what it withholds; their documents built before (this chunk's
        and the next one's first, all still in ``events``) are to be built again."""
        for number, file in enumerate(files):
            if file.result.index == index and file.withheld != withheld:
                file.withheld = withheld
                file.withheld_from = 1 + max((p.event for p in events if p.file == number), default=-1)

    def _rebuilt(self, item: BulkItem, file: FileLoad, event: Any) -> BulkItem:
        """``item``'s document made again with its file's ``withheld`` fields left out (same id)."""
        return bulk_item(item.index, item.doc_id,
                         transform.document_for(event, file.ingested, file.withheld), item.position,
                         self._doc_type, self.engine.accepts_ids)

    def _prepare_unwritten(self, files: list[FileLoad], prepared: set[str], deadline: float) -> None:
        """Files none of whose events were sent have their index made ready all the same."""
        if self.indexes is None:
            return
        for file in files:
            index = file.result.index
            if file.failure is None and index and index not in prepared:
                try:
                    self.indexes.prepare(index, None, deadline)
                    prepared.add(index)
                except Exception as exc:
                    file.fail(exc)

    @staticmethod
    def _count_traffic(files: list[FileLoad], chunk: list[BulkItem], traffic: Traffic,
                       answered_at: float) -> None:
        """A chunk's requests count on the file that opened it; every file in it is searchable
        from when it was answered."""
        opener = files[chunk[0].position.file].result
        opener.bulk_requests += traffic.requests
        opener.throttled += traffic.throttled
        for number in {item.position.file for item in chunk}:
            files[number].result.searchable_at = answered_at

    def _documents(self, files: list[FileLoad], events_of: EventsOf, events: dict[Position, Any],
                   exclude: EventFilter | None,
                   brought: dict[str, Fields]) -> Generator[BulkItem, None, None]:
        """Each file's documents in turn; a file whose events cannot all be had fails alone.

        The fields each document brings that its index lacks are added to ``brought``.
        """
        for number, file in enumerate(files):
            if file.failure is not None:
                continue
            try:
                if file.ingested is None:
                    file.ingested = ingested_text(self._wall_clock())
                file_events = events_of(number, file)
                new = known = None
                if self.indexes is not None:
                    known = self.indexes.known(file.result.index)
                    new = brought.setdefault(file.result.index, {})
                for n, event in enumerate(file_events):
                    if file.failure is not None:  # its index could not be made ready
                        break
                    file.result.events_read += 1
                    if exclude and type(event) is dict and self._excluded(file.result, event, exclude):
                        continue
                    item = self._document(file, _new_position((number, n)), event, known, new)
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

    def _document(self, file: FileLoad, position: Position, event: Any,
                  known: Mapped | None = None, new: Fields | None = None) -> BulkItem | None:
        if isinstance(event, OversizedEvent):
            limit = f", limit {self.max_event_bytes}" if self.max_event_bytes else ""
            file.dead_letter(f"event too large ({event.size} bytes{limit})", 0, None,
                             file.result.index, event.event_id or "", None, event.head)
            return None
        results.note_event_time(file.result, event)
        doc_id = file.ids[position.event] if file.ids else transform.document_id(event)
        document = transform.document_for(event, file.ingested, file.withheld)
        if known is not None:
            scan(document, known, new)  # type: ignore[arg-type]
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
        # Derived from the content without its ``event.ingested``: the same id on every run.
        doc_id = derived_id(item.doc_id, bulk_item(item.index, item.doc_id,
                                                   _without_ingested(document)).lines)
        if doc_id not in file.seen:  # else: a redelivery of the same different event
            file.seen[doc_id] = fingerprint
            file.result.duplicate_ids += 1
        return bulk_item(item.index, doc_id, document, item.position,
                         self._doc_type, self.engine.accepts_ids)

    def _deliver(self, first: list[ItemOutcome], files: list[FileLoad], events: dict[Position, Any],
                 deadline: float, traffic: Traffic) -> Iterator[Settled]:
        """A sent chunk's outcomes: the rejected documents sent again in degraded form; each settled.

        A document indexed as it is is counted on its file here, without a ``Settled`` (the
        common case, kept cheap); every other outcome is yielded.
        """
        degraded: list[BulkItem] = []
        unbuildable: dict[Position, BaseException] = {}
        for outcome in first:
            if not outcome.ok and outcome.status != TOO_LARGE:
                try:
                    degraded.append(self._degraded(outcome, events[outcome.item.position],
                                                   files[outcome.item.position.file]))
                except Exception as exc:  # that event's file fails, alone
                    unbuildable[outcome.item.position] = exc
        assert self.writer is not None  # load() refuses to run without one
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

    def _degraded(self, rejected: ItemOutcome, event: dict[str, Any], file: FileLoad) -> BulkItem:
        item = rejected.item
        document = transform.degraded_document_for(event, rejected.reason, file.ingested,
                                                   file.withheld)
        return bulk_item(item.index, item.doc_id, document, item.position,
                         self._doc_type, self.engine.accepts_ids)
