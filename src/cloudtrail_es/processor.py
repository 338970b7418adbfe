"""Load one CloudTrail log file: read, decode, transform, write; and a run over many."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

from . import keys, transform
from .bulk import BulkItem, BulkWriter, ItemFailure, bulk_item
from .cluster import Cluster, create_cluster
from .config import Settings
from .errors import BadLogFile, ClusterError, FileFailed
from .indexes import IndexCreator
from .sources import S3Source, SourceError, events_in

log = logging.getLogger(__name__)

#: How many rejected documents a file's error line names (all are counted).
FAILURES_LOGGED = 10


class Source(Protocol):
    def read(self, bucket: str, key: str) -> bytes: ...


@dataclass(frozen=True)
class ObjectRef:
    bucket: str
    key: str


@dataclass
class FileResult:
    bucket: str
    key: str
    index: str
    events_read: int = 0
    indexed: int = 0
    retried: int = 0
    seconds: float = 0.0
    failures: list[ItemFailure] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.failures)

    def summary(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket, "key": self.key, "index": self.index,
            "events_read": self.events_read, "indexed": self.indexed,
            "failed": self.failed, "retried": self.retried, "seconds": round(self.seconds, 3),
        }


class Processor:
    def __init__(self, source: Source, writer: BulkWriter, indexes: IndexCreator,
                 index_prefix: str = "cloudtrail",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.source = source
        self._writer = writer
        self._indexes = indexes
        self._index_prefix = index_prefix
        self._clock = clock

    def process_file(self, bucket: str, key: str, deadline: float) -> FileResult:
        """Load one file. Raises FileFailed, naming the object, when it cannot be loaded."""
        started = self._clock()
        result = FileResult(bucket, key, keys.index_name_for(key, self._index_prefix))
        try:
            events = events_in(self.source.read(bucket, key))
            result.events_read = len(events)
            self._indexes.ensure(result.index)
            written = self._writer.write(self._items(result.index, events), deadline)
        except (SourceError, BadLogFile, ClusterError) as exc:
            result.seconds = self._clock() - started
            log.error("file failed", extra={**result.summary(), "error": str(exc)})
            raise FileFailed(bucket, key, str(exc)) from exc
        result.indexed, result.retried, result.failures = (
            written.indexed, written.retried, written.failures
        )
        result.seconds = self._clock() - started
        if result.failures:
            log.error("file loaded with rejected events", extra={
                **result.summary(),
                "rejected": [f"{f.doc_id}: {f.reason}" for f in result.failures[:FAILURES_LOGGED]],
            })
        else:
            log.info("file loaded", extra=result.summary())
        return result

    @staticmethod
    def _items(index: str, events: list[dict[str, Any]]) -> Iterable[BulkItem]:
        for event in events:
            yield bulk_item(index, transform.document_id(event), transform.document_for(event))


@dataclass
class RunResult:
    loaded: list[FileResult] = field(default_factory=list)
    failed: list[FileFailed] = field(default_factory=list)
    skipped: list[ObjectRef] = field(default_factory=list)

    @property
    def events_read(self) -> int:
        return sum(r.events_read for r in self.loaded)

    @property
    def indexed(self) -> int:
        return sum(r.indexed for r in self.loaded)

    @property
    def events_failed(self) -> int:
        return sum(r.failed for r in self.loaded)

    def summary(self) -> dict[str, Any]:
        return {
            "files_loaded": len(self.loaded), "files_failed": len(self.failed),
            "files_skipped": len(self.skipped), "events_read": self.events_read,
            "indexed": self.indexed, "events_failed": self.events_failed,
        }

    def problems(self) -> list[FileFailed]:
        """Every file not fully loaded: unreadable ones and ones with rejected events."""
        rejected = [
            FileFailed(r.bucket, r.key, f"{r.failed} of {r.events_read} events rejected, "
                       f"first: {r.failures[0].doc_id}: {r.failures[0].reason}")
            for r in self.loaded if r.failures
        ]
        return self.failed + rejected


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
                     cluster: Cluster | None = None) -> Processor:
    """Wire the real collaborators: boto3 S3, the HTTP cluster, the bulk writer."""
    if s3_client is None:
        import boto3

        s3_client = boto3.client("s3")
    cluster = cluster or create_cluster(settings)
    return Processor(
        S3Source(s3_client),
        BulkWriter(cluster, settings.bulk_max_docs, settings.bulk_max_bytes),
        IndexCreator(cluster, settings.index_shards, settings.index_replicas),
        settings.index_prefix,
    )
