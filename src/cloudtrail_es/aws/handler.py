"""The Lambda's routes: recognise what invoked it and hand it to one function per kind.

``src/lambda_function.py`` (the stack's ``Handler``) re-exports ``lambda_handler`` from here.
"""
from __future__ import annotations

import logging
import os
import time
from functools import lru_cache
from typing import Any, Callable

from cloudtrail_es.aws import metrics
from cloudtrail_es.aws.clustersecret import environment_with_secret
from cloudtrail_es.commands import retention
from cloudtrail_es.core import redact
from cloudtrail_es.core.config import (DetectionSettings, Settings, index_prefix_from_env,
                                       log_level_from_env, retention_months_from_env)
from cloudtrail_es.core.errors import BatchFailed, ConfigurationError, LoadFailed, LoaderError, reason_of
from cloudtrail_es.core.logs import configure_logging
from cloudtrail_es.aws.notifications import (
    DetectionRequest, NotUnderstood, ObjectSource, RetentionRequest, SnsBatch, SqsBatch, SqsMessage,
    parse_invocation)
from cloudtrail_es.core.results import RunResult
from cloudtrail_es.write.processor import Processor, create_processor, process_objects
from cloudtrail_es.core.refs import ObjectRef

log = logging.getLogger("cloudtrail_es.handler")

#: Retries stop this long before Lambda's own timeout, leaving time to report.
SAFETY_MARGIN_SECONDS = 15.0

Deadline = Callable[[], float]

NOT_STARTED = (f"not started: less than {SAFETY_MARGIN_SECONDS:.0f} s of the invocation were left "
               f"(SQS delivers it again)")


def start_logging() -> None:
    """First thing in each invocation: the environment's secrets registered (so that no log
    line, error or exception text can show them, whatever is checked first) and our JSON
    logs at LOG_LEVEL (INFO while that is not a level: ``processor`` then refuses it)."""
    redact.register_environment()
    try:
        level = log_level_from_env()
    except ConfigurationError:
        level = "INFO"
    configure_logging(level)


@lru_cache(maxsize=1)
def processor() -> Processor:
    """Built once per execution environment (cold start), reused by later invocations."""
    settings = settings_from_env()
    configure_logging(settings.log_level)
    return create_processor(settings)


def settings_from_env() -> Settings:
    """The environment's settings, with the credentials of the secret ES_SECRET_ARN names."""
    import boto3

    return Settings.from_env(environment_with_secret(os.environ, lambda: boto3.client("secretsmanager")))


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    start_logging()
    invocation = parse_invocation(event)
    deadline_for: Deadline = lambda: deadline(context)  # noqa: E731 - read at each file's start
    if isinstance(invocation, DetectionRequest):
        return run_detection(getattr(context, "function_name", None), deadline_for)
    if isinstance(invocation, RetentionRequest):
        return handle_retention()
    function_name = getattr(context, "function_name", None)  # the metrics' FunctionName
    if isinstance(invocation, SqsBatch):
        return handle_sqs(invocation, deadline_for, function_name)
    if isinstance(invocation, SnsBatch):
        return handle_sns(invocation, deadline_for, function_name)
    return handle_notification(invocation, deadline_for, function_name)


def handle_retention() -> dict[str, Any]:
    """The scheduled event: delete the monthly indexes past ``RETENTION_MONTHS``."""
    months = retention_months_from_env()
    if months < 1:
        log.info("retention not configured (RETENTION_MONTHS)")
        return {"deleted": []}
    loader = processor()
    return {"deleted": retention.apply_retention(loader.cluster, loader.index_prefix, months)}


def handle_sqs(batch: SqsBatch, deadline_for: Deadline, function_name: str | None = None) -> dict[str, Any]:
    """Each message in its own error boundary; the failed ones listed for SQS to redeliver.

    Raises only when every message failed, so that the batch as a whole is retried.
    The metrics of all the messages go out once, before. Once the invocation's time is within
    ``SAFETY_MARGIN_SECONDS`` of its end, the messages not started yet are not started: they are
    listed as failed (and redelivered) rather than cut off by Lambda's timeout mid-file.
    """
    failures = {}
    runs: list[RunResult] = []
    for number, message in enumerate(batch.messages):
        if number and deadline_for() <= time.monotonic():
            log.warning("message not started: the invocation's time is running out",
                        extra={"message_id": message.message_id})
            failures[message.message_id] = NOT_STARTED
            continue
        reason = message_failure(message, deadline_for, runs)
        if reason is not None:
            failures[message.message_id] = reason
    emit_metrics(runs, function_name)
    if failures and len(failures) == len(batch.messages):
        raise BatchFailed(failures)
    return {"batchItemFailures": [{"itemIdentifier": i} for i in failures]}


def message_failure(message: SqsMessage, deadline_for: Deadline, runs: list[RunResult]) -> str | None:
    """Why one SQS message failed (not understood, or a file of it not loaded); None if it did not.

    The message's run, when it had one, is added to ``runs``.
    """
    if isinstance(message, NotUnderstood):
        log.error("message not understood", extra={"message_id": message.message_id,
                                                   "error": message.reason})
        return message.reason
    try:
        run = process_objects(processor(), message.objects, deadline_for)
    except Exception as exc:  # whatever it is, it fails this message alone
        reason = reason_of(exc)
        log.error("message failed", exc_info=not isinstance(exc, LoaderError),
                  extra={"message_id": message.message_id, "error": reason})
        return reason
    runs.append(run)
    if not run.failed:
        return None
    return "; ".join(str(failure) for failure in run.failed)


def handle_sns(batch: SnsBatch, deadline_for: Deadline, function_name: str | None = None) -> dict[str, Any]:
    return load_objects([ref for source in batch.sources for ref in source.objects()], deadline_for,
                        function_name)


def handle_notification(notification: ObjectSource, deadline_for: Deadline,
                        function_name: str | None = None) -> dict[str, Any]:
    """S3 or EventBridge notifications, and CloudTrail's delivery message, sent directly."""
    return load_objects(notification.objects(), deadline_for, function_name)


def load_objects(objects: list[ObjectRef], deadline_for: Deadline,
                 function_name: str | None = None) -> dict[str, Any]:
    """Load the files; raises LoadFailed (the invocation is retried) when one failed."""
    if not objects:
        log.info("no object to load (s3:TestEvent?)")
    run = process_objects(processor(), objects, deadline_for)
    log.info("invocation done", extra=run.summary())
    emit_metrics([run], function_name)
    if run.failed:
        raise LoadFailed(run.failed)
    return run.summary()


def emit_metrics(runs: list[RunResult], function_name: str | None) -> None:
    """The invocation's CloudWatch EMF records (``metrics``), printed once to stdout."""
    metrics.emit(runs, index_prefix_from_env(), function_name)


def run_detection(function_name: str | None = None,
                  deadline_for: Deadline | None = None) -> dict[str, Any]:
    """The DetectionSchedule: each packaged Sigma rule over what arrived since its last run.

    A bad detection setting fails this route alone (ConfigurationError naming it); the
    metrics go out before a failed rule or notification fails the invocation.
    """
    from cloudtrail_es.detections import detect

    detection = DetectionSettings.from_env()
    loader = processor()
    summary, run = detect.run_scheduled(settings_from_env(), loader.cluster, loader.engine,
                                        detection=detection, deadline=deadline_for)
    metrics.emit_detection(summary, function_name)
    errors = run.all_errors()
    if errors:  # retried by Lambda: positions and the outbox make a rerun add nothing twice
        raise detect.DetectionError(f"{len(errors)} detection error(s): {'; '.join(errors[:20])}")
    return summary


def deadline(context: Any) -> float:
    """Monotonic time at which retrying must stop: Lambda's remaining time less a margin."""
    remaining = context.get_remaining_time_in_millis() / 1000.0 if context else 300.0
    return time.monotonic() + max(remaining - SAFETY_MARGIN_SECONDS, 0.0)
