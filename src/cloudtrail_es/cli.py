"""Backfill: load every CloudTrail log file under an S3 prefix, as the Lambda would."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Sequence

from .config import Settings
from .cluster import Cluster, create_cluster
from .errors import ClusterError, ConfigurationError
from .logs import configure_logging
from .processor import ObjectRef, create_processor, process_objects

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FILES_FAILED = 1
EXIT_USAGE = 2  # bad arguments or settings, or the cluster cannot be reached
EXIT_EVENTS_REJECTED = 3
EXIT_INTERRUPTED = 130


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bulk_upload.py",
        description="Load CloudTrail log files from S3 into Elasticsearch / OpenSearch. "
        "Settings come from the environment (ES_HOSTNAME, ES_AUTH, ...; see README).",
    )
    parser.add_argument("bucket", help="S3 bucket that holds the CloudTrail files")
    parser.add_argument("prefix", nargs="?", default="",
                        help="key prefix to load, e.g. AWSLogs/123456789012/CloudTrail/")
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    return parser.parse_args(argv)


def check_reachable(cluster: Cluster) -> None:
    response = cluster.request("GET", "/")
    if response.status_code != 200:
        raise ClusterError(f"cluster at {cluster.base_url} does not answer", response)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level)
    try:
        settings = Settings.from_env()
        cluster = create_cluster(settings)
        check_reachable(cluster)
        processor = create_processor(settings, cluster=cluster)
        source = processor.source
        started = time.monotonic()
        objects = (ObjectRef(args.bucket, key) for key in source.list_keys(args.bucket, args.prefix))
        run = process_objects(
            processor, objects, lambda: time.monotonic() + settings.retry_limit_seconds
        )
    except (ConfigurationError, ClusterError) as exc:
        print(f"bulk_upload: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("bulk_upload: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    summary = {**run.summary(), "seconds": round(time.monotonic() - started, 3)}
    print(json.dumps(summary))
    for problem in run.problems():
        print(f"FAILED {problem}", file=sys.stderr)
    if run.failed:
        return EXIT_FILES_FAILED
    if run.events_failed:
        return EXIT_EVENTS_REJECTED
    return EXIT_OK
