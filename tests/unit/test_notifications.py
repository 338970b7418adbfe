import json
from pathlib import Path

import pytest

from cloudtrail_es.notifications import (
    CloudTrailDelivery, EventBridgeObjectCreated, RetentionRequest, S3Notification, SnsBatch,
    SqsBatch, UnknownEvent, parse_invocation)
from cloudtrail_es.processor import ObjectRef

EVENTS = Path(__file__).resolve().parents[1] / "events"
LOG = "AWSLogs/111122223333/CloudTrail/eu-west-1/2024/01/15/111122223333_CloudTrail_eu-west-1_"


def load(name):
    return json.loads((EVENTS / name).read_text())


def test_s3_notification_keys_are_url_decoded():
    invocation = parse_invocation(load("s3_put.json"))
    assert isinstance(invocation, S3Notification)
    assert invocation.objects() == [
        ObjectRef("my-trail-bucket", LOG + "20240115T0910Z_AbCd1234EfGh5678.json.gz"),
        ObjectRef("my-trail-bucket", "odd prefix/a+b=c/111122223333_CloudTrail_eu-west-1_20240115T0915Z_x.json.gz"),
    ]


def test_test_event_names_no_object():
    invocation = parse_invocation(load("s3_test_event.json"))
    assert invocation.is_test_event and invocation.objects() == []


def test_sqs_batch_unwraps_every_shape_and_keeps_unknown_ones_as_errors():
    batch = parse_invocation(load("sqs_batch.json"))
    assert isinstance(batch, SqsBatch)
    kinds = {m.message_id: type(m.source) for m in batch.messages}
    assert kinds == {"msg-s3": S3Notification, "msg-sns": S3Notification,
                     "msg-cloudtrail": CloudTrailDelivery, "msg-eventbridge": EventBridgeObjectCreated,
                     "msg-junk": type(None)}
    objects = {m.message_id: m.source.objects() for m in batch.messages if m.source}
    assert objects["msg-sns"] == [ObjectRef("my-trail-bucket", "a b/c.json.gz")]
    # CloudTrail's and EventBridge's keys are not URL-encoded: a "+" stays a "+".
    assert objects["msg-cloudtrail"] == [ObjectRef("my-trail-bucket", LOG + "20240115T0915Z_x+y.json.gz")]
    assert objects["msg-eventbridge"] == [ObjectRef("my-trail-bucket", "odd key+plus.json.gz")]
    [junk] = [m for m in batch.messages if m.error]
    assert junk.message_id == "msg-junk" and '{"hello": "world"}' in junk.error


def test_sns_batch_of_cloudtrail_delivery_messages():
    batch = parse_invocation(load("sns_cloudtrail.json"))
    assert isinstance(batch, SnsBatch)
    assert [o.key.rsplit("_", 1)[-1] for s in batch.sources for o in s.objects()] == [
        "one.json.gz", "two.json.gz"]


def test_eventbridge_object_created_direct():
    invocation = parse_invocation(load("eventbridge_object_created.json"))
    assert invocation.objects() == [ObjectRef("my-trail-bucket", LOG + "20240115T0920Z_a+b.json.gz")]


@pytest.mark.parametrize("event", [load("scheduled_event.json"), {"cloudtrail_es": "retention"}])
def test_scheduled_events_ask_for_retention(event):
    assert isinstance(parse_invocation(event), RetentionRequest)


@pytest.mark.parametrize("event", [{}, {"Records": []}, {"Records": [{"eventSource": "aws:kinesis"}]},
                                   "text", None, {"source": "aws.s3", "detail-type": "Object Deleted"}])
def test_unknown_shapes_are_named_in_the_error(event):
    with pytest.raises(UnknownEvent, match="not a notification of a CloudTrail file"):
        parse_invocation(event)
