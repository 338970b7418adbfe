"""Send dead-lettered events again, once their cause is fixed; remove what landed.

``python -m cloudtrail_es.commands.redrive s3://BUCKET/PREFIX`` (what the Lambda wrote)
or ``python -m cloudtrail_es.commands.redrive DIRECTORY`` (what bulk_upload.py wrote).
Events that still cannot be delivered stay in their file, with the new reason.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any, Protocol, Sequence

from cloudtrail_es.read import keys
from cloudtrail_es.core import names
from cloudtrail_es.core.breaker import CircuitBreaker
from cloudtrail_es.write.cluster import create_cluster
from cloudtrail_es.commands.common import (EXIT_DEAD_LETTERED, EXIT_FILES_FAILED, EXIT_OK, add_log_level,
                       add_retry_limit, fail_usage, settings_from, start_logging)
from cloudtrail_es.write.deadletter import DeadLetterStore, LocalDeadLetters, S3DeadLetters
from cloudtrail_es.core.errors import ClusterError, ConfigurationError, LoaderError
from cloudtrail_es.core.results import EventsResult
from cloudtrail_es.write.processor import create_processor
from cloudtrail_es.core.redact import redact
from cloudtrail_es.core.retry import Backoff

log = logging.getLogger(__name__)


class EventLoader(Protocol):
    """What redrive needs of a processor: write events to an index, under given ids."""

    index_prefix: str

    def load_events(self, index: str, events: list[dict[str, Any]], deadline: float,
                    bucket: str = "", key: str = "", doc_ids: list[str] | None = None) -> EventsResult: ...


def target_index(entry: dict[str, Any], prefix: str) -> str | None:
    """Where a record goes: ``prefix-YYYY-MM`` from its source file's name, as a load does;
    else its recorded index if that is one of ours; else nowhere (None)."""
    if keys.is_log_file_key(entry["key"]):
        return keys.index_name_for(entry["key"], prefix)
    return entry["index"] if names.is_monthly_index(entry["index"], prefix) else None


def redrive_file(loader: EventLoader, store: DeadLetterStore, name: str,
                 deadline: float, counts: dict[str, int] | None = None) -> dict[str, int]:
    """Send one dead-letter file's events again; keep in it only those still undeliverable.

    A record without its event (one too large to hold: only its head was kept) stays.
    Records whose index is not one of ours (``INDEX_PREFIX-YYYY-MM``) are never sent: they
    stay in the file, counted as ``foreign_index``. ``counts`` (returned) is filled as the
    file goes, so that when something fails the caller knows what was read and what landed;
    the file is then left as it was.
    """
    counts = {} if counts is None else counts
    records = store.read(name)
    by_index: dict[str, list[dict[str, Any]]] = {}
    remaining: list[dict[str, Any]] = []
    foreign = 0
    for entry in records:
        index = target_index(entry, loader.index_prefix)
        if index is None:
            log.error("record not redriven: its index is not one of ours", extra={
                "file": name, "index": entry["index"], "prefix": loader.index_prefix})
            foreign += 1
            remaining.append(entry)
        elif "event" in entry:
            by_index.setdefault(index, []).append(entry)
        else:
            remaining.append(entry)
    counts.update(events=len(records), indexed=0, degraded=0, foreign_index=foreign)
    for index, entries in by_index.items():
        outcome = loader.load_events(index, [e["event"] for e in entries], deadline,
                                     entries[0]["bucket"], entries[0]["key"],
                                     [e["doc_id"] for e in entries])
        counts["indexed"] += outcome.indexed
        counts["degraded"] += outcome.degraded
        remaining += outcome.undeliverable
    store.replace(name, remaining)
    counts["still_dead"] = len(remaining)
    return counts


#: The summary's counts; ``events`` = ``indexed`` + ``degraded`` + ``still_dead`` + ``events_failed``.
TOTALS = ("files", "events", "indexed", "degraded", "foreign_index", "still_dead", "events_failed")


def main(argv: Sequence[str] | None = None, *, s3_client: Any = None) -> int:
    parser = argparse.ArgumentParser(
        prog="redrive", description="Send dead-lettered CloudTrail events to the cluster again.",
        epilog="Exit codes: 0 all landed; 1 a file could not be read or written; "
        "2 bad usage, a location that does not exist or cluster unreachable; "
        "3 some events still undeliverable.")
    parser.add_argument("location", help="s3://BUCKET/PREFIX or a local directory")
    add_retry_limit(parser, help="how long to keep retrying a throttled file")
    add_log_level(parser)
    parser.add_argument("--breaker-seconds", type=float, default=None, metavar="SECONDS",
                        help="stop when the cluster has not answered (or answered only 5xx) this "
                             "long (default: BREAKER_SECONDS or 120)")
    args = parser.parse_args(argv)
    try:
        start_logging(args)
        settings = settings_from(args)
        if s3_client is None and args.location.startswith("s3://"):
            import boto3

            s3_client = boto3.client("s3")
        store = _store(args.location, s3_client)
        names = _files(store, args.location)
        breaker = CircuitBreaker(settings.breaker_seconds)
        cluster = create_cluster(settings)
        cluster.breaker = breaker
        processor = create_processor(settings, s3_client=s3_client, cluster=cluster,
                                     backoff=Backoff(breaker=breaker))
    except (ConfigurationError, ClusterError) as exc:
        return fail_usage("redrive", exc)
    totals = dict.fromkeys(TOTALS, 0)
    errors: list[dict[str, str]] = []
    try:
        for name in names:
            if not _redrive_one(processor, store, name, settings.retry_limit_seconds, totals, errors):
                if breaker.is_open:
                    print(redact(f"redrive: stopped: {breaker.cause}"), file=sys.stderr)
                    break
    finally:  # the summary, whatever happened (Ctrl-C included)
        print(redact(json.dumps({**totals, "files_failed": len(errors), "errors": errors})))
    if errors:
        return EXIT_FILES_FAILED
    return EXIT_DEAD_LETTERED if totals["still_dead"] else EXIT_OK


def _redrive_one(processor: EventLoader, store: DeadLetterStore, name: str, retry_limit: float,
                 totals: dict[str, int], errors: list[dict[str, str]]) -> bool:
    """One file in its own error boundary, its counts added to ``totals``; False if it failed.

    A file that fails once read keeps all its records; those that had not landed by then are
    counted ``events_failed``, so that events = indexed + degraded + still_dead + events_failed.
    """
    counts: dict[str, int] = {}
    try:
        redrive_file(processor, store, name, time.monotonic() + retry_limit, counts)
    except BaseException as exc:  # S3, disk, cluster, a bug or Ctrl-C: this file fails
        for key in ("events", "indexed", "degraded", "foreign_index"):
            totals[key] += counts.get(key, 0)
        landed = counts.get("indexed", 0) + counts.get("degraded", 0)
        totals["events_failed"] += counts.get("events", 0) - landed
        reason = str(exc) if isinstance(exc, LoaderError) else f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, Exception):
            reason = f"interrupted ({type(exc).__name__})"
        elif not isinstance(exc, LoaderError):
            log.error("unexpected error", exc_info=exc, extra={"file": name})
        print(redact(f"FAILED {name}: {reason}"), file=sys.stderr)
        errors.append({"file": name, "error": redact(reason)})
        if not isinstance(exc, Exception):
            raise
        return False
    totals["files"] += 1
    for key, value in counts.items():
        totals[key] += value
    return True


def _files(store: S3DeadLetters | LocalDeadLetters, location: str) -> list[str]:
    """The dead-letter files at ``location``; ConfigurationError (exit 2) when it does not exist
    or cannot be listed, since a mistyped location must not read as "nothing left to send"."""
    if isinstance(store, LocalDeadLetters) and not store.directory.is_dir():
        raise ConfigurationError(f"{location}: no such directory (expected s3://BUCKET/PREFIX "
                                 "or the local directory the backfill wrote dead letters to)")
    try:
        names = list(store.files())
    except Exception as exc:  # NoSuchBucket, AccessDenied, a network failure: nothing to go by
        raise ConfigurationError(f"cannot list the dead-letter files at {location}: {exc}") from exc
    if not names:
        print(redact(f"redrive: no dead-letter file (*.ndjson.gz) at {location}"), file=sys.stderr)
    return names


def _store(location: str, s3_client: Any) -> S3DeadLetters | LocalDeadLetters:
    if location.startswith("s3://"):
        bucket, _, prefix = location[5:].partition("/")
        return S3DeadLetters(s3_client, bucket, prefix)
    return LocalDeadLetters(location)


if __name__ == "__main__":
    sys.exit(main())
