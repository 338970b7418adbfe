"""Load CloudTrail log files: the write pipeline wired to a source, dead letters and accounting.

Every event read ends in exactly one of four places, and the counts are checked:
indexed as it is; indexed in its degraded form; in the dead letter with the reason; or
filtered out by an exclusion rule (``pipeline``, ``filters``). When the dead letter
cannot take them either, the file fails.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Protocol

from cloudtrail_es.read import keys
from cloudtrail_es.write import deadletter
from cloudtrail_es.write.bulk import BulkWriter
from cloudtrail_es.write.cluster import Cluster, create_cluster
from cloudtrail_es.core.config import Settings
from cloudtrail_es.write.engine import Engine, detect
from cloudtrail_es.core.errors import DeadLetterError, FileFailed
from cloudtrail_es.core.filters import EventFilter, parse_rules
from cloudtrail_es.write.health import WriteGate
from cloudtrail_es.write.fields import Fields, Mapped
from cloudtrail_es.write.indexes import IndexCreator
from cloudtrail_es.core.results import EventsResult, FileResult, RunResult, check_accounting
from cloudtrail_es.write.pipeline import FileLoad, Pipeline
from cloudtrail_es.core.refs import ObjectRef
from cloudtrail_es.core.retry import Backoff
from cloudtrail_es.read.sources import S3Source
from cloudtrail_es.read.decoder import DEFAULT_MAX_EVENT_BYTES, DEFAULT_MAX_FILE_BYTES, iter_events

__all__ = ["Processor", "Source", "create_processor", "process_objects"]

log = logging.getLogger(__name__)

#: How many dead-lettered documents a file's error line names (all are counted).
FAILURES_LOGGED = 10
#: Files of a batch fetched at once, shared by all workers of a process.
READ_THREADS = 16


class Source(Protocol):
    def read(self, bucket: str, key: str) -> bytes: ...


class Processor:
    def __init__(self, source: Source, writer: BulkWriter, indexes: IndexCreator,
                 gate: WriteGate | None = None, dead_letters: deadletter.DeadLetters | None = None,
                 index_prefix: str = "cloudtrail",
                 clock: Callable[[], float] = time.monotonic, engine: Engine | None = None,
                 max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
                 max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
                 exclude: EventFilter | None = None) -> None:
        self.source = source
        self.exclude = exclude or EventFilter()
        self._limits = {"max_event_bytes": max_event_bytes, "max_file_bytes": max_file_bytes}
        self.engine = engine or Engine("opensearch")
        self.cluster = writer.cluster
        self._indexes = indexes
        self._pipeline = Pipeline(writer, self.engine, max_event_bytes, indexes=_ReadyIndexes(self))
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
        """Load several files together: their events share ``_bulk`` requests (``pipeline``)."""
        started = self._clock()
        files = [FileLoad.of(ref) for ref in refs]
        contents = self._read_all(refs)

        def events_of(number: int, file: FileLoad) -> Iterable[Any]:
            content = contents[number]
            if isinstance(content, BaseException):
                raise content
            file.result.index = keys.index_name_for(file.ref.key, self.index_prefix)
            file.result.object_modified = getattr(content, "last_modified", None)
            return iter_events(content, **self._limits)

        self._pipeline.load(files, events_of, deadline, self.exclude)
        return [self._finish(file, (self._clock() - started) / len(files)) for file in files]

    def load_events(self, index: str, events: list[dict[str, Any]], deadline: float,
                    bucket: str = "", key: str = "", doc_ids: list[str] | None = None) -> EventsResult:
        """Write events to ``index`` (under ``doc_ids`` when given); raises if the cluster fails."""
        withheld = self._prepare(index, deadline)
        file = FileLoad.of(ObjectRef(bucket, key), index)
        file.ids, file.withheld = doc_ids, withheld
        self._pipeline.load([file], lambda number, file: events, deadline)
        if file.failure is not None:
            raise file.failure
        undeliverable = list(file.dead)
        file.dead.close()
        return EventsResult(file.result.indexed, file.result.degraded, file.result.retried, undeliverable)

    def _prepare(self, index: str, deadline: float, fields: Fields | None = None) -> frozenset[str]:
        """The index created (with ``fields``) or given ``fields``, and able to take writes;
        returns the ECS fields it cannot take."""
        self._indexes.prepare(index, fields, deadline)
        if self._gate:
            self._gate.check(index, deadline)
        return self._indexes.withheld(index)

    def _read_all(self, refs: list[ObjectRef]) -> list[bytes | BaseException]:
        """Every file's bytes (or why not), fetched concurrently: a GET costs more than a parse."""
        def read(ref: ObjectRef) -> bytes | BaseException:
            try:
                return self.source.read(ref.bucket, ref.key)
            except Exception as exc:  # raised again inside the file's own error boundary
                return exc

        if len(refs) == 1:
            return [read(refs[0])]
        with self._readers_lock:
            if self._readers is None:
                self._readers = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="read")
        return list(self._readers.map(read, refs))

    def _finish(self, file: FileLoad, seconds: float) -> FileResult | FileFailed:
        result = file.result
        result.seconds = seconds
        if file.failure is None:
            try:
                if file.dead:
                    result.dead_letter = self._dead_letter(file.ref.key, file.dead)
                    result.dead_lettered = len(file.dead)
                check_accounting(result)
            except Exception as exc:  # the dead letter failed too: the file fails
                file.fail(exc)
        file.dead.close()  # its count and first records stay for the summary
        if file.failure is not None:
            file.failure.retried = result.retried
            log.error("file failed", extra={**result.summary(), "error": file.failure.reason})
            return file.failure
        if file.dead:
            log.error("file loaded, some events dead-lettered", extra={
                **result.summary(),
                "reasons": [f"{r['doc_id']}: {r['reason']}" for r in file.dead.first[:FAILURES_LOGGED]],
            })
        else:
            log.info("file loaded", extra=result.summary())
        return result

    def _dead_letter(self, key: str, records: deadletter.Spool) -> str:
        if self.dead_letters is None:
            raise DeadLetterError(
                f"{len(records)} events rejected and no dead letter configured, "
                f"first: {records.first[0]['doc_id']}: {records.first[0]['reason']}")
        return self.dead_letters.put(key, records)


class _ReadyIndexes:
    """The pipeline's view of the processor's indexes (``pipeline.Indexes``)."""

    def __init__(self, processor: Processor) -> None:
        self._processor = processor

    def known(self, index: str) -> Mapped:
        return self._processor._indexes.fields.of(index)

    def prepare(self, index: str, fields: Fields | None, deadline: float) -> None:
        self._processor._prepare(index, deadline, fields)

    def withheld(self, index: str) -> frozenset[str]:
        return self._processor._indexes.withheld(index)


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
                   backoff=backoff, compact_answers=not engine.serverless),
        IndexCreator(cluster, settings.index_shards, settings.index_replicas, backoff, engine),
        None if engine.serverless else WriteGate(cluster, backoff),
        dead_letters,
        settings.index_prefix,
        engine=engine,
        max_event_bytes=settings.max_event_bytes,
        max_file_bytes=settings.max_file_bytes,
        exclude=parse_rules(settings.exclude_events),
    )
