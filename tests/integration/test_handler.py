"""The Lambda handler fed with S3 notifications that moto's own S3 -> SQS delivery produced."""
import json

import boto3
import pytest
from fakes import LambdaContext
from support import assert_corpus_indexed, search, upload


from cloudtrail_es.core.errors import LoadFailed


@pytest.fixture()
def notified_bucket(s3, bucket):
    """A bucket whose object-created notifications go to an SQS queue; yields (bucket, drain)."""
    sqs = boto3.client("sqs")
    queue_url = sqs.create_queue(QueueName=f"{bucket}-events")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"]}]})

    def drain():
        bodies = []
        while True:
            messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                           WaitTimeSeconds=0).get("Messages", [])
            if not messages:
                return bodies
            for message in messages:
                bodies.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])

    yield bucket, drain
    sqs.delete_queue(QueueUrl=queue_url)


def test_handler_loads_every_corpus_event_from_real_notifications(
        handler, s3, notified_bucket, corpus_files, corpus_expectations, opensearch_url,
        loader_env):
    bucket, drain = notified_bucket
    upload(s3, bucket, corpus_files)
    notifications = drain()
    assert any(n.get("Event") == "s3:TestEvent" for n in notifications)

    results = [handler(notification, LambdaContext()) for notification in notifications]

    assert sum(r["files_loaded"] for r in results) == len(corpus_files)
    assert sum(r["indexed"] for r in results) == len(corpus_expectations)
    assert sum(r["degraded"] + r["dead_lettered"] + r["files_failed"] for r in results) == 0
    assert_corpus_indexed(opensearch_url, loader_env, corpus_expectations)
    assert search(opensearch_url, loader_env, {"bool": {"filter": [
        {"term": {"eventName": "RunInstances"}},
        {"exists": {"field": "responseElements_flattened.instanceId"}}]}})


def test_encoded_keys_are_decoded_and_other_objects_skipped(
        handler, s3, notified_bucket, corpus_files, opensearch_url, loader_env, caplog):
    bucket, drain = notified_bucket
    key, data = corpus_files[0]
    odd_key = "odd prefix+=/" + key.rsplit("/", 1)[-1]
    s3.put_object(Bucket=bucket, Key=odd_key, Body=data)
    s3.put_object(Bucket=bucket, Key="AWSLogs/1/CloudTrail-Digest/x/1_CloudTrail-Digest_x.json.gz",
                  Body=b"{}")
    s3.put_object(Bucket=bucket, Key="readme.txt", Body=b"hello")

    results = [handler(n, LambdaContext()) for n in drain()]

    assert sum(r["files_loaded"] for r in results) == 1
    assert sum(r["files_skipped"] for r in results) == 2
    skipped = [r for r in caplog.records if r.getMessage().startswith("skipped")]
    assert {getattr(r, "key", None) for r in skipped} >= {"readme.txt"}


def test_a_failed_file_fails_the_invocation_after_the_others_were_attempted(
        handler, s3, bucket, corpus_files, opensearch_url, loader_env):
    (good_key, good_data), (other_key, other_data) = corpus_files[:2]
    bad_key = good_key.replace(".json.gz", "").rsplit("_", 1)[0] + "_NotJsonAtAll0001.json.gz"
    for key, data in ((bad_key, b"this is not json"), (good_key, good_data),
                      (other_key, other_data)):
        s3.put_object(Bucket=bucket, Key=key, Body=data)
    missing_key = good_key.replace(".json.gz", "").rsplit("_", 1)[0] + "_DeletedMeanwhile.json.gz"
    notification = {"Records": [
        {"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
         "s3": {"bucket": {"name": bucket}, "object": {"key": key}}}
        for key in (bad_key, good_key, missing_key, other_key)]}

    with pytest.raises(LoadFailed) as raised:
        handler(notification, LambdaContext())

    failures = {f.key: f.reason for f in raised.value.failures}
    assert set(failures) == {bad_key, missing_key}
    assert "not valid JSON" in failures[bad_key] and "NoSuchKey" in failures[missing_key]
    assert search(opensearch_url, loader_env, {"match_all": {}})
