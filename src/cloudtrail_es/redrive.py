"""Send dead-lettered events again, once their cause is fixed; remove what landed.

``python -m cloudtrail_es.redrive s3://BUCKET/PREFIX`` (what the Lambda wrote)
or ``python -m cloudtrail_es.redrive DIRECTORY`` (what bulk_upload.py wrote).
Events that still cannot be delivered stay in their file, with the new reason.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Protocol, Sequence

from .commands import (EXIT_DEAD_LETTERED, EXIT_FILES_FAILED, EXIT_OK, add_log_level,
                       add_retry_limit, fail_usage, settings_from, start_logging)
from .deadletter import DeadLetterStore, LocalDeadLetters, S3DeadLetters
from .errors import ClusterError, ConfigurationError, LoaderError
from .processor import Outcome, create_processor


class EventLoader(Protocol):
    """What redrive needs of a processor: write events to an index, under given ids."""

    def load_events(self, index: str, events: list[dict[str, Any]], deadline: float,
                    bucket: str = "", key: str = "", doc_ids: list[str] | None = None) -> Outcome: ...


def redrive_file(loader: EventLoader, store: DeadLetterStore, name: str,
                 deadline: float) -> dict[str, int]:
    """Send one dead-letter file's events again; keep in it only those still undeliverable.

    A record without its event (one too large to hold: only its head was kept) stays.
    """
    records = store.read(name)
    by_index: dict[str, list[dict[str, Any]]] = {}
    remaining: list[dict[str, Any]] = []
    for entry in records:
        if "event" in entry:
            by_index.setdefault(entry["index"], []).append(entry)
        else:
            remaining.append(entry)
    counts = {"events": len(records), "indexed": 0, "degraded": 0}
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


def main(argv: Sequence[str] | None = None, *, s3_client: Any = None) -> int:
    parser = argparse.ArgumentParser(
        prog="redrive", description="Send dead-lettered CloudTrail events to the cluster again.",
        epilog="Exit codes: 0 all landed; 1 a file could not be read or written; "
        "2 bad usage or cluster unreachable; 3 some events still undeliverable.")
    parser.add_argument("location", help="s3://BUCKET/PREFIX or a local directory")
    add_retry_limit(parser, help="how long to keep retrying a throttled file")
    add_log_level(parser)
    args = parser.parse_args(argv)
    try:
        start_logging(args)
        settings = settings_from(args)
        if s3_client is None and args.location.startswith("s3://"):
            import boto3

            s3_client = boto3.client("s3")
        processor = create_processor(settings, s3_client=s3_client)
        store = _store(args.location, s3_client)
        totals = {"files": 0, "events": 0, "indexed": 0, "degraded": 0, "still_dead": 0}
        failed = 0
        for name in list(store.files()):
            try:
                counts = redrive_file(processor, store, name,
                                      time.monotonic() + settings.retry_limit_seconds)
            except LoaderError as exc:
                print(f"FAILED {name}: {exc}", file=sys.stderr)
                failed += 1
                continue
            totals["files"] += 1
            for key, value in counts.items():
                totals[key] += value
    except (ConfigurationError, ClusterError) as exc:
        return fail_usage("redrive", exc)
    print(json.dumps({**totals, "files_failed": failed}))
    if failed:
        return EXIT_FILES_FAILED
    return EXIT_DEAD_LETTERED if totals["still_dead"] else EXIT_OK


def _store(location: str, s3_client: Any) -> S3DeadLetters | LocalDeadLetters:
    if location.startswith("s3://"):
        bucket, _, prefix = location[5:].partition("/")
        return S3DeadLetters(s3_client, bucket, prefix)
    return LocalDeadLetters(location)


if __name__ == "__main__":
    sys.exit(main())
