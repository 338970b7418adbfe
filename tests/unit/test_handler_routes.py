"""The Lambda handler as a router, over the in-memory source and the scripted cluster."""
import json
from urllib.parse import quote_plus

import pytest

import fakes
import lambda_function

from cloudtrail_es.aws import handler as routes
from cloudtrail_es.core.errors import BatchFailed, ConfigurationError, LoadFailed, UnknownEvent

GOOD = ["GoodFileNumber1", "GoodFileNumber2", "GoodFileNumber3", "GoodFileNumber4"]


@pytest.fixture()
def loader(monkeypatch):
    """The handler's processor: every GOOD file holds two events; "Broken" files are corrupt."""
    files = {fakes.log_key(name): fakes.trail_file([fakes.event(f"{name}-a"), fakes.event(f"{name}-b")])
             for name in GOOD}
    files[fakes.log_key("BrokenFile00001")] = b"\x1f\x8bbroken"
    cluster = fakes.ScriptedCluster()
    processor = fakes.processor_for(fakes.MemorySource(files), cluster, fakes.MemoryDeadLetters())
    monkeypatch.setattr(routes, "processor", lambda: processor)
    return processor, cluster


def s3_notification(key):
    return {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                         "s3": {"bucket": {"name": "b"}, "object": {"key": quote_plus(key, safe="/")}}}]}


def sns_envelope(message):
    return {"Type": "Notification", "TopicArn": "arn:aws:sns:eu-west-1:1:t", "Message": json.dumps(message)}


def eventbridge(key):
    return {"source": "aws.s3", "detail-type": "Object Created",
            "detail": {"bucket": {"name": "b"}, "object": {"key": key}}}


def cloudtrail_delivery(*keys):
    return {"s3Bucket": "b", "s3ObjectKey": list(keys)}


def sqs(**bodies):
    return {"Records": [{"messageId": message_id, "eventSource": "aws:sqs",
                         "body": body if isinstance(body, str) else json.dumps(body)}
                        for message_id, body in bodies.items()]}


POISON = {
    "not_json": "not json {",
    "unknown_shape": {"hello": "world"},
    "s3_without_s3": {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put"}]},
    "eventbridge_without_detail": {"source": "aws.s3", "detail-type": "Object Created"},
    "sns_not_json": {"Type": "Notification", "TopicArn": "t", "Message": "{{"},
    "delivery_key_not_text": {"s3Bucket": "b", "s3ObjectKey": [{"k": 1}]},
}


def test_sqs_batch_of_every_shape_lists_exactly_the_poison_messages(loader):
    processor, cluster = loader
    good = {
        "s3": s3_notification(fakes.log_key(GOOD[0])),
        "sns_s3": sns_envelope(s3_notification(fakes.log_key(GOOD[1]))),
        "cloudtrail": sns_envelope(cloudtrail_delivery(fakes.log_key(GOOD[2]))),
        "eventbridge": eventbridge(fakes.log_key(GOOD[3])),
        "test_event": {"Event": "s3:TestEvent", "Service": "Amazon S3"},
    }
    broken = {"broken_file": s3_notification(fakes.log_key("BrokenFile00001")),
              "missing_file": eventbridge(fakes.log_key("NotThereAtAll1"))}

    answer = lambda_function.lambda_handler(sqs(**good, **POISON, **broken), None)

    failed = {f["itemIdentifier"] for f in answer["batchItemFailures"]}
    assert failed == set(POISON) | set(broken)
    assert {doc_id for _, doc_id in cluster.documents} == {f"{n}-{x}" for n in GOOD for x in "ab"}


def test_an_unexpected_exception_fails_its_message_alone(loader, monkeypatch):
    processor, cluster = loader
    real = processor.process_file

    def process_file(bucket, key, deadline):
        if GOOD[0] in key:
            raise RuntimeError("surprise")
        return real(bucket, key, deadline)

    monkeypatch.setattr(processor, "process_file", process_file)

    answer = lambda_function.lambda_handler(sqs(first=s3_notification(fakes.log_key(GOOD[0])),
                                                second=s3_notification(fakes.log_key(GOOD[1]))), None)

    assert answer == {"batchItemFailures": [{"itemIdentifier": "first"}]}
    assert {doc_id for _, doc_id in cluster.documents} == {f"{GOOD[1]}-a", f"{GOOD[1]}-b"}


def test_a_batch_whose_every_message_failed_raises(loader):
    with pytest.raises(BatchFailed, match="all 2 message"):
        lambda_function.lambda_handler(sqs(a=POISON["not_json"], b=POISON["s3_without_s3"]), None)


@pytest.mark.parametrize("shape", ["s3", "eventbridge", "cloudtrail", "sns"])
def test_direct_invocations_load_their_files(loader, shape):
    processor, cluster = loader
    key = fakes.log_key(GOOD[0])
    event = {"s3": s3_notification(key), "eventbridge": eventbridge(key),
             "cloudtrail": cloudtrail_delivery(key),
             "sns": {"Records": [{"EventSource": "aws:sns", "Sns": sns_envelope(s3_notification(key))}]},
             }[shape]

    summary = lambda_function.lambda_handler(event, None)

    assert (summary["files_loaded"], summary["indexed"], summary["files_failed"]) == (1, 2, 0)


def test_a_direct_invocation_with_a_failed_file_raises_naming_it(loader):
    with pytest.raises(LoadFailed, match="BrokenFile00001"):
        lambda_function.lambda_handler(s3_notification(fakes.log_key("BrokenFile00001")), None)


def test_a_malformed_direct_notification_raises_naming_it(loader):
    with pytest.raises(UnknownEvent, match="without detail"):
        lambda_function.lambda_handler(POISON["eventbridge_without_detail"], None)
    with pytest.raises(UnknownEvent, match='"surprise"'):
        lambda_function.lambda_handler({"surprise": 1}, None)


def test_retention_deletes_expired_months_only_when_configured(loader, monkeypatch):
    processor, cluster = loader
    cluster.indexes |= {"ct-2000-01", "ct-2000-02", "ct-2999-12", "other"}
    monkeypatch.delenv("RETENTION_MONTHS", raising=False)
    assert lambda_function.lambda_handler({"cloudtrail_es": "retention"}, None) == {"deleted": []}

    monkeypatch.setenv("RETENTION_MONTHS", "3")
    answer = lambda_function.lambda_handler({"source": "aws.events", "detail-type": "Scheduled Event"}, None)

    assert answer == {"deleted": ["ct-2000-01", "ct-2000-02"]}
    assert cluster.indexes == {"ct-2999-12", "other"}


def test_a_bad_retention_setting_names_the_variable(loader, monkeypatch):
    monkeypatch.setenv("RETENTION_MONTHS", "three")
    with pytest.raises(ConfigurationError, match="RETENTION_MONTHS='three'"):
        lambda_function.lambda_handler({"cloudtrail_es": "retention"}, None)
