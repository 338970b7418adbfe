"""Load one CloudTrail log file: read, decode, transform, write; and a run over many.

Every event read ends in exactly one of four places, and the counts are
checked: indexed as it is; indexed in its degraded form (the cluster rejected
the full one); in the dead letter with the cluster's reason; or filtered out by
an exclusion rule (``filters.py``), never sent. When the dead letter cannot take
them either, the file fails.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

from . import deadletter, keys, metrics, transform
from .bulk import BulkItem, BulkWriter, ItemFailure, bulk_item
from .cluster import Cluster, create_cluster
from .config import Settings
from .engine import Engine, detect
from .errors import BadLogFile, FileFailed, LoaderError
from .filters import EventFilter, parse_rules
from .health import WriteGate
from .indexes import IndexCreator
from .retry import Backoff
from .sources import S3Source, SourceError, iter_events

log = logging.getLogger(__name__)

#: How many dead-lettered documents a file's error line names (all are counted).
FAILURES_LOGGED = 10
#: Files of a batch fetched at once, shared by all workers of a process.
READ_THREADS = 16


class Source(Protocol):
    def read(self, bucket: str, key: str) -> bytes: ...


class AccountingError(LoaderError):
    """Events read and events accounted for differ: a bug, never to be ignored."""


@dataclass(frozen=True)
class ObjectRef:
    """A CloudTrail log file: S3 bucket and key, or a local root directory and relative path."""

    bucket: str
    key: str
    size: int = field(default=0, compare=False)


@dataclass
class Outcome:
    """Where the events of one batch went."""

    indexed: int = 0
    degraded: int = 0
    retried: int = 0
    undeliverable: list[dict[str, Any]] = field(default_factory=list)


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
    seconds: float = 0.0
    dead_letter: str | None = None
    # metrics: events dropped by an exclusion rule; _bulk requests (and those answered 429)
    # of the chunks this file's events opened; lag inputs (see metrics.py)
    filtered: int = 0
    filtered_by_rule: Counter = field(default_factory=Counter)
    bulk_requests: int = 0
    throttled: int = 0
    newest_event_time: str = ""
    object_modified: float | None = None
    searchable_at: float | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket, "key": self.key, "index": self.index,
            "events_read": self.events_read, "indexed": self.indexed, "degraded": self.degraded,
            "dead_lettered": self.dead_lettered, "filtered": self.filtered, "retried": self.retried,
            "bulk_requests": self.bulk_requests, "throttled": self.throttled,
            "seconds": round(self.seconds, 3),
            **({"dead_letter": self.dead_letter} if self.dead_letter else {}),
            **({"filtered_by_rule": dict(self.filtered_by_rule)} if self.filtered else {}),
            **metrics.lags(self),
        }


class Processor:
    def __init__(self, source: Source, writer: BulkWriter, indexes: IndexCreator,
                 gate: WriteGate | None = None, dead_letters: deadletter.DeadLetters | None = None,
                 index_prefix: str = "cloudtrail",
                 clock: Callable[[], float] = time.monotonic, engine: Engine | None = None,
                 exclude: EventFilter | None = None) -> None:
        self.source = source
        self.exclude = exclude or EventFilter()
        self.engine = engine or Engine("opensearch")
        self.cluster = writer.cluster
        self._writer = writer
        self._indexes = indexes
        self._gate = gate
        self.dead_letters = dead_letters
        self.index_prefix = index_prefix
        self._clock = clock
        self._readers: ThreadPoolExecutor | None = None
        self._readers_lock = threading.Lock()

    def process_file(self, bucket: str, key: str, deadline: float) -> FileResult:
        """Load one file. Raises FileFailed, naming the object, when it cannot be loaded."""
        [outcome] = self.process_files([ObjectRef(bucket, key)], deadline)
        if isinstance(outcome, FileFailed):
            raise outcome
        return outcome

    def process_files(self, refs: list[ObjectRef], deadline: float) -> list[FileResult | FileFailed]:
        """Load several files together: their events share ``_bulk`` requests.

        Events stream from each file into chunks of ``bulk_max_docs`` / ``bulk_max_bytes``;
        only one chunk's events are held at a time. A file that cannot be read or decoded
        fails alone; a cluster failure (deadline passed, write block...) fails every file
        of the batch not yet failed, since none of them is known to be complete.
        """
        started = self._clock()
        files = [_File(ref, FileResult(ref.bucket, ref.key,
                                       keys.index_name_for(ref.key, self.index_prefix)))
                 for ref in refs]
        chunk = _Chunk()
        contents = self._read_all(refs)
        try:
            for group, (file, data) in enumerate(zip(files, contents)):
                try:
                    if isinstance(data, Exception):
                        raise data
                    file.result.object_modified = getattr(data, "last_modified", None)
                    self._indexes.ensure(file.result.index, deadline)
                    if self._gate:
                        self._gate.check(file.result.index, deadline)
                    for n, event in enumerate(iter_events(data)):
                        file.result.events_read += 1
                        excluded_by = self.exclude.excluding(event) if self.exclude else None
                        if excluded_by is not None:
                            file.result.filtered += 1
                            file.result.filtered_by_rule[excluded_by.text] += 1
                            continue
                        metrics.note_event_time(file.result, event)
                        chunk.add(self._item(file.result.index, event, (group, n)), event)
                        if chunk.full(self._writer.max_docs, self._writer.max_bytes):
                            self._deliver(chunk, files, deadline)
                            chunk = _Chunk()
                except (SourceError, BadLogFile) as exc:
                    file.failure = _failure(file.ref, exc)
            self._deliver(chunk, files, deadline)
        except LoaderError as exc:
            for file in files:
                file.failure = file.failure or _failure(file.ref, exc)
        return [self._finish(file, (self._clock() - started) / len(files)) for file in files]

    def _read_all(self, refs: list[ObjectRef]) -> list[bytes | Exception]:
        """Every file's bytes (or why not), fetched concurrently: a GET costs more than a parse."""
        def read(ref: ObjectRef) -> bytes | Exception:
            try:
                return self.source.read(ref.bucket, ref.key)
            except SourceError as exc:
                return exc

        if len(refs) == 1:
            return [read(refs[0])]
        with self._readers_lock:
            if self._readers is None:
                self._readers = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="read")
        return list(self._readers.map(read, refs))

    def load_events(self, index: str, events: list[dict[str, Any]], deadline: float,
                    bucket: str = "", key: str = "") -> Outcome:
        """Write events to ``index``: full form first, degraded form for the rejected ones."""
        self._indexes.ensure(index, deadline)
        if self._gate:
            self._gate.check(index, deadline)
        file = _File(ObjectRef(bucket, key), FileResult(bucket, key, index))
        chunk = _Chunk()
        for n, event in enumerate(events):
            chunk.add(self._item(index, event, (0, n)), event)
        self._deliver(chunk, [file], deadline)
        return Outcome(file.result.indexed, file.result.degraded, file.result.retried, file.dead)

    def _item(self, index: str, event: dict[str, Any], position: tuple[int, int],
              degraded_because: str | None = None) -> BulkItem:
        document = (transform.document_for(event) if degraded_because is None
                    else transform.degraded_document_for(event, degraded_because))
        return bulk_item(index, transform.document_id(event), document, position,
                         self.engine.doc_type, self.engine.accepts_ids)

    def _deliver(self, chunk: "_Chunk", files: list["_File"], deadline: float) -> None:
        """Send a chunk; degrade what is rejected; note what cannot be delivered, per file."""
        if not chunk.items:
            return
        first = self._writer.write(chunk.items, deadline)
        rejected = [f for f in first.failures if f.status != 413]
        undeliverable = [f for f in first.failures if f.status == 413]
        second = self._writer.write(
            [self._item(f.item.index, chunk.events[f.item.position], f.item.position,
                        degraded_because=f.reason) for f in rejected],
            deadline) if rejected else None
        first_reason = {f.item.position: f.reason for f in rejected}
        if second:
            undeliverable += [ItemFailure(f.item, f.status,
                                          f"{first_reason[f.item.position]}; degraded form: {f.reason}")
                              for f in second.failures]
        for item in chunk.items:
            files[item.position[0]].result.indexed += 1
        for failure in first.failures:
            files[failure.item.position[0]].result.indexed -= 1
        for failure in rejected:
            files[failure.item.position[0]].result.degraded += 1
        for failure in second.failures if second else []:
            files[failure.item.position[0]].result.degraded -= 1
        opener = files[chunk.items[0].position[0]].result
        opener.bulk_requests += first.requests + (second.requests if second else 0)
        opener.throttled += first.throttled + (second.throttled if second else 0)
        written_at = time.time()
        for group in {item.position[0] for item in chunk.items}:
            files[group].result.searchable_at = written_at
        for group, count in (first.retried_by_group + (second.retried_by_group if second
                                                       else Counter())).items():
            files[group].result.retried += count
        for failure in undeliverable:
            file = files[failure.item.position[0]]
            file.dead.append(deadletter.record(
                reason=failure.reason, status=failure.status, error=failure.error,
                bucket=file.ref.bucket, key=file.ref.key, index=failure.item.index,
                doc_id=failure.doc_id, event=chunk.events[failure.item.position]))

    def _finish(self, file: "_File", seconds: float) -> FileResult | FileFailed:
        result = file.result
        result.seconds = seconds
        if file.failure is None:
            try:
                if file.dead:
                    result.dead_letter = self._dead_letter(file.ref.key, file.dead)
                    result.dead_lettered = len(file.dead)
                check_accounting(result)
            except LoaderError as exc:
                file.failure = _failure(file.ref, exc)
        if file.failure is not None:
            log.error("file failed", extra={**result.summary(), "error": file.failure.reason})
            return file.failure
        if file.dead:
            log.error("file loaded, some events dead-lettered", extra={
                **result.summary(),
                "reasons": [f"{r['doc_id']}: {r['reason']}" for r in file.dead[:FAILURES_LOGGED]],
            })
        else:
            log.info("file loaded", extra=result.summary())
        return result

    def _dead_letter(self, key: str, records: list[dict[str, Any]]) -> str:
        if self.dead_letters is None:
            raise deadletter.DeadLetterError(
                f"{len(records)} events rejected and no dead letter configured, "
                f"first: {records[0]['doc_id']}: {records[0]['reason']}")
        return self.dead_letters.put(key, records)


def _failure(ref: ObjectRef, cause: Exception) -> FileFailed:
    failure = FileFailed(ref.bucket, ref.key, str(cause))
    failure.__cause__ = cause
    return failure


@dataclass
class _File:
    ref: ObjectRef
    result: FileResult
    failure: FileFailed | None = None
    dead: list[dict[str, Any]] = field(default_factory=list)


class _Chunk:
    """The items of one ``_bulk`` chunk and, until it is sent, the events they came from."""

    def __init__(self) -> None:
        self.items: list[BulkItem] = []
        self.events: dict[tuple[int, int], dict[str, Any]] = {}
        self.size = 0

    def add(self, item: BulkItem, event: dict[str, Any]) -> None:
        self.items.append(item)
        self.events[item.position] = event
        self.size += len(item.lines)

    def full(self, max_docs: int, max_bytes: int) -> bool:
        return len(self.items) >= max_docs or self.size >= max_bytes


def check_accounting(result: FileResult) -> None:
    accounted = result.indexed + result.degraded + result.dead_lettered + result.filtered
    if accounted != result.events_read:
        raise AccountingError(
            f"{result.events_read} events read but {accounted} accounted for "
            f"({result.indexed} indexed, {result.degraded} degraded, "
            f"{result.dead_lettered} dead-lettered, {result.filtered} filtered)")


@dataclass
class RunResult:
    loaded: list[FileResult] = field(default_factory=list)
    failed: list[FileFailed] = field(default_factory=list)
    skipped: list[ObjectRef] = field(default_factory=list)

    def total(self, name: str) -> int:
        return sum(getattr(r, name) for r in self.loaded)

    def summary(self) -> dict[str, Any]:
        return {
            "files_loaded": len(self.loaded), "files_failed": len(self.failed),
            "files_skipped": len(self.skipped),
            **{name: self.total(name) for name in
               ("events_read", "indexed", "degraded", "dead_lettered", "filtered", "retried",
                "bulk_requests", "throttled")},
            "filtered_by_rule": dict(sum((r.filtered_by_rule for r in self.loaded), Counter())),
            **metrics.max_lags(self.loaded),
        }


def process_objects(processor: Processor, objects: Iterable[ObjectRef],
                    deadline_for: Callable[[], float]) -> RunResult:
    """Load every CloudTrail log file among ``objects``; one failure never stops the others."""
    run = RunResult()
    for ref in objects:
        if not keys.is_log_file_key(ref.key):
            log.info("skipped: not a CloudTrail log file",
                     extra={"bucket": ref.bucket, "key": ref.key})
            run.skipped.append(ref)
            continue
        try:
            run.loaded.append(processor.process_file(ref.bucket, ref.key, deadline_for()))
        except FileFailed as failure:
            run.failed.append(failure)
    return run


def create_processor(settings: Settings, s3_client: Any = None,
                     cluster: Cluster | None = None,
                     dead_letters: deadletter.DeadLetters | None = None,
                     backoff: Backoff | None = None, source: Source | None = None) -> Processor:
    """Wire the real collaborators: boto3 S3, the HTTP cluster, the bulk writer."""
    if s3_client is None and source is None:
        import boto3

        s3_client = boto3.client("s3")
    cluster = cluster or create_cluster(settings)
    engine = detect(cluster, settings.serverless, settings.client_ids)
    log.info("cluster", extra={"engine": str(engine), "url": cluster.base_url})
    backoff = backoff or Backoff()
    if dead_letters is None and settings.dead_letter_bucket and s3_client is not None:
        dead_letters = deadletter.S3DeadLetters(
            s3_client, settings.dead_letter_bucket, settings.dead_letter_prefix)
    return Processor(
        source or S3Source(s3_client),
        BulkWriter(cluster, settings.bulk_max_docs, settings.bulk_max_bytes,
                   compress=settings.compress_requests and engine.supports_compression,
                   backoff=backoff),
        IndexCreator(cluster, settings.index_shards, settings.index_replicas, backoff, engine),
        None if engine.serverless else WriteGate(cluster, backoff),
        dead_letters,
        settings.index_prefix,
        engine=engine,
        exclude=parse_rules(settings.exclude_events),
    )
