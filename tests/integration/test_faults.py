"""The write path under throttling, resets, 413s and blocks, against the real OpenSearch."""
import gzip
import json
import os
import time

import pytest
import requests
from faultproxy import FaultProxy, is_bulk_path
from support import assert_corpus_indexed, upload

from cloudtrail_es.write.bulk import ClusterBlocked
from cloudtrail_es.core.config import Settings
from cloudtrail_es.write.deadletter import LocalDeadLetters
from cloudtrail_es.core.errors import ClusterError, FileFailed
from cloudtrail_es.write.processor import ObjectRef, create_processor, process_objects
from cloudtrail_es.core.retry import Backoff

# The trail is a load here: the shared corpus adds nothing to what these tests check.
pytestmark = pytest.mark.generated_trail_only

KEY = ("AWSLogs/111122223333/CloudTrail/eu-west-1/2024/01/15/"
       "111122223333_CloudTrail_eu-west-1_20240115T0910Z_Faults0000000001.json.gz")



@pytest.fixture()
def trail(s3, bucket):
    """(bucket, files -> the bucket): the files are read from moto's S3, as the loader reads them."""
    def put(files):
        upload(s3, bucket, [(key, data) for key, data in files])
        return s3
    return bucket, put


def processor_for(url, prefix, files, tmp_path, trail, **settings):
    """The real processor over the trail's bucket, with short backoff delays so that storms do
    not take minutes."""
    _, put = trail
    return create_processor(
        Settings(es_url=url, auth="none", index_prefix=prefix, index_replicas=0, **settings),
        s3_client=put(files), dead_letters=LocalDeadLetters(tmp_path),
        backoff=Backoff(base=0.02, cap=0.2))


def test_corpus_through_429_and_reset_storms_lands_exactly_once(
        opensearch_url, index_prefix, corpus_files, corpus_expectations, tmp_path, trail):
    with FaultProxy(opensearch_url, seed=7) as proxy:
        proxy.set_bulk_request_faults(0.3, ["429", "503", "reset"])
        proxy.bulk_item_429 = 0.1
        processor = processor_for(proxy.url, index_prefix, corpus_files, tmp_path, trail,
                                  bulk_max_docs=500)
        run = process_objects(processor, [ObjectRef(trail[0], k) for k, _ in corpus_files],
                              lambda: time.monotonic() + 600)

    assert not run.failed
    summary = run.summary()
    assert summary["events_read"] == summary["indexed"] == len(corpus_expectations)
    assert summary["retried"] > 0 and summary["dead_lettered"] == summary["degraded"] == 0
    assert proxy.counts["429"] > 50 and proxy.counts["reset"] > 50 and proxy.counts["item_429"] > 100
    assert_corpus_indexed(opensearch_url, index_prefix, corpus_expectations)


def big_event(n, size):
    event = {"eventVersion": "1.08", "eventID": f"big-{n}", "eventName": "PutBucketPolicy",
             "eventTime": "2024-01-15T09:10:00Z", "eventSource": "s3.amazonaws.com",
             "requestParameters": {"policy": os.urandom(size // 2).hex()}}
    return event


def test_413_splits_chunks_and_a_lone_oversized_document_is_dead_lettered(
        opensearch_url, index_prefix, tmp_path, trail):
    events = [big_event(n, 2_000) for n in range(20)] + [big_event(99, 60_000)]
    files = [(KEY, gzip.compress(json.dumps({"Records": events}).encode()))]
    with FaultProxy(opensearch_url) as proxy:
        proxy.max_body_bytes = 30_000
        processor = processor_for(proxy.url, index_prefix, files, tmp_path, trail)
        result = processor.process_file(trail[0], KEY, time.monotonic() + 60)

    assert (result.events_read, result.indexed, result.dead_lettered) == (21, 20, 1)
    assert proxy.counts["413"] >= 2
    [record] = [json.loads(line) for path in tmp_path.rglob("*.ndjson.gz")
                for line in gzip.decompress(path.read_bytes()).splitlines()]
    assert record["doc_id"] == "big-99" and record["status"] == 413
    assert "larger than the cluster accepts" in record["reason"]


def test_retries_stop_at_the_deadline_and_the_file_fails_loudly(
        opensearch_url, index_prefix, corpus_files, tmp_path, trail):
    with FaultProxy(opensearch_url) as proxy:
        proxy.set_bulk_request_faults(1.0, ["429"])
        processor = processor_for(proxy.url, index_prefix, corpus_files[:1], tmp_path, trail)
        run = process_objects(processor, [ObjectRef(trail[0], corpus_files[0][0])],
                              lambda: time.monotonic() + 2)
    [failure] = run.failed
    assert failure.key == corpus_files[0][0] and "gave up retrying" in failure.reason
    assert "HTTP 429" in failure.reason


def test_a_write_blocked_index_gives_one_clear_error(opensearch_url, index_prefix, tmp_path,
                                                      corpus_files, trail):
    key, data = corpus_files[0]
    processor = processor_for(opensearch_url, index_prefix, [(key, data)], tmp_path, trail)
    month = key.rsplit("_", 2)[-2]
    index = f"{index_prefix}-{month[:4]}-{month[4:6]}"
    processor.process_file(trail[0], key, time.monotonic() + 30)
    requests.put(f"{opensearch_url}/{index}/_settings",
                 json={"index.blocks.write": True}, timeout=30).raise_for_status()
    try:
        fresh = processor_for(opensearch_url, index_prefix, [(key, data)], tmp_path, trail)
        with pytest.raises(FileFailed) as raised:
            fresh.process_file(trail[0], key, time.monotonic() + 30)
        assert isinstance(raised.value.__cause__, ClusterBlocked)
        assert f"writes to {index} are blocked by index.blocks.write" in str(raised.value)
    finally:
        requests.put(f"{opensearch_url}/{index}/_settings",
                     json={"index.blocks.write": None}, timeout=30)


def test_a_red_index_gives_one_clear_error(opensearch_url, index_prefix, tmp_path, corpus_files, trail):
    key, data = corpus_files[0]
    month = key.rsplit("_", 2)[-2]
    index = f"{index_prefix}-{month[:4]}-{month[4:6]}"
    requests.put(f"{opensearch_url}/{index}", json={"settings": {
        "number_of_replicas": 0, "index.routing.allocation.require._name": "no-such-node"}},
        params={"wait_for_active_shards": 0}, timeout=30).raise_for_status()
    processor = processor_for(opensearch_url, index_prefix, [(key, data)], tmp_path, trail)
    with pytest.raises(FileFailed) as raised:
        processor.process_file(trail[0], key, time.monotonic() + 30)
    assert isinstance(raised.value.__cause__, ClusterError)
    assert f"index {index} is red" in str(raised.value)


def test_compression_can_be_switched_off(opensearch_url, index_prefix, tmp_path, corpus_files, trail):
    with FaultProxy(opensearch_url) as proxy:
        for compress in (True, False):
            processor = processor_for(proxy.url, index_prefix, corpus_files[:2], tmp_path, trail,
                                      compress_requests=compress)
            run = process_objects(processor, [ObjectRef(trail[0], k) for k, _ in corpus_files[:2]],
                                  lambda: time.monotonic() + 30)
            assert not run.failed and run.total("indexed") == run.total("events_read")
        sizes = [size for method, path, size, outcome in proxy.requests if is_bulk_path(path)]
    # One request per file, in the same order both times: each file's gzipped body is the smaller.
    assert len(sizes) == 4 and sizes[0] < sizes[2] and sizes[1] < sizes[3]
    assert Settings.from_env({"ES_HOSTNAME": "h", "ES_AUTH": "none",
                              "ES_COMPRESS_REQUESTS": "false"}).compress_requests is False
