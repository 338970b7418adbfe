"""Backfill: load CloudTrail log files from S3 or a local directory, as the Lambda would.

Exit codes: 0 every event indexed; 1 some files failed, or the cluster went down for longer
than the breaker allows (state written); 2 bad usage, bad settings or the cluster unreachable;
3 some events dead-lettered; 130 interrupted (state written).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any, Sequence

from cloudtrail_es.backfill import run as backfill
from cloudtrail_es.read import keys
from cloudtrail_es.core import gctuning
from cloudtrail_es.core.breaker import CircuitBreaker
from cloudtrail_es.write.cluster import Cluster, create_cluster
from cloudtrail_es.commands.common import (EXIT_DEAD_LETTERED, EXIT_FILES_FAILED, EXIT_INTERRUPTED, EXIT_OK,
                       EXIT_USAGE, add_common_options, fail_usage, report, settings_from,
                       start_logging)
from cloudtrail_es.core.config import ES_HOSTNAME, Settings
from cloudtrail_es.write.deadletter import LocalDeadLetters
from cloudtrail_es.core.errors import ClusterError, ConfigurationError, NothingSelected, reason_of
from cloudtrail_es.core.filters import parse_rules
from cloudtrail_es.core.names import segment
from cloudtrail_es.core.results import RunResult
from cloudtrail_es.write.processor import Processor, Source, create_processor
from cloudtrail_es.core.refs import ObjectRef
from cloudtrail_es.core.redact import redact
from cloudtrail_es.core.retry import Backoff
from cloudtrail_es.backfill.selection import Filters, LocalSource, S3Listing
from cloudtrail_es.read.sources import S3Source

__all__ = ["EXIT_DEAD_LETTERED", "EXIT_FILES_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE",
           "DEFAULT_WORKERS", "main", "parse_args"]

log = logging.getLogger(__name__)

#: Parallel files (and _bulk requests in flight); see the README's performance section.
DEFAULT_WORKERS = 4


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bulk_upload.py", description=__doc__.splitlines()[0],
        epilog="Settings come from the environment (ES_HOSTNAME, ES_AUTH, ...; see README). "
        "Exit codes: 0 every event indexed; 1 some files failed, or the cluster was down longer "
        "than --breaker-seconds; 2 bad usage or cluster unreachable; 3 some events "
        "dead-lettered; 130 interrupted.")
    parser.add_argument("bucket", nargs="?", help="S3 bucket that holds the CloudTrail files")
    parser.add_argument("prefix", nargs="?", default="",
                        help="key prefix, e.g. AWSLogs/ or AWSLogs/123456789012/CloudTrail/")
    parser.add_argument("--dir", metavar="DIRECTORY",
                        help="load a local directory of CloudTrail files instead of S3")
    parser.add_argument("--dates", nargs=2, metavar=("START", "END"), type=date.fromisoformat,
                        help="only files whose name's date is in START..END (YYYY-MM-DD, inclusive)")
    parser.add_argument("--accounts", nargs="+", metavar="ACCOUNT", help="only these accounts")
    parser.add_argument("--regions", nargs="+", metavar="REGION", help="only these regions")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                        help="files loaded in parallel (default: %(default)s)")
    parser.add_argument("--state", metavar="FILE",
                        help="record completed files here; a rerun skips them")
    parser.add_argument("--dry-run", action="store_true",
                        help="list what would be loaded (files, bytes, indexes); load nothing")
    parser.add_argument("--output", metavar="DIR",
                        help="write the _bulk NDJSON files to DIR instead of sending them")
    parser.add_argument("--via-queue", metavar="QUEUE_URL",
                        help="send each file to the Lambda's SQS queue instead of loading it here")
    parser.add_argument("--breaker-seconds", type=float, default=None, metavar="SECONDS",
                        help="stop the run when the cluster has not answered (or answered only "
                             "5xx) this long (default: BREAKER_SECONDS or 120)")
    parser.add_argument("--exclude", action="append", default=[], metavar="FIELD=PATTERN[,...]",
                        help="do not index events matching every FIELD=PATTERN of this rule "
                             "(shell-style, case-sensitive; FIELD may be dotted, e.g. "
                             "userIdentity.type); repeatable; added to EXCLUDE_EVENTS")
    parser.add_argument("--quiet", action="store_true", help="no progress, warnings only")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--log-file", metavar="FILE",
                        help="append the JSON log lines (one per file at INFO) to FILE; "
                             "the terminal keeps the progress bar and warnings")
    add_common_options(parser)
    args = parser.parse_args(argv)
    if bool(args.bucket) == bool(args.dir):
        parser.error("give either BUCKET [PREFIX] or --dir DIRECTORY")
    if args.dir and not Path(args.dir).is_dir():
        parser.error(f"--dir {args.dir}: no such directory")
    if args.dates and args.dates[0] > args.dates[1]:
        parser.error(f"--dates {args.dates[0]} {args.dates[1]}: START is after END")
    if args.dir and args.via_queue:
        parser.error("--via-queue needs files in S3, which the Lambda can read")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.exclude and (args.output or args.via_queue):
        parser.error("--exclude applies where events are loaded: not with --output or --via-queue "
                     "(set the Lambda's EXCLUDE_EVENTS)")
    try:
        parse_rules(args.exclude)
    except ConfigurationError as exc:
        parser.error(str(exc))
    if args.retry_limit is not None and not args.retry_limit >= 0:
        parser.error(f"--retry-limit {args.retry_limit:g}: expected 0 or more seconds")
    return args


def filters_from(args: argparse.Namespace) -> Filters:
    start, end = args.dates or (None, None)
    return Filters(start, end, frozenset(args.accounts) if args.accounts else None,
                   frozenset(args.regions) if args.regions else None)


def main(argv: Sequence[str] | None = None, *, s3_client: Any = None, sqs_client: Any = None,
         cluster: Cluster | None = None) -> int:
    """The backfill; the AWS clients and the cluster may be given (tests), else they are made."""
    args = parse_args(argv)
    gctuning.tune()  # the imports done: collections rare, never over the code
    try:
        start_logging(args, quiet=args.quiet)
        state = backfill.StateFile(args.state) if args.state else None  # checked before listing
        # Every setting is checked before any work; those that need no cluster, without one.
        offline = args.dry_run or args.via_queue or args.output
        settings = offline_settings(args) if offline else settings_from(args)
        if args.exclude:  # added to EXCLUDE_EVENTS
            settings = replace(settings, exclude_events=settings.exclude_events + tuple(args.exclude))
        if not args.dir and s3_client is None:
            s3_client = make_s3_client()
        source: Source = LocalSource() if args.dir else S3Source(s3_client)
        breaker = CircuitBreaker(settings.breaker_seconds)
        processor = None
        if not offline:
            # The cluster is asked before the listing, which can be long: a wrong one fails at once.
            cluster = cluster or create_cluster(settings)
            cluster.breaker = breaker
            processor = create_processor(
                settings, s3_client=s3_client, source=source, cluster=cluster,
                backoff=Backoff(breaker=breaker),
                dead_letters=LocalDeadLetters(args.dead_letter_dir or settings.dead_letter_dir))
        objects = list_objects(args, s3_client)
        if args.dry_run:
            return report_ok(dry_run_summary(objects, args), args)
        if args.via_queue:
            return enqueue(objects, args, sqs_client)
        if args.output or processor is None:
            return export(source, objects, args, settings)
    except (ConfigurationError, ClusterError, NothingSelected) as exc:
        return fail_usage("bulk_upload", exc)
    return load(processor, settings, objects, args, state, breaker)


def offline_settings(args: argparse.Namespace) -> Settings:
    """The settings of a run that talks to no cluster (dry run, --output, --via-queue), checked all
    the same: ES_HOSTNAME and the credentials may be missing, nothing else may be wrong."""
    env = dict(os.environ)
    env.setdefault(ES_HOSTNAME, "http://offline.invalid")
    if not env[ES_HOSTNAME].strip():
        env[ES_HOSTNAME] = "http://offline.invalid"
    overrides: dict[str, Any] = {"auth": "none"}
    if args.retry_limit is not None:
        overrides["retry_limit_seconds"] = args.retry_limit
    return Settings.from_env(env, **overrides)


def searched(args: argparse.Namespace) -> str:
    """What a run looked at, in words: where, and with which filters."""
    where = f"directory {args.dir}" if args.dir else f"s3://{args.bucket}/{args.prefix}"
    filters = [f"{name} {' '.join(map(str, value))}" for name, value in
               (("--dates", args.dates), ("--accounts", args.accounts), ("--regions", args.regions))
               if value]
    return where + (f" with {', '.join(filters)}" if filters else "")


def list_objects(args: argparse.Namespace, s3_client: Any) -> list[ObjectRef]:
    """The objects selected; NothingSelected (a usage error) when no CloudTrail log file is among
    them, ConfigurationError when the bucket cannot be listed."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        if args.dir:
            objects = list(LocalSource.objects(args.dir, filters_from(args)))
        else:
            objects = list(S3Listing(s3_client).objects(args.bucket, args.prefix, filters_from(args)))
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise ConfigurationError(f"bucket {args.bucket}: cannot list it ({error.get('Code')}: "
                                 f"{error.get('Message')})") from None
    except BotoCoreError as exc:
        raise ConfigurationError(f"bucket {args.bucket}: cannot list it ({exc})") from None
    if not any(keys.is_log_file_key(ref.key) for ref in objects):
        other = f" ({len(objects)} other objects)" if objects else ""
        raise NothingSelected(
            f"no CloudTrail log file in {searched(args)}{other}; CloudTrail writes "
            "[PREFIX/]AWSLogs/ACCOUNT/CloudTrail/REGION/YYYY/MM/DD/*.json.gz")
    return objects


def enqueue(objects: list[ObjectRef], args: argparse.Namespace, sqs_client: Any) -> int:
    if sqs_client is None:
        import boto3

        sqs_client = boto3.client("sqs")
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        summary = backfill.enqueue(sqs_client, args.via_queue, objects)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        return fail_usage("bulk_upload", ConfigurationError(
            f"--via-queue {args.via_queue}: {error.get('Code')}: {error.get('Message')}"))
    except BotoCoreError as exc:
        return fail_usage("bulk_upload", ConfigurationError(f"--via-queue {args.via_queue}: {exc}"))
    report(summary, args.json)
    return EXIT_FILES_FAILED if summary["failed"] else EXIT_OK


def load(processor: Processor, settings: Settings, objects: list[ObjectRef],
         args: argparse.Namespace, state: backfill.StateFile | None,
         breaker: CircuitBreaker) -> int:
    """Load the files not done before, in parallel; report; the exit code says how it went."""
    started = time.monotonic()
    done_before = [ref for ref in objects if state is not None and ref in state]
    todo = [ref for ref in objects if state is None or ref not in state]
    log_files = [ref for ref in todo if keys.is_log_file_key(ref.key)]
    if not log_files:
        log.warning("nothing to load: every file selected was skipped", extra={
            "searched": searched(args), "done_before": len(done_before),
            "not_log_files": len(todo)})
    progress = backfill.Progress(len(log_files), sum(ref.size for ref in log_files),
                                 enabled=not args.quiet)
    run, interrupted = backfill.run_parallel(
        processor, todo, args.workers,
        lambda: time.monotonic() + settings.retry_limit_seconds, state, progress, breaker)
    progress.close()
    refresh(processor, run)
    summary = run_summary(run, len(done_before), time.monotonic() - started)
    if breaker.is_open:
        summary.update(stopped=breaker.cause, files_not_attempted=len(todo) - len(run.loaded)
                       - len(run.failed) - len(run.skipped))
    report(summary, args.json)
    print_problems(run)
    return exit_code(run, interrupted, breaker)


def refresh(processor: Processor, run: RunResult) -> None:
    """Make what the run indexed searchable as it ends (the cluster would within a second or
    so anyway): a search right after the backfill sees every event it reported indexed."""
    if processor.engine.serverless:  # Serverless has no _refresh API
        return
    for index in sorted({result.index for result in run.loaded if result.index}):
        try:
            response = processor.cluster.request("POST", f"/{segment(index)}/_refresh")
        except ClusterError as exc:
            log.info("index not refreshed", extra={"index": index, "error": str(exc)})
            continue
        if response.status_code != 200:
            log.info("index not refreshed", extra={"index": index, "status": response.status_code})


def exit_code(run: RunResult, interrupted: bool, breaker: CircuitBreaker) -> int:
    if interrupted:
        print("bulk_upload: interrupted; rerun with the same --state to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    if breaker.is_open:
        print(redact(f"bulk_upload: stopped: {breaker.cause}; rerun (with the same --state) "
                     "once the cluster is back"), file=sys.stderr)
        return EXIT_FILES_FAILED
    if run.failed:
        return EXIT_FILES_FAILED
    return EXIT_DEAD_LETTERED if run.total("dead_lettered") else EXIT_OK


def print_problems(run: RunResult) -> None:
    for failure in run.failed:
        print(redact(f"FAILED {failure}"), file=sys.stderr)
    for result in run.loaded:
        if result.dead_lettered:
            print(f"DEAD-LETTERED {result.dead_lettered} events of s3://{result.bucket}/"
                  f"{result.key} -> {result.dead_letter}", file=sys.stderr)


def make_s3_client() -> Any:
    import boto3
    from botocore.config import Config

    # Room for the workers' concurrent reads (processor.READ_THREADS) and the listing.
    return boto3.client("s3", config=Config(max_pool_connections=32))


def run_summary(run: RunResult, done_before: int, seconds: float) -> dict[str, Any]:
    summary = run.summary()
    return {
        **summary, "files_done_before": done_before, "seconds": round(seconds, 3),
        "events_per_second": round(summary["events_read"] / seconds, 1) if seconds else 0.0,
        "failed": [{"key": f.key, "reason": f.reason, "retried": f.retried} for f in run.failed],
        "dead_letters": [r.dead_letter for r in run.loaded if r.dead_letter],
    }


def dry_run_summary(objects: list[ObjectRef], args: argparse.Namespace) -> dict[str, Any]:
    from cloudtrail_es.read.keys import index_name_for

    prefix = offline_settings(args).index_prefix
    indexes: dict[str, int] = {}
    loadable = [ref for ref in objects if keys.is_log_file_key(ref.key)]  # what a load would take
    for ref in loadable:
        name = index_name_for(ref.key, prefix)
        indexes[name] = indexes.get(name, 0) + 1
    return {"dry_run": True, "files": len(loadable), "bytes": sum(r.size for r in loadable),
            "files_skipped": len(objects) - len(loadable),
            "indexes": dict(sorted(indexes.items())),
            "keys": [r.key for r in loadable] if not args.quiet else []}


def export(source: Any, objects: list[ObjectRef], args: argparse.Namespace, settings: Settings) -> int:
    out_dir, written, skipped, failed = Path(args.output), 0, 0, []
    for ref in objects:
        if not keys.is_log_file_key(ref.key):  # digest files and other objects, as a load skips
            skipped += 1
            continue
        try:
            backfill.export_file(source, ref, out_dir, settings.index_prefix,
                                 shards=settings.index_shards, replicas=settings.index_replicas,
                                 max_event_bytes=settings.max_event_bytes,
                                 max_file_bytes=settings.max_file_bytes,
                                 exclude=parse_rules(settings.exclude_events))
            written += 1
        except Exception as exc:  # one file's failure, whatever it is, never stops the others
            reason = reason_of(exc)
            failed.append({"key": ref.key, "reason": reason})
    report({"output": str(out_dir), "files_written": written, "files_skipped": skipped,
            "failed": failed}, args.json)
    return EXIT_FILES_FAILED if failed else EXIT_OK


def report_ok(summary: dict[str, Any], args: argparse.Namespace) -> int:
    report(summary, args.json)
    return EXIT_OK
