"""Every trigger shape, as moto's own S3 -> SQS / SNS / EventBridge delivery produces it."""
import gzip
import json
import uuid
from datetime import date

import boto3
import pytest
import requests
from fakes import LambdaContext
from support import refresh, search


from cloudtrail_es.commands import retention

# The trail is a load here: the shared corpus adds nothing to what these tests check.
pytestmark = pytest.mark.generated_trail_only


@pytest.fixture()
def queue(aws_env):
    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:10]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    yield url, arn
    sqs.delete_queue(QueueUrl=url)


def sqs_events(queue_url):
    """Lambda SQS events (batches of 10) made of what the queue received."""
    sqs = boto3.client("sqs")
    records = []
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                       WaitTimeSeconds=0).get("Messages", [])
        if not messages:
            break
        for m in messages:
            records.append({"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"],
                            "body": m["Body"], "attributes": {}, "messageAttributes": {},
                            "eventSource": "aws:sqs", "awsRegion": "us-east-1",
                            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q"})
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
    return [{"Records": records[i:i + 10]} for i in range(0, len(records), 10)]


def route_s3_to_sqs(s3, bucket, queue_arn):
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"]}]})


def route_s3_to_sns_to_sqs(s3, bucket, queue_arn):
    sns = boto3.client("sns")
    topic = sns.create_topic(Name=f"t-{bucket}")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
        "TopicConfigurations": [{"TopicArn": topic, "Events": ["s3:ObjectCreated:*"]}]})


def route_s3_to_eventbridge_to_sqs(s3, bucket, queue_arn):
    events = boto3.client("events")
    rule = f"r-{bucket}"
    events.put_rule(Name=rule, EventPattern=json.dumps({
        "source": ["aws.s3"], "detail-type": ["Object Created"],
        "detail": {"bucket": {"name": [bucket]}}}))
    events.put_targets(Rule=rule, Targets=[{"Id": "queue", "Arn": queue_arn}])
    s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"EventBridgeConfiguration": {}})


@pytest.mark.parametrize("route", [route_s3_to_sqs, route_s3_to_sns_to_sqs,
                                   route_s3_to_eventbridge_to_sqs])
def test_sqs_batches_load_good_files_and_report_only_the_broken_message(
        route, handler, s3, bucket, queue, corpus_files, opensearch_url, loader_env):
    queue_url, queue_arn = queue
    route(s3, bucket, queue_arn)
    good = corpus_files[:3]
    for key, data in good:
        s3.put_object(Bucket=bucket, Key=key, Body=data)
    broken = good[0][0].rsplit("_", 1)[0] + "_BrokenName00001.json.gz"
    s3.put_object(Bucket=bucket, Key=broken, Body=b"\x1f\x8bbroken")

    answers = [(event, handler(event, LambdaContext())) for event in sqs_events(queue_url)]

    failed = {f["itemIdentifier"] for _, answer in answers for f in answer["batchItemFailures"]}
    bodies = {r["messageId"]: r["body"] for event, _ in answers for r in event["Records"]}
    assert len(failed) == 1
    [failed_body] = [bodies[i] for i in failed]
    assert "Broken" in failed_body
    expected = sum(len(json.loads(gzip.decompress(d))["Records"]) for _, d in good)
    refresh(opensearch_url, loader_env)
    count = requests.get(f"{opensearch_url}/{loader_env}-*/_count", timeout=30).json()["count"]
    assert count == expected


def test_sns_direct_and_cloudtrail_delivery_messages(handler, s3, bucket, queue, corpus_files,
                                                     opensearch_url, loader_env):
    """SNS -> Lambda (the envelope moto's SNS wrote) carrying CloudTrail's own delivery message."""
    queue_url, queue_arn = queue
    sns = boto3.client("sns")
    topic = sns.create_topic(Name=f"ct-{bucket}")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    keys = [k for k, _ in corpus_files[3:5]]
    for key, data in corpus_files[3:5]:
        s3.put_object(Bucket=bucket, Key=key, Body=data)
    sns.publish(TopicArn=topic, Message=json.dumps({"s3Bucket": bucket, "s3ObjectKey": keys}))
    envelopes = [json.loads(r["body"]) for e in sqs_events(queue_url) for r in e["Records"]]
    sns_event = {"Records": [{"EventSource": "aws:sns", "EventVersion": "1.0", "Sns": envelope}
                             for envelope in envelopes]}

    summary = handler(sns_event, LambdaContext())

    assert summary["files_loaded"] == 2 and summary["files_failed"] == 0
    assert search(opensearch_url, loader_env, {"match_all": {}})


def test_unknown_event_is_an_error_naming_it(handler):
    from cloudtrail_es.aws.notifications import UnknownEvent

    with pytest.raises(UnknownEvent, match='"surprise"'):
        handler({"surprise": 1}, LambdaContext())


def test_retention_deletes_only_expired_months(opensearch_url, index_prefix, monkeypatch, capsys,
                                              handler):
    today = date.today()
    months = []
    for back in range(6):
        year, month = divmod(today.year * 12 + today.month - 1 - back, 12)
        months.append(f"{index_prefix}-{year:04d}-{month + 1:02d}")
    for name in months + [f"{index_prefix}-notes"]:
        requests.put(f"{opensearch_url}/{name}", json={"settings": {"number_of_replicas": 0}},
                     timeout=30).raise_for_status()
    monkeypatch.setenv("INDEX_PREFIX", index_prefix)

    assert retention.main(["--months", "3", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["dry_run"] == sorted(months[3:])
    existing = requests.get(f"{opensearch_url}/_cat/indices/{index_prefix}-*?h=index",
                            timeout=30).text.split()
    assert len(existing) == 7

    monkeypatch.setenv("RETENTION_MONTHS", "3")
    answer = handler({"cloudtrail_es": "retention"}, LambdaContext())

    assert answer["deleted"] == sorted(months[3:])
    existing = requests.get(f"{opensearch_url}/_cat/indices/{index_prefix}-*?h=index",
                            timeout=30).text.split()
    assert sorted(existing) == sorted(months[:3] + [f"{index_prefix}-notes"])
