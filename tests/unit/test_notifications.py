import json
from pathlib import Path

import pytest

from cloudtrail_es.aws.notifications import (
    RetentionRequest, S3Notification, SnsBatch,
    NotUnderstood, SqsBatch, Understood, UnknownEvent, parse_invocation)
from cloudtrail_es.core.refs import ObjectRef

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


def test_sqs_batch_unwraps_every_shape_and_keeps_unknown_ones_as_not_understood():
    batch = parse_invocation(load("sqs_batch.json"))
    assert isinstance(batch, SqsBatch)
    kinds = {m.message_id: type(m) for m in batch.messages}
    assert kinds == {"msg-s3": Understood, "msg-sns": Understood, "msg-cloudtrail": Understood,
                     "msg-eventbridge": Understood, "msg-junk": NotUnderstood}
    objects = {m.message_id: m.objects for m in batch.messages if isinstance(m, Understood)}
    assert objects["msg-s3"] == [ObjectRef("my-trail-bucket", LOG + "20240115T0910Z_AbCd1234EfGh5678.json.gz")]
    assert objects["msg-sns"] == [ObjectRef("my-trail-bucket", "a b/c.json.gz")]
    # CloudTrail's and EventBridge's keys are not URL-encoded: a "+" stays a "+".
    assert objects["msg-cloudtrail"] == [ObjectRef("my-trail-bucket", LOG + "20240115T0915Z_x+y.json.gz")]
    assert objects["msg-eventbridge"] == [ObjectRef("my-trail-bucket", "odd key+plus.json.gz")]
    [junk] = [m for m in batch.messages if isinstance(m, NotUnderstood)]
    assert junk.message_id == "msg-junk" and '{"hello": "world"}' in junk.reason


POISON_BODIES = {
    "s3 record without s3": {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put"}]},
    "s3 key not a string": {"Records": [{"eventSource": "aws:s3", "s3": {"bucket": {"name": "b"},
                                                                         "object": {"key": 7}}}]},
    "eventbridge without detail": {"source": "aws.s3", "detail-type": "Object Created"},
    "eventbridge detail without object": {"source": "aws.s3", "detail-type": "Object Created",
                                          "detail": {"bucket": {"name": "b"}}},
    "cloudtrail delivery with a number for a key": {"s3Bucket": "b", "s3ObjectKey": [1]},
    "sns envelope whose message is not json": {"Type": "Notification", "TopicArn": "t", "Message": "{"},
    "not json": "{{{",
    "a json list": [1, 2],
}


@pytest.mark.parametrize("name", sorted(POISON_BODIES))
def test_a_malformed_but_recognised_message_is_not_understood_never_raised(name):
    body = POISON_BODIES[name]
    record = {"messageId": "m1", "eventSource": "aws:sqs",
              "body": body if isinstance(body, str) else json.dumps(body)}
    [message] = parse_invocation({"Records": [record]}).messages
    assert isinstance(message, NotUnderstood) and message.message_id == "m1" and message.reason


def test_a_direct_malformed_notification_raises_unknown_event_naming_it():
    with pytest.raises(UnknownEvent, match="without s3"):
        parse_invocation(POISON_BODIES["s3 record without s3"]).objects()
    with pytest.raises(UnknownEvent, match="without detail"):
        parse_invocation(POISON_BODIES["eventbridge without detail"]).objects()


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
