"""Documents the cluster rejects: degraded but searchable, else dead-lettered, then redriven."""
import gzip
import json
from pathlib import Path

import pytest
import requests
from fakes import copies, trail_file as fakes_trail_file
from support import refresh, search, upload

import lambda_function

from cloudtrail_es.aws import handler as routes
from cloudtrail_es.backfill import cli
from cloudtrail_es.commands import redrive
from cloudtrail_es.core.errors import LoadFailed
from cloudtrail_es.write.indexes import index_body

EVENT = json.loads((Path(__file__).resolve().parents[1] / "events" / "transform"
                    / "run_instances.input.json").read_text())
KEY = ("AWSLogs/111122223333/CloudTrail/eu-west-1/2024/01/15/"
       "111122223333_CloudTrail_eu-west-1_20240115T0910Z_Rejections000001.json.gz")


def trail_file(count):
    events = copies(EVENT, count, "rejection-test")
    for n, event in enumerate(events):
        event["userIdentity"]["userName"] = f"user-{n}"
    return fakes_trail_file(events)


def precreate(opensearch_url, index, properties):
    """The month's index made beforehand with our mapping but for a conflicting field."""
    body = index_body(shards=1, replicas=0)
    body["mappings"]["properties"].update(properties)
    response = requests.put(f"{opensearch_url}/{index}", json=body, timeout=30)
    assert response.status_code == 200, response.text


def test_conflicting_mapping_ends_degraded_but_searchable(
        loader_env, s3, bucket, opensearch_url, tmp_path, capsys):
    index = f"{loader_env}-2024-01"
    # The month's index has a flattened leaf mapped as a number.
    precreate(opensearch_url, index, {"requestParameters_flattened": {
        "properties": {"instanceType": {"type": "long"}}}})
    upload(s3, bucket, [(KEY, trail_file(5))])

    exit_code = cli.main([bucket, "AWSLogs/", "--json", "--dead-letter-dir", str(tmp_path)])

    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert exit_code == cli.EXIT_OK
    assert (summary["events_read"], summary["indexed"], summary["degraded"],
            summary["dead_lettered"]) == (5, 0, 5, 0)
    hits = search(opensearch_url, loader_env, {"bool": {"filter": [
        {"term": {"eventID": "rejection-test-003"}}, {"term": {"eventName": "RunInstances"}},
        {"term": {"userIdentity.userName": "user-3"}},
        {"range": {"eventTime": {"gte": "2024-01-15T00:00:00Z", "lt": "2024-01-16T00:00:00Z"}}}]}})
    assert len(hits) == 1
    source = hits[0]["_source"]
    assert "mapper_parsing_exception" in source["degraded_reason"]
    assert json.loads(source["event_raw"])["responseElements"]["instancesSet"]["items"][0][
        "instanceId"] == "i-0aaa"
    assert search(opensearch_url, loader_env, {"match": {"event_raw": "i-0bbb"}})
    assert not list(tmp_path.rglob("*.ndjson.gz"))


def test_unsaveable_events_go_to_the_dead_letter_and_redrive_lands_them(
        loader_env, s3, bucket, opensearch_url, tmp_path, capsys):
    index = f"{loader_env}-2024-01"
    # A conflict on a core field: neither the full nor the degraded form is accepted.
    precreate(opensearch_url, index, {"eventName": {"type": "long"}})
    upload(s3, bucket, [(KEY, trail_file(4))])

    exit_code = cli.main([bucket, "AWSLogs/", "--json", "--dead-letter-dir", str(tmp_path)])

    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert exit_code == cli.EXIT_DEAD_LETTERED
    assert (summary["events_read"], summary["indexed"], summary["degraded"],
            summary["dead_lettered"]) == (4, 0, 0, 4)
    assert f"DEAD-LETTERED 4 events of s3://{bucket}/{KEY}" in captured.err
    [dead_file] = tmp_path.rglob("*.ndjson.gz")
    records = [json.loads(line) for line in gzip.decompress(dead_file.read_bytes()).splitlines()]
    assert {r["doc_id"] for r in records} == {f"rejection-test-{n:03d}" for n in range(4)}
    assert all(r["bucket"] == bucket and r["key"] == KEY and r["index"] == index for r in records)
    assert all("mapper_parsing_exception" in r["reason"] and "degraded form" in r["reason"]
               for r in records)
    assert records[0]["event"]["eventName"] == "RunInstances"

    # While the cause remains, redrive keeps them and says so.
    assert redrive.main([str(tmp_path)]) == cli.EXIT_DEAD_LETTERED
    assert dead_file.exists()

    # The cause is fixed (the hand-made index removed); redrive lands them and empties the file.
    requests.delete(f"{opensearch_url}/{index}", timeout=30).raise_for_status()
    capsys.readouterr()
    assert redrive.main([str(tmp_path)]) == cli.EXIT_OK
    totals = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (totals["events"], totals["indexed"], totals["still_dead"]) == (4, 4, 0)
    assert not dead_file.exists()
    refresh(opensearch_url, loader_env)
    assert requests.get(f"{opensearch_url}/{index}/_count", timeout=30).json()["count"] == 4
    mapping = requests.get(f"{opensearch_url}/{index}/_mapping", timeout=30).json()
    assert mapping[index]["mappings"]["properties"]["eventName"]["type"] == "keyword"


def test_lambda_dead_letters_go_to_s3_and_redrive_reads_them_there(
        loader_env, s3, bucket, opensearch_url, monkeypatch):
    index = f"{loader_env}-2024-01"
    precreate(opensearch_url, index, {"eventName": {"type": "long"}})
    s3.put_object(Bucket=bucket, Key=KEY, Body=trail_file(3))
    dead_bucket = f"{bucket}-dead"
    s3.create_bucket(Bucket=dead_bucket)
    monkeypatch.setenv("DEAD_LETTER_BUCKET", dead_bucket)
    monkeypatch.setenv("DEAD_LETTER_PREFIX", "rejected/")
    routes.processor.cache_clear()
    notification = {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                                 "s3": {"bucket": {"name": bucket}, "object": {"key": KEY}}}]}
    try:
        summary = lambda_function.lambda_handler(notification, None)
    finally:
        routes.processor.cache_clear()

    assert summary["dead_lettered"] == 3 and summary["files_failed"] == 0
    [dead_key] = [o["Key"] for o in s3.list_objects_v2(Bucket=dead_bucket)["Contents"]]
    assert dead_key.startswith("rejected/") and dead_key.endswith(".ndjson.gz")

    requests.delete(f"{opensearch_url}/{index}", timeout=30).raise_for_status()
    assert redrive.main([f"s3://{dead_bucket}/rejected/"]) == cli.EXIT_OK
    assert s3.list_objects_v2(Bucket=dead_bucket).get("KeyCount", 0) == 0
    refresh(opensearch_url, loader_env)
    assert requests.get(f"{opensearch_url}/{index}/_count", timeout=30).json()["count"] == 3


def test_without_a_dead_letter_the_invocation_fails(
        loader_env, s3, bucket, opensearch_url, monkeypatch):
    precreate(opensearch_url, f"{loader_env}-2024-01", {"eventName": {"type": "long"}})
    s3.put_object(Bucket=bucket, Key=KEY, Body=trail_file(2))
    monkeypatch.delenv("DEAD_LETTER_BUCKET", raising=False)
    routes.processor.cache_clear()
    notification = {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                                 "s3": {"bucket": {"name": bucket}, "object": {"key": KEY}}}]}
    try:
        with pytest.raises(LoadFailed, match="2 events rejected and no dead letter configured"):
            lambda_function.lambda_handler(notification, None)
    finally:
        routes.processor.cache_clear()
