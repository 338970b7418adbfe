"""The bucket-notification custom resource against moto server's S3, SQS, SNS and EventBridge.

The trail bucket already has notifications (another team's queue and topic);
the resource must add its own entry, keep every other one, replace its own on update, remove
only its own on delete, and refuse an overlapping entry with an error that points to EventBridge.
CloudFormation's side is a local HTTP server standing in for the pre-signed ResponseURL.
"""
from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import boto3
import pytest

from cloudtrail_es.aws import bucketnotification
from cloudtrail_es.aws.bucketnotification import NotificationError, configuration_of, handle

pytestmark = pytest.mark.integration


@pytest.fixture()
def trail(aws_env) -> dict[str, Any]:
    """A trail bucket with other consumers' notifications, and the loader's queue."""
    s3, sqs, sns = boto3.client("s3"), boto3.client("sqs"), boto3.client("sns")
    name = f"trail-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)

    def queue_arn(queue: str) -> str:
        url = sqs.create_queue(QueueName=f"{queue}-{uuid.uuid4().hex[:8]}")["QueueUrl"]
        return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    topic = sns.create_topic(Name=f"audit-{uuid.uuid4().hex[:8]}")["TopicArn"]
    existing = {
        "QueueConfigurations": [{"Id": "other-team", "QueueArn": queue_arn("other"),
                                 "Events": ["s3:ObjectCreated:*"],
                                 "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "exports/"}]}}}],
        "TopicConfigurations": [{"Id": "audit", "TopicArn": topic, "Events": ["s3:ObjectRemoved:*"]}],
    }
    s3.put_bucket_notification_configuration(Bucket=name, NotificationConfiguration=existing)
    return {"s3": s3, "bucket": name, "queue": queue_arn("loader"), "existing": configuration_of(
        s3.get_bucket_notification_configuration(Bucket=name))}


def properties(trail: dict[str, Any], **overrides: str) -> dict[str, str]:
    return {"Bucket": trail["bucket"], "NotificationId": "cloudtrail-es-stack", "QueueArn": trail["queue"],
            "Prefix": "org/AWSLogs/", "Suffix": ".json.gz", "EventBridge": "false", **overrides}


def current(trail: dict[str, Any]) -> dict[str, Any]:
    return configuration_of(trail["s3"].get_bucket_notification_configuration(Bucket=trail["bucket"]))


def ours(config: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in config.get("QueueConfigurations", []) if e["Id"] == "cloudtrail-es-stack"]


def others(config: dict[str, Any]) -> dict[str, Any]:
    return bucketnotification.without_entry(config, "cloudtrail-es-stack")


def test_create_update_delete_keep_every_other_notification(trail):
    s3 = trail["s3"]
    physical_id = bucketnotification.add(s3, properties(trail))
    assert physical_id == f"{trail['bucket']}/cloudtrail-es-stack"
    after_create = current(trail)
    (entry,) = ours(after_create)
    assert entry["QueueArn"] == trail["queue"] and entry["Events"] == ["s3:ObjectCreated:*"]
    rules = {r["Name"].lower(): r["Value"] for r in entry["Filter"]["Key"]["FilterRules"]}
    assert rules == {"prefix": "org/AWSLogs/", "suffix": ".json.gz"}
    assert others(after_create) == trail["existing"]

    bucketnotification.add(s3, properties(trail, Prefix="AWSLogs/"))  # an Update
    after_update = current(trail)
    (entry,) = ours(after_update)
    assert {r["Name"].lower(): r["Value"] for r in entry["Filter"]["Key"]["FilterRules"]}["prefix"] == "AWSLogs/"
    assert others(after_update) == trail["existing"]

    bucketnotification.remove(s3, physical_id)
    assert current(trail) == trail["existing"]
    bucketnotification.remove(s3, physical_id)  # a second Delete finds nothing to do
    assert current(trail) == trail["existing"]


def object_created_events(trail: dict[str, Any]) -> Any:
    """A rule sending the bucket's "Object Created" events to a fresh queue: its receiver."""
    events, sqs = boto3.client("events"), boto3.client("sqs")
    url = sqs.create_queue(QueueName=f"bus-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    rule = f"objects-{uuid.uuid4().hex[:8]}"
    events.put_rule(Name=rule, EventPattern=json.dumps({
        "source": ["aws.s3"], "detail-type": ["Object Created"],
        "detail": {"bucket": {"name": [trail["bucket"]]}}}))
    events.put_targets(Rule=rule, Targets=[{"Id": "q", "Arn": arn}])

    def received(key: str) -> bool:
        trail["s3"].put_object(Bucket=trail["bucket"], Key=key, Body=b"{}")
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        return any(json.loads(m["Body"])["detail"]["object"]["key"] == key for m in messages)
    return received


def test_eventbridge_mode_turns_delivery_on_and_delete_leaves_it(trail):
    s3 = trail["s3"]
    received = object_created_events(trail)
    assert not received("AWSLogs/before.json.gz")
    physical_id = bucketnotification.add(s3, properties(trail, QueueArn="", EventBridge="true"))
    assert received("AWSLogs/after.json.gz")
    assert current(trail) == trail["existing"]  # (moto's answer leaves EventBridge out)
    bucketnotification.remove(s3, physical_id)
    assert received("AWSLogs/after-delete.json.gz")  # other rules may watch the bucket's events too


def test_an_overlapping_notification_is_refused_and_nothing_changes(trail):
    s3 = trail["s3"]
    with pytest.raises(NotificationError) as error:
        bucketnotification.add(s3, properties(trail, Prefix="exports/AWSLogs/", Suffix=""))
    assert "other-team" in str(error.value) and "TriggerMode EventBridge" in str(error.value)
    assert current(trail) == trail["existing"]


def test_delete_of_a_bucket_already_gone_succeeds(aws_env):
    bucketnotification.remove(boto3.client("s3"), f"gone-{uuid.uuid4().hex[:12]}/cloudtrail-es-stack")


# ---------------------------------------------------------------------------
# The whole request, answered to CloudFormation
# ---------------------------------------------------------------------------
class Responses(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers["Content-Length"])
                outer.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


@pytest.fixture()
def cloudformation() -> Iterator[Responses]:
    server = Responses()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def request(server: Responses, kind: str, props: dict[str, str], physical_id: str = "") -> dict[str, Any]:
    event = {"RequestType": kind, "ResponseURL": f"http://127.0.0.1:{server.server_address[1]}/r",
             "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/s/" + "a" * 36,
             "RequestId": uuid.uuid4().hex, "LogicalResourceId": "TrailBucketNotification",
             "ResourceType": "Custom::BucketNotification", "ResourceProperties": props}
    if physical_id:
        event["PhysicalResourceId"] = physical_id
    return event


def test_every_request_is_answered(trail, cloudformation):
    s3 = trail["s3"]
    handle(request(cloudformation, "Create", properties(trail)), s3)
    created = cloudformation.bodies[-1]
    assert created["Status"] == "SUCCESS", created
    assert created["PhysicalResourceId"] == f"{trail['bucket']}/cloudtrail-es-stack"
    assert ours(current(trail))

    handle(request(cloudformation, "Update", properties(trail, Prefix="exports/"),
                   created["PhysicalResourceId"]), s3)
    refused = cloudformation.bodies[-1]
    assert refused["Status"] == "FAILED" and "other-team" in refused["Reason"]
    assert refused["PhysicalResourceId"] == created["PhysicalResourceId"]  # the old entry stays

    handle(request(cloudformation, "Delete", properties(trail), created["PhysicalResourceId"]), s3)
    assert cloudformation.bodies[-1]["Status"] == "SUCCESS"
    assert current(trail) == trail["existing"]


def test_a_failed_create_rolls_back_cleanly(trail, cloudformation):
    s3 = trail["s3"]
    handle(request(cloudformation, "Create", properties(trail, Prefix="exports/")), s3)
    failed = cloudformation.bodies[-1]
    assert failed["Status"] == "FAILED"
    # CloudFormation then deletes what the failed create reported.
    handle(request(cloudformation, "Delete", properties(trail), failed["PhysicalResourceId"]), s3)
    assert cloudformation.bodies[-1]["Status"] == "SUCCESS"
    assert current(trail) == trail["existing"]
