"""The handler's EMF records after a real load: counts, filters and lags of a file we made.

A corpus file is rewritten so that its events happened minutes ago (the newest exactly
``NEWEST_AGE`` seconds before the upload), put into moto S3 and loaded by the Lambda handler
into the real OpenSearch. The lags it reports must lie between what the clock says before
and after the load. And the request counters, through a fault proxy that answers 429.
"""
import gzip
import json
import time
from datetime import datetime, timezone

import pytest
from fakes import LambdaContext
from emf_schema import assert_valid_emf
from faultproxy import FaultProxy, is_bulk_path
from support import ids_by_index, moto_source


from cloudtrail_es.aws import metrics
from cloudtrail_es.backfill.run import notification_for
from cloudtrail_es.core.config import Settings
from cloudtrail_es.write.deadletter import LocalDeadLetters
from cloudtrail_es.write.processor import ObjectRef, create_processor, process_objects
from cloudtrail_es.core.retry import Backoff

# The trail is a load here: the shared corpus adds nothing to what these tests check.
pytestmark = [pytest.mark.integration, pytest.mark.generated_trail_only]

NEWEST_AGE = 90.0
EXCLUDE = "eventName=Describe*;readOnly=true"
FUNCTION = "CloudTrail_to_Elasticsearch"


def recent_file(corpus_files, now):
    """The corpus file with the most events, its events spread over the 10 minutes before
    ``now - NEWEST_AGE`` (newest last), under a key of today's date."""
    _, data = max(corpus_files, key=lambda item: len(item[1]))
    events = json.loads(gzip.decompress(data))["Records"]
    newest = int(now - NEWEST_AGE)
    for n, event in enumerate(events):
        moment = newest - (len(events) - 1 - n) * 600 // len(events)
        event["eventTime"] = datetime.fromtimestamp(moment, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    today = datetime.fromtimestamp(now, timezone.utc)
    key = (f"AWSLogs/111122223333/CloudTrail/us-east-1/{today:%Y/%m/%d}/"
           f"111122223333_CloudTrail_us-east-1_{today:%Y%m%dT%H%M}Z_LagTest0001.json.gz")
    return key, gzip.compress(json.dumps({"Records": events}).encode()), events, newest


def emf_records(out):
    return [assert_valid_emf(line) for line in out.splitlines() if line.startswith('{"_aws"')]


def test_lags_and_counts_of_a_file_loaded_by_the_handler(
        handler, s3, bucket, corpus_files, monkeypatch, loader_env, opensearch_url, capsys):
    monkeypatch.setenv("EXCLUDE_EVENTS", EXCLUDE)
    key, data, events, newest = recent_file(corpus_files, time.time())
    def kept(event):
        return not (str(event.get("eventName", "")).startswith("Describe") or event.get("readOnly") is True)
    excluded = sum(1 for e in events if not kept(e))
    # The lag runs from the newest event sent: an excluded one is never sent.
    newest = max(datetime.strptime(e["eventTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()
                 for e in events if kept(e))
    capsys.readouterr()

    put_at = time.time()
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    started = time.time()
    result = handler(json.loads(notification_for(ObjectRef(bucket, key, len(data)))), LambdaContext(FUNCTION))
    ended = time.time()

    function, per_index = emf_records(capsys.readouterr().out)
    index = f"{loader_env}-{datetime.fromtimestamp(put_at, timezone.utc):%Y-%m}"
    assert per_index["Index"] == index and "Index" not in function
    for record in (function, per_index):
        assert record["FunctionName"] == FUNCTION
        assert record["EventsRead"] == len(events) == result["events_read"]
        assert record["EventsFiltered"] == excluded == result["filtered"] > 0
        assert record["EventsIndexed"] + record["EventsDegraded"] == len(events) - excluded
        assert record["EventsDeadLettered"] == record["FilesFailed"] == 0
        assert record["FilesLoaded"] == 1
    assert function["BulkRequests"] == result["bulk_requests"] >= 1
    assert function["Throttled"] == 0 and "BulkRequests" not in per_index

    [lag] = function["IngestionLagSeconds"]
    assert per_index["IngestionLagSeconds"] == [lag] and result["ingestion_lag_seconds_max"] == lag
    assert started - newest - 0.01 <= lag <= ended - newest + 0.01, (started - newest, lag, ended - newest)
    assert lag < 600, "sane: the file was loaded within seconds of NEWEST_AGE"
    [object_lag] = function["ObjectLagSeconds"]
    # S3's LastModified has whole seconds: the object is up to 1 s older than put_at says.
    assert 0 <= object_lag <= ended - put_at + 1.0
    assert object_lag <= lag

    assert len(ids_by_index(opensearch_url, loader_env)) == len(events) - excluded


def test_an_sqs_batch_is_one_set_of_records(handler, s3, bucket, corpus_files, loader_env, capsys):
    files = corpus_files[:3]
    for key, data in files:
        s3.put_object(Bucket=bucket, Key=key, Body=data)
    messages = [{"messageId": f"m{n}", "eventSource": "aws:sqs",
                 "body": notification_for(ObjectRef(bucket, key, len(data)))}
                for n, (key, data) in enumerate(files)]
    capsys.readouterr()

    assert handler({"Records": messages}, LambdaContext(FUNCTION)) == {"batchItemFailures": []}

    records = emf_records(capsys.readouterr().out)
    function = [r for r in records if "Index" not in r]
    assert len(function) == 1
    expected_events = sum(len(json.loads(gzip.decompress(data))["Records"]) for _, data in files)
    assert function[0]["EventsRead"] == expected_events and function[0]["FilesLoaded"] == 3
    assert sum(r["EventsRead"] for r in records if "Index" in r) == expected_events
    assert len(function[0]["IngestionLagSeconds"]) == len(function[0]["ObjectLagSeconds"]) == 3


def test_bulk_requests_retries_and_429s_are_counted_as_the_cluster_answered(
        opensearch_url, moto_url, index_prefix, corpus_files, tmp_path, capsys):
    """Through a proxy in front of the real OpenSearch: a whole-request 429, then every item
    answered 429, then through; the counters and the records say exactly that."""
    key, data = corpus_files[0]
    source, bucket = moto_source(moto_url, [(key, data)])
    events = len(json.loads(gzip.decompress(data))["Records"])
    with FaultProxy(opensearch_url) as proxy:
        proxy.script = ["429", "item_429"]
        processor = create_processor(
            Settings(es_url=proxy.url, auth="none", index_prefix=index_prefix, index_replicas=0),
            source=source, dead_letters=LocalDeadLetters(tmp_path),
            backoff=Backoff(base=0.02, cap=0.2))
        run = process_objects(processor, [ObjectRef(bucket, key)], lambda: time.monotonic() + 120)
        bulk_seen = sum(1 for _, path, _, _ in proxy.requests if is_bulk_path(path))

    summary = run.summary()
    assert not run.failed and summary["indexed"] == events
    assert summary["bulk_requests"] == bulk_seen == 3
    assert summary["throttled"] == 2 and summary["retried"] == 2 * events
    capsys.readouterr()
    metrics.emit([run], index_prefix, "f")
    function, per_index = emf_records(capsys.readouterr().out)
    assert (function["BulkRequests"], function["Throttled"], function["BulkRetries"]) == (3, 2, 2 * events)
    assert per_index["BulkRetries"] == 2 * events and "Throttled" not in per_index
