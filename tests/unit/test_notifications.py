import json
from pathlib import Path

import pytest

from cloudtrail_es.notifications import UnknownEvent, parse_notification
from cloudtrail_es.processor import ObjectRef

EVENTS = Path(__file__).resolve().parents[1] / "events"


def load(name):
    return json.loads((EVENTS / name).read_text())


def test_s3_notification_keys_are_url_decoded():
    notification = parse_notification(load("s3_put.json"))
    assert notification.objects() == [
        ObjectRef("my-trail-bucket",
                  "AWSLogs/111122223333/CloudTrail/eu-west-1/2024/01/15/"
                  "111122223333_CloudTrail_eu-west-1_20240115T0910Z_AbCd1234EfGh5678.json.gz"),
        ObjectRef("my-trail-bucket", "odd prefix/a+b=c/111122223333_CloudTrail_eu-west-1_20240115T0915Z_x.json.gz"),
    ]


def test_test_event_names_no_object():
    notification = parse_notification(load("s3_test_event.json"))
    assert notification.is_test_event
    assert notification.objects() == []


@pytest.mark.parametrize("event", [{}, {"Records": []}, {"Records": [{"eventSource": "aws:sqs"}]},
                                   "text", None])
def test_unknown_shapes_are_named_in_the_error(event):
    with pytest.raises(UnknownEvent, match="not an S3 event notification"):
        parse_notification(event)
