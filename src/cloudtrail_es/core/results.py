"""What a load produced, per file and per run, and the lags of each file: plain data, no I/O.

Every layer that loads (the pipeline, the processor, the handler's metrics, the commands'
summaries) reads or fills these; they import nothing of ours but the errors.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable

from cloudtrail_es.core.errors import AccountingError, FileFailed
from cloudtrail_es.core.refs import ObjectRef


@dataclass
class FileResult:
    bucket: str
    key: str
    index: str
    events_read: int = 0
    indexed: int = 0
    degraded: int = 0
    #: Of ``degraded``: rejected because the index reached its total-fields limit.
    degraded_field_limit: int = 0
    dead_lettered: int = 0
    retried: int = 0
    #: Events whose eventID an earlier, different event of the file already had.
    duplicate_ids: int = 0
    #: Documents indexed (as they are or degraded) whose text had to be repaired to be sent.
    repaired: int = 0
    seconds: float = 0.0
    dead_letter: str | None = None
    #: Events dropped by an exclusion rule, in all and by the rule (as written) that matched.
    filtered: int = 0
    filtered_by_rule: Counter = field(default_factory=Counter)
    #: ``_bulk`` requests (and those answered 429) of the chunks this file's events opened.
    bulk_requests: int = 0
    throttled: int = 0
    #: Lag inputs (``lags``): newest eventTime sent, S3 LastModified and when the file's
    #: last request was answered (epoch seconds).
    newest_event_time: str = ""
    object_modified: float | None = None
    searchable_at: float | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket, "key": self.key, "index": self.index,
            "events_read": self.events_read, "indexed": self.indexed, "degraded": self.degraded,
            "degraded_field_limit": self.degraded_field_limit,
            "dead_lettered": self.dead_lettered, "filtered": self.filtered, "retried": self.retried,
            "bulk_requests": self.bulk_requests, "throttled": self.throttled,
            "duplicate_ids": self.duplicate_ids, "repaired": self.repaired, "seconds": round(self.seconds, 3),
            **({"dead_letter": self.dead_letter} if self.dead_letter else {}),
            **({"filtered_by_rule": dict(self.filtered_by_rule)} if self.filtered else {}),
            **lags(self),
        }


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
        """``files_loaded``: every event in the index (some maybe degraded); ``files_dead_lettered``:
        complete, but some events are in the dead letter; ``retried`` counts failed files' too."""
        dead_lettered = sum(1 for r in self.loaded if r.dead_lettered)
        return {
            "files_loaded": len(self.loaded) - dead_lettered, "files_dead_lettered": dead_lettered,
            "files_failed": len(self.failed), "files_skipped": len(self.skipped),
            **{name: self.total(name) for name in
               ("events_read", "indexed", "degraded", "degraded_field_limit", "dead_lettered",
                "filtered", "bulk_requests", "throttled", "duplicate_ids", "repaired")},
            "retried": self.total("retried") + sum(f.retried for f in self.failed),
            "filtered_by_rule": dict(sum((r.filtered_by_rule for r in self.loaded), Counter())),
            **max_lags(self.loaded),
        }


@dataclass
class EventsResult:
    """Where the events of one ``Processor.load_events`` call went (redrive)."""

    indexed: int = 0
    degraded: int = 0
    retried: int = 0
    undeliverable: list[dict[str, Any]] = field(default_factory=list)


#: CloudTrail writes eventTime as YYYY-MM-DDTHH:MM:SSZ; only such values are compared.
_EVENT_TIME_LENGTH = 20


def note_event_time(result: FileResult, event: dict[str, Any]) -> None:
    """Keep the file's newest ``eventTime`` (runs on every event: a string comparison)."""
    stamp = event.get("eventTime")
    if type(stamp) is str and len(stamp) == _EVENT_TIME_LENGTH and stamp > result.newest_event_time:
        result.newest_event_time = stamp


def epoch_seconds(event_time: str) -> float | None:
    """``2024-03-13T08:33:00Z`` as seconds since the epoch (UTC when no zone); None if malformed."""
    try:
        moment = datetime.fromisoformat(event_time)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def ingestion_lag(result: FileResult) -> float | None:
    """Seconds between the file's newest event and the moment it became searchable."""
    newest = epoch_seconds(result.newest_event_time) if result.newest_event_time else None
    return _age(newest, result.searchable_at)


def object_lag(result: FileResult) -> float | None:
    """Seconds between the file's S3 LastModified and the moment it became searchable."""
    return _age(result.object_modified, result.searchable_at)


def _age(since: float | None, until: float | None) -> float | None:
    if since is None or until is None:
        return None
    return round(max(until - since, 0.0), 3)  # a clock ahead of ours is not a negative age


def lags(result: FileResult) -> dict[str, float]:
    """The file's lags that are known, for its log line."""
    known = {"ingestion_lag_seconds": ingestion_lag(result), "object_lag_seconds": object_lag(result)}
    return {name: value for name, value in known.items() if value is not None}


def max_lags(results: Iterable[FileResult]) -> dict[str, float | None]:
    """The largest lags of a run (None when no file has one), for its summary."""
    results = list(results)
    ingestion = [lag for lag in map(ingestion_lag, results) if lag is not None]
    objects = [lag for lag in map(object_lag, results) if lag is not None]
    return {"ingestion_lag_seconds_max": max(ingestion, default=None),
            "object_lag_seconds_max": max(objects, default=None)}
