"""AWS Lambda entry point: parse the notification, hand each object to the processor."""
from __future__ import annotations

import logging
import os
import time
from functools import lru_cache
from typing import Any

from cloudtrail_es.config import Settings
from cloudtrail_es.errors import LoadFailed
from cloudtrail_es.logs import configure_logging
from cloudtrail_es.notifications import parse_notification
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
    notification = parse_notification(event)
    if notification.is_test_event:
        log.info("skipped: s3:TestEvent", extra={"bucket": event.get("Bucket")})
    run = process_objects(processor(), notification.objects(), lambda: deadline(context))
    log.info("invocation done", extra=run.summary())
    if run.failed:
        raise LoadFailed(run.failed)
    return run.summary()


def deadline(context: Any) -> float:
    """Monotonic time at which retrying must stop: Lambda's remaining time less a margin."""
    remaining = context.get_remaining_time_in_millis() / 1000.0 if context else 300.0
    return time.monotonic() + max(remaining - SAFETY_MARGIN_SECONDS, 0.0)
