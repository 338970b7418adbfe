"""Insights files: listed by the layout-aware backfill, loaded, counted and searchable."""
from __future__ import annotations

import gzip
import json
from collections import Counter
from datetime import date
from pathlib import Path

import pytest
import requests
from support import refresh, upload

from cloudtrail_es.backfill import cli
from cloudtrail_es.backfill.selection import Filters, S3Listing

pytestmark = pytest.mark.integration

EVENTS = Path(__file__).resolve().parents[1] / "events"
INSIGHTS_FILE = EVENTS / "insights" / (
    "111122223333_CloudTrail-Insight_us-east-1_20240201T0915Z_kX3mQ9vT2bL7nR4p.json")
ACCOUNT_ROOT = "AWSLogs/o-abc123def4/111122223333/"


def insights_events():
    return json.loads(INSIGHTS_FILE.read_text())["Records"]


def gz(events):
    return gzip.compress(json.dumps({"Records": events}).encode())


def bucket_files():
    """One day of an organization trail: a log file, an Insights file, a digest; and other days."""
    api_call = json.loads((EVENTS / "transform" / "run_instances.input.json").read_text())
    insights = insights_events()
    other_day = [{**event, "eventID": event["eventID"][:-2] + "99"} for event in insights[:1]]
    digest = {"awsAccountId": "111122223333", "digestStartTime": "2024-02-01T08:00:00Z",
              "logFiles": []}
    return {
        ACCOUNT_ROOT + "CloudTrail/us-east-1/2024/02/01/111122223333_CloudTrail_us-east-1_"
                       "20240201T0920Z_Ab12Cd34Ef56Gh78.json.gz": gz([api_call]),
        ACCOUNT_ROOT + "CloudTrail-Insight/us-east-1/2024/02/01/" + INSIGHTS_FILE.name + ".gz":
            gz(insights),
        ACCOUNT_ROOT + "CloudTrail-Insight/us-east-1/2024/02/03/111122223333_CloudTrail-Insight_"
                       "us-east-1_20240203T0100Z_Zz99Yy88Xx77Ww66.json.gz": gz(other_day),
        ACCOUNT_ROOT + "CloudTrail-Insight/eu-west-1/2024/02/01/111122223333_CloudTrail-Insight_"
                       "eu-west-1_20240201T0100Z_Vv55Uu44Tt33Ss22.json.gz": gz(other_day),
        ACCOUNT_ROOT + "CloudTrail-Digest/us-east-1/2024/02/01/111122223333_CloudTrail-Digest_"
                       "us-east-1_trail_us-east-1_20240201T090000Z.json.gz":
            gzip.compress(json.dumps(digest).encode()),
    }


def test_insights_files_are_loaded_counted_and_searchable(
        loader_env, s3, bucket, opensearch_url, capsys):
    files = bucket_files()
    upload(s3, bucket, files.items())
    filters = ["--dates", "2024-02-01", "2024-02-01", "--accounts", "111122223333",
               "--regions", "us-east-1"]
    day = date(2024, 2, 1)
    planned = S3Listing(s3).plan(bucket, "AWSLogs/", Filters(
        day, day, frozenset({"111122223333"}), frozenset({"us-east-1"})))
    assert sorted(planned) == [ACCOUNT_ROOT + "CloudTrail-Insight/us-east-1/2024/02/01/",
                               ACCOUNT_ROOT + "CloudTrail/us-east-1/2024/02/01/"]

    assert cli.main([bucket, "AWSLogs/", "--json", "--quiet", *filters]) == cli.EXIT_OK
    summary = json.loads(capsys.readouterr().out)
    insights = insights_events()
    assert summary["files_loaded"] == 2
    assert summary["events_read"] == summary["indexed"] == len(insights) + 1
    assert summary["degraded"] == summary["dead_lettered"] == summary["files_failed"] == 0

    refresh(opensearch_url, loader_env)
    index = f"{loader_env}-2024-02"  # the monthly index of the file's datestamp

    def hits(query):
        response = requests.post(f"{opensearch_url}/{loader_env}-*/_search", timeout=60,
                                 json={"query": query, "size": 100})
        assert response.status_code == 200, response.text
        return response.json()["hits"]["hits"]

    def ids(query):
        return {hit["_id"] for hit in hits(query)}

    every = {event["eventID"] for event in insights}
    assert {hit["_index"] for hit in hits({"term": {"eventCategory": "Insight"}})} == {index}
    assert ids({"term": {"eventType": "AwsCloudTrailInsight"}}) == every
    assert ids({"term": {"insightDetails.insightType": "ApiErrorRateInsight"}}) == {
        e["eventID"] for e in insights if e["insightDetails"]["insightType"] == "ApiErrorRateInsight"}
    assert ids({"bool": {"filter": [{"term": {"insightDetails.state": "Start"}},
                                    {"term": {"insightDetails.eventName": "ListUsers"}}]}}) == {
        e["eventID"] for e in insights
        if e["insightDetails"]["state"] == "Start" and e["insightDetails"]["eventName"] == "ListUsers"}
    # Attributions, flattened: who made the unusual calls.
    assert ids({"term": {"insightDetails_flattened.value": "arn:aws:iam::111122223333:user/mallory"}}) == every
    # Statistics are numbers: ranges compare them as such (61 and 40 > 30 > 24.5 and 17.25).
    assert ids({"range": {"insightDetails.insightContext.statistics.insight.average": {"gt": 30}}}) == {
        e["eventID"] for e in insights
        if e["insightDetails"]["insightContext"]["statistics"]["insight"]["average"] > 30}
    # The pair of a Start and its End share sharedEventID.
    shared = Counter(hit["_source"]["sharedEventID"]
                     for hit in hits({"term": {"eventCategory": "Insight"}}))
    assert sorted(shared.values()) == [2, 2]
    # ECS: an Insights event has no outcome; its account and region answer by their ECS names.
    assert ids({"exists": {"field": "event.outcome"}}) == {
        json.loads((EVENTS / "transform" / "run_instances.input.json").read_text())["eventID"]}
    assert ids({"bool": {"filter": [{"term": {"cloud.account.id": "111122223333"}},
                                    {"term": {"cloud.region": "us-east-1"}},
                                    {"term": {"eventCategory": "Insight"}}]}}) == every
    aggs = requests.post(f"{opensearch_url}/{loader_env}-*/_search", timeout=60, json={
        "size": 0, "aggs": {"types": {"terms": {"field": "insightDetails.insightType"}}}}).json()
    assert {b["key"]: b["doc_count"] for b in aggs["aggregations"]["types"]["buckets"]} == {
        "ApiCallRateInsight": 2, "ApiErrorRateInsight": 2}


def test_without_filters_every_insights_file_is_loaded_and_digests_skipped(
        loader_env, s3, bucket, opensearch_url, capsys):
    files = bucket_files()
    upload(s3, bucket, files.items())
    assert cli.main([bucket, "AWSLogs/", "--json", "--quiet"]) == cli.EXIT_OK
    summary = json.loads(capsys.readouterr().out)
    assert (summary["files_loaded"], summary["files_skipped"]) == (4, 1)
    assert summary["events_read"] == summary["indexed"] == len(insights_events()) + 3
    refresh(opensearch_url, loader_env)
    found = requests.post(f"{opensearch_url}/{loader_env}-*/_count", timeout=60, json={
        "query": {"term": {"eventCategory": "Insight"}}}).json()["count"]
    assert found == len(insights_events()) + 1  # the same event id on two days: one document
