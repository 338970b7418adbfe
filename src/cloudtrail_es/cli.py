"""Backfill: load every CloudTrail log file under an S3 prefix, as the Lambda would."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Sequence

from .cluster import Cluster, create_cluster
from .config import Settings
from .deadletter import LocalDeadLetters
from .errors import ClusterError, ConfigurationError
from .logs import configure_logging
from .processor import ObjectRef, create_processor, process_objects

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FILES_FAILED = 1
EXIT_USAGE = 2  # bad arguments or settings, or the cluster cannot be reached
EXIT_DEAD_LETTERED = 3
EXIT_INTERRUPTED = 130


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bulk_upload.py",
        description="Load CloudTrail log files from S3 into Elasticsearch / OpenSearch. "
        "Settings come from the environment (ES_HOSTNAME, ES_AUTH, ...; see README).",
        epilog="Exit codes: 0 every event indexed; 1 some files failed; 2 bad usage or "
        "cluster unreachable; 3 some events dead-lettered; 130 interrupted.",
    )
    parser.add_argument("bucket", help="S3 bucket that holds the CloudTrail files")
    parser.add_argument("prefix", nargs="?", default="",
                        help="key prefix to load, e.g. AWSLogs/123456789012/CloudTrail/")
    add_common_options(parser)
    return parser.parse_args(argv)


def add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dead-letter-dir", default=os.environ.get("DEAD_LETTER_DIR", "dead-letter"),
                        help="where events the cluster will not take are written "
                             "(default: %(default)s)")
    parser.add_argument("--retry-limit", type=float, default=None, metavar="SECONDS",
                        help="how long to keep retrying a throttled file "
                             "(default: RETRY_LIMIT_SECONDS or 900)")
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))


def connect(args: argparse.Namespace) -> tuple[Settings, Cluster]:
    overrides = {} if args.retry_limit is None else {"retry_limit_seconds": args.retry_limit}
    settings = Settings.from_env(**overrides)
    cluster = create_cluster(settings)
    check_reachable(cluster)
    return settings, cluster


def check_reachable(cluster: Cluster) -> None:
    response = cluster.request("GET", "/")
    if response.status_code != 200:
        raise ClusterError(f"cluster at {cluster.base_url} does not answer", response)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level)
    started = time.monotonic()
    try:
        settings, cluster = connect(args)
        processor = create_processor(settings, cluster=cluster,
                                     dead_letters=LocalDeadLetters(args.dead_letter_dir))
        keys = processor.source.list_keys(args.bucket, args.prefix)
        run = process_objects(processor, (ObjectRef(args.bucket, key) for key in keys),
                              lambda: time.monotonic() + settings.retry_limit_seconds)
    except (ConfigurationError, ClusterError) as exc:
        print(f"bulk_upload: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("bulk_upload: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(json.dumps({**run.summary(), "seconds": round(time.monotonic() - started, 3)}))
    for failure in run.failed:
        print(f"FAILED {failure}", file=sys.stderr)
    for result in run.loaded:
        if result.dead_lettered:
            print(f"DEAD-LETTERED {result.dead_lettered} events of s3://{result.bucket}/"
                  f"{result.key} -> {result.dead_letter}", file=sys.stderr)
    if run.failed:
        return EXIT_FILES_FAILED
    if run.total("dead_lettered"):
        return EXIT_DEAD_LETTERED
    return EXIT_OK
