"""AWS Lambda entry point: recognise what invoked us, hand each object to the processor."""
from __future__ import annotations

import logging
import os
import time
from functools import lru_cache
from typing import Any

from cloudtrail_es import metrics, retention
from cloudtrail_es.config import Settings, index_prefix_from_env
from cloudtrail_es.errors import LoadFailed
from cloudtrail_es.logs import configure_logging
from cloudtrail_es.notifications import RetentionRequest, SqsBatch, SnsBatch, parse_invocation
from cloudtrail_es.processor import Processor, create_processor, process_objects

log = logging.getLogger("cloudtrail_es.handler")

#: Retries stop this long before Lambda's own timeout, leaving time to report.
SAFETY_MARGIN_SECONDS = 15.0


@lru_cache(maxsize=1)
def processor() -> Processor:
    """Built once per execution environment (cold start), reused by later invocations."""
    configure_logging(os.environ.get("LOG_LEVEL", "INFO"))
    return create_processor(Settings.from_env())


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    invocation = parse_invocation(event)
    deadline_for = lambda: deadline(context)  # noqa: E731 - read at each file's start
    if isinstance(invocation, RetentionRequest):
        months = int(os.environ.get("RETENTION_MONTHS", "0"))
        if months < 1:
            log.info("retention not configured (RETENTION_MONTHS)")
            return {"deleted": []}
        loader = processor()
        return {"deleted": retention.apply_retention(loader.cluster, loader.index_prefix, months)}
    if isinstance(invocation, SqsBatch):
        failed_ids = []
        runs = []
        for message in invocation.messages:
            if message.error:
                log.error("message not understood", extra={"message_id": message.message_id,
                                                           "error": message.error})
                failed_ids.append(message.message_id)
                continue
            runs.append(process_objects(processor(), message.source.objects(), deadline_for))
            if runs[-1].failed:
                failed_ids.append(message.message_id)
        metrics.emit(runs, index_prefix_from_env(), getattr(context, "function_name", None))
        return {"batchItemFailures": [{"itemIdentifier": i} for i in failed_ids]}
    sources = invocation.sources if isinstance(invocation, SnsBatch) else [invocation]
    objects = [ref for source in sources for ref in source.objects()]
    if not objects:
        log.info("no object to load (s3:TestEvent?)")
    run = process_objects(processor(), objects, deadline_for)
    log.info("invocation done", extra=run.summary())
    metrics.emit([run], index_prefix_from_env(), getattr(context, "function_name", None))
    if run.failed:
        raise LoadFailed(run.failed)
    return run.summary()


def deadline(context: Any) -> float:
    """Monotonic time at which retrying must stop: Lambda's remaining time less a margin."""
    remaining = context.get_remaining_time_in_millis() / 1000.0 if context else 300.0
    return time.monotonic() + max(remaining - SAFETY_MARGIN_SECONDS, 0.0)
