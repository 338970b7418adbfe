"""Run the Lambda handler locally against the local services, as SQS would invoke it.

For each CloudTrail file in a bucket of the local moto server, an S3 notification goes to an
SQS queue (as the stack's bucket -> queue notification would send it); the queue's messages are
then received in batches of up to 10 and given to ``lambda_function.lambda_handler`` with a fake
context, each result printed as a JSON line. Messages the handler did not report as failed are
deleted, as Lambda does with ReportBatchItemFailures; the others stay in the queue.

    make -f Makefile.pip lambda-local                      # s3://cloudtrail-demo/AWSLogs/ (make demo)
    python scripts/local_lambda.py BUCKET [PREFIX] [--queue NAME]

The environment is the Lambda's (ES_HOSTNAME, ES_AUTH, INDEX_PREFIX...); what is unset points at
the local services (OpenSearch on OPENSEARCH_PORT, moto on MOTO_PORT, no auth). Exit 0 when every
message was handled, 1 when some failed, 2 when the bucket holds no CloudTrail file.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

#: Lambda's maximum timeout: the handler stops retrying some seconds before it.
TIMEOUT_SECONDS = 900


class FakeContext:
    """What the handler reads of Lambda's context object."""

    def __init__(self, timeout_seconds: float = TIMEOUT_SECONDS) -> None:
        self.function_name = "CloudTrail_to_Elasticsearch-local"
        self.aws_request_id = str(uuid.uuid4())
        self._ends = time.monotonic() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(int((self._ends - time.monotonic()) * 1000), 0)


def local_environment() -> None:
    """The local services, for whatever the environment does not already say."""
    defaults = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{os.environ.get('MOTO_PORT', '5000')}",
        "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
        "ES_HOSTNAME": f"http://127.0.0.1:{os.environ.get('OPENSEARCH_PORT', '9200')}",
        "ES_AUTH": "none",
    }
    for name, value in defaults.items():
        os.environ.setdefault(name, value)


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """The event Lambda's SQS event source mapping sends for a batch of messages."""
    return {"Records": [{
        "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
        "attributes": {}, "messageAttributes": {}, "md5OfBody": m.get("MD5OfBody", ""),
        "eventSource": "aws:sqs", "eventSourceARN": queue_arn, "awsRegion": os.environ["AWS_REGION"],
    } for m in messages]}


def run(bucket: str, prefix: str, queue_name: str, out: Any = sys.stdout) -> int:
    import boto3

    import lambda_function

    from cloudtrail_es.backfill import run as backfill
    from cloudtrail_es.read import keys
    from cloudtrail_es.backfill.selection import Filters, S3Listing

    files = [ref for ref in S3Listing(boto3.client("s3")).objects(bucket, prefix, Filters())
             if keys.is_log_file_key(ref.key)]
    if not files:
        print(f"local_lambda: no CloudTrail log file in s3://{bucket}/{prefix}", file=sys.stderr)
        return 2
    sqs = boto3.client("sqs")
    queue_url = sqs.create_queue(QueueName=queue_name)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    sent = backfill.enqueue(sqs, queue_url, files)
    print(json.dumps({"queue": queue_url, "messages_sent": sent["files_enqueued"]}), file=out)
    failed = 0
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                       VisibilityTimeout=TIMEOUT_SECONDS).get("Messages", [])
        if not messages:
            break
        result = invoke(lambda_function.lambda_handler, sqs_event(messages, queue_arn))
        print(json.dumps(result, default=str), file=out)
        failures = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
        failed += len(failures) if "error" not in result else len(messages)
        if "error" not in result:
            for m in messages:
                if m["MessageId"] not in failures:
                    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
    return 1 if failed or sent["failed"] else 0


def invoke(handler: Any, event: dict[str, Any]) -> dict[str, Any]:
    """The handler's answer; an exception (the whole batch failed) as Lambda reports it."""
    try:
        return handler(event, FakeContext())
    except Exception as exc:  # Lambda reports any exception as the invocation's error
        return {"error": type(exc).__name__, "message": str(exc), "messages": len(event["Records"])}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bucket", nargs="?", default="cloudtrail-demo",
                        help="moto bucket holding CloudTrail files (default: %(default)s, from make demo)")
    parser.add_argument("prefix", nargs="?", default="AWSLogs/", help="default: %(default)s")
    parser.add_argument("--queue", default=None, help="SQS queue name (default: BUCKET-local-lambda)")
    args = parser.parse_args(argv)
    local_environment()
    from botocore.exceptions import ClientError

    try:
        return run(args.bucket, args.prefix, args.queue or f"{args.bucket}-local-lambda")
    except ClientError as exc:
        print(f"local_lambda: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
