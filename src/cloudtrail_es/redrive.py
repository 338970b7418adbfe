"""Send dead-lettered events again, once their cause is fixed; remove what landed.

``python -m cloudtrail_es.redrive s3://BUCKET/PREFIX`` (what the Lambda wrote)
or ``python -m cloudtrail_es.redrive DIRECTORY`` (what bulk_upload.py wrote).
Events that still cannot be delivered stay in their file, with the new reason.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any, Sequence

from . import cli, keys, names
from .breaker import CircuitBreaker
from .cluster import create_cluster
from .deadletter import LocalDeadLetters, S3DeadLetters
from .errors import ClusterError, ConfigurationError, LoaderError
from .logs import configure_logging
from .processor import Processor, create_processor
from .redact import redact
from .retry import Backoff

log = logging.getLogger(__name__)


def target_index(entry: dict[str, Any], prefix: str) -> str | None:
    """Where a record goes: ``prefix-YYYY-MM`` from its source file's name, as a load does;
    else its recorded index if that is one of ours; else nowhere (None)."""
    if keys.is_log_file_key(entry["key"]):
        return keys.index_name_for(entry["key"], prefix)
    return entry["index"] if names.is_monthly_index(entry["index"], prefix) else None


def redrive_file(processor: Processor, store: Any, name: str, deadline: float) -> dict[str, int]:
    """Send one file's records again; what still cannot land stays in it, with the new reason.

    Records whose index is not one of ours (``INDEX_PREFIX-YYYY-MM``) are never sent: they
    stay in the file, counted as ``foreign_index``.
    """
    records = store.read(name)
    by_index: dict[str, list[dict[str, Any]]] = {}
    remaining: list[dict[str, Any]] = []
    for entry in records:
        index = target_index(entry, processor.index_prefix)
        if index is None:
            log.error("record not redriven: its index is not one of ours", extra={
                "file": name, "index": entry["index"], "prefix": processor.index_prefix})
            remaining.append(entry)
        else:
            by_index.setdefault(index, []).append(entry)
    counts = {"events": len(records), "indexed": 0, "degraded": 0, "foreign_index": len(remaining)}
    for index, entries in by_index.items():
        outcome = processor.load_events(index, [e["event"] for e in entries], deadline,
                                        entries[0]["bucket"], entries[0]["key"])
        counts["indexed"] += outcome.indexed
        counts["degraded"] += outcome.degraded
        remaining += outcome.undeliverable
    store.replace(name, remaining)
    counts["still_dead"] = len(remaining)
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="redrive", description="Send dead-lettered CloudTrail events to the cluster again.",
        epilog="Exit codes: 0 all landed; 1 a file could not be read or written; "
        "2 bad usage or cluster unreachable; 3 some events still undeliverable.")
    parser.add_argument("location", help="s3://BUCKET/PREFIX or a local directory")
    parser.add_argument("--retry-limit", type=float, default=None, metavar="SECONDS")
    parser.add_argument("--breaker-seconds", type=float, default=None, metavar="SECONDS",
                        help="stop when the cluster has not answered (or answered only 5xx) this "
                             "long (default: BREAKER_SECONDS or 120)")
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        settings = cli.settings_from(args)
        breaker = CircuitBreaker(settings.breaker_seconds)
        cluster = create_cluster(settings)
        cluster.breaker = breaker
        processor = create_processor(settings, cluster=cluster, backoff=Backoff(breaker=breaker))
        store = _store(args.location, processor)
        totals = {"files": 0, "events": 0, "indexed": 0, "degraded": 0, "foreign_index": 0,
                  "still_dead": 0}
        failed = 0
        for name in list(store.files()):
            try:
                counts = redrive_file(processor, store, name,
                                      time.monotonic() + settings.retry_limit_seconds)
            except LoaderError as exc:
                print(redact(f"FAILED {name}: {exc}"), file=sys.stderr)
                failed += 1
                if breaker.is_open:
                    print(redact(f"redrive: stopped: {breaker.cause}"), file=sys.stderr)
                    break
                continue
            totals["files"] += 1
            for key, value in counts.items():
                totals[key] += value
    except (ConfigurationError, ClusterError) as exc:
        print(redact(f"redrive: {exc}"), file=sys.stderr)
        return cli.EXIT_USAGE
    print(json.dumps({**totals, "files_failed": failed}))
    if failed:
        return cli.EXIT_FILES_FAILED
    return cli.EXIT_DEAD_LETTERED if totals["still_dead"] else cli.EXIT_OK


def _store(location: str, processor: Processor) -> Any:
    if location.startswith("s3://"):
        bucket, _, prefix = location[5:].partition("/")
        return S3DeadLetters(processor.source.s3_client, bucket, prefix)
    return LocalDeadLetters(location)


if __name__ == "__main__":
    sys.exit(main())
