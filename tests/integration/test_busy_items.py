"""Items failed because the cluster was busy are retried, against the real OpenSearch.

Under load OpenSearch fails items with ``mapper_exception`` "timed out while waiting for a
dynamic mapping update": not a verdict on the document. The fault proxy answers that for
whole requests on demand; what is retried must land as it is, never in degraded form.
"""
import gzip
import json
import time

import pytest
from faultproxy import FaultProxy
from support import moto_source, search

from cloudtrail_es.core.config import Settings
from cloudtrail_es.write.deadletter import LocalDeadLetters
from cloudtrail_es.write.processor import create_processor
from cloudtrail_es.core.retry import Backoff
from cloudtrail_es.documents.transform import DEGRADED_REASON

pytestmark = pytest.mark.integration

KEY = ("AWSLogs/111122223333/CloudTrail/eu-west-1/2024/01/15/"
       "111122223333_CloudTrail_eu-west-1_20240115T0910Z_BusyItems0000001.json.gz")


def events(n):
    return [{"eventVersion": "1.08", "eventID": f"busy-{i}", "eventName": "PutObject",
             "eventTime": "2024-01-15T09:10:00Z", "eventSource": "s3.amazonaws.com",
             "requestParameters": {f"newKey{i}": {"nested": i}}} for i in range(n)]


def test_mapping_update_timeouts_are_retried_and_the_events_land_whole(
        opensearch_url, moto_url, index_prefix, tmp_path):
    data = gzip.compress(json.dumps({"Records": events(5)}).encode())
    source, bucket = moto_source(moto_url, {KEY: data})
    with FaultProxy(opensearch_url) as proxy:
        proxy.script = ["item_mapping_timeout", "item_mapping_timeout"]
        processor = create_processor(
            Settings(es_url=proxy.url, auth="none", index_prefix=index_prefix, index_replicas=0),
            source=source, dead_letters=LocalDeadLetters(tmp_path),
            backoff=Backoff(base=0.02, cap=0.2))
        result = processor.process_file(bucket, KEY, time.monotonic() + 60)

    assert proxy.counts["item_mapping_timeout"] == 10
    assert (result.events_read, result.indexed, result.degraded, result.dead_lettered) == (5, 5, 0, 0)
    assert result.retried == 10
    hits = search(opensearch_url, index_prefix, {"match_all": {}})
    assert sorted(hit["_id"] for hit in hits) == [f"busy-{i}" for i in range(5)]
    assert not [hit for hit in hits if DEGRADED_REASON in hit["_source"]]
    assert {hit["_source"]["eventID"] for hit in hits} == {f"busy-{i}" for i in range(5)}
    assert not list(tmp_path.rglob("*.ndjson.gz"))
    assert result.key == KEY
