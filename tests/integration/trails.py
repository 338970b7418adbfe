"""Synthetic CloudTrail log files and the notifications that announce them, for tests that run
the loader as Lambda would (in process or in the Lambda runtime emulator)."""
from __future__ import annotations

import gzip
import json
import uuid
from datetime import datetime, timedelta, timezone
from urllib.parse import quote_plus

ACCOUNT = "111122223333"
REGION = "eu-west-1"


def log_key(when: datetime, name: str | None = None) -> str:
    """A CloudTrail log file key for ``when`` (its index: ``<prefix>-YYYY-MM`` of that date)."""
    name = name or uuid.uuid4().hex[:16]
    return (f"AWSLogs/{ACCOUNT}/CloudTrail/{REGION}/{when:%Y/%m/%d}/"
            f"{ACCOUNT}_CloudTrail_{REGION}_{when:%Y%m%dT%H%MZ}_{name}.json.gz")


def events(count: int, when: datetime, **fields) -> list[dict]:
    """``count`` events at ``when``, each with its own eventID (the documents' _id)."""
    return [{"eventVersion": "1.08", "eventID": str(uuid.uuid4()), "eventTime": f"{when:%Y-%m-%dT%H:%M:%SZ}",
             "eventSource": "s3.amazonaws.com", "eventName": "GetObject", "awsRegion": REGION,
             "sourceIPAddress": "192.0.2.10", "recipientAccountId": ACCOUNT,
             "userIdentity": {"type": "IAMUser", "arn": f"arn:aws:iam::{ACCOUNT}:user/alice"},
             "requestParameters": {"bucketName": "data", "key": f"k{number}"}, **fields}
            for number in range(count)]


def trail_file(records: list[dict]) -> bytes:
    return gzip.compress(json.dumps({"Records": records}).encode())


def recently(minutes: int = 5) -> datetime:
    return (datetime.now(timezone.utc) - timedelta(minutes=minutes)).replace(microsecond=0)


def s3_notification(bucket: str, key: str) -> dict:
    return {"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": REGION,
                         "eventName": "ObjectCreated:Put",
                         "s3": {"bucket": {"name": bucket}, "object": {"key": quote_plus(key, safe="/")}}}]}


def eventbridge_notification(bucket: str, key: str) -> dict:
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": "Object Created", "source": "aws.s3",
            "account": ACCOUNT, "region": REGION, "resources": [f"arn:aws:s3:::{bucket}"],
            "detail": {"bucket": {"name": bucket}, "object": {"key": key}, "reason": "PutObject"}}


def sqs_batch(bodies: dict[str, object]) -> dict:
    """An SQS event source batch: message id -> body (a dict is sent as its JSON)."""
    return {"Records": [{"messageId": message_id, "receiptHandle": f"rh-{message_id}", "eventSource": "aws:sqs",
                         "awsRegion": REGION, "attributes": {"ApproximateReceiveCount": "1"},
                         "eventSourceARN": f"arn:aws:sqs:{REGION}:{ACCOUNT}:cloudtrail-events",
                         "body": body if isinstance(body, str) else json.dumps(body)}
                        for message_id, body in bodies.items()]}


def scheduled(kind: str) -> dict:
    """The input of the stack's schedules (cloudformation.yml): ``detect`` or ``retention``."""
    return {"cloudtrail_es": kind}
