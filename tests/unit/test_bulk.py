"""The bulk pipeline alone: chunking, per-item outcomes, retries (the scripted cluster, no sleep)."""
import json
from dataclasses import dataclass, field

import pytest

import fakes
from cloudtrail_es.write.bulk import BulkWriter, ClusterBlocked, ItemOutcome, Traffic, bulk_item, chunks
from cloudtrail_es.core.errors import ClusterError, ClusterUnreachable, RetryDeadlineExceeded
from cloudtrail_es.core.retry import Backoff


def items(n, size=10):
    return [bulk_item("idx", f"id{i}", {"f": "x" * size}) for i in range(n)]


@dataclass
class Written:
    """A write's outcomes summed up: what the pipeline counts on each file."""

    indexed: int = 0
    retried: int = 0
    failures: list[ItemOutcome] = field(default_factory=list)
    requests: int = 0
    throttled: int = 0


class Writer:
    """A ``BulkWriter`` whose outcomes are summed up, for assertions on a whole write."""

    def __init__(self, bulk_writer: BulkWriter) -> None:
        self.bulk_writer = bulk_writer

    def write(self, items, deadline) -> Written:
        result, traffic = Written(), Traffic()
        for outcome in self.bulk_writer.outcomes(items, deadline, traffic):
            result.retried += outcome.retries
            if outcome.ok:
                result.indexed += 1
            else:
                result.failures.append(outcome)
        result.requests, result.throttled = traffic.requests, traffic.throttled
        return result


def writer(cluster, sleeps, compress=False):
    backoff = Backoff(sleep=sleeps.append, clock=lambda: 0.0, jitter=lambda: 1.0)
    return Writer(BulkWriter(cluster, compress=compress, backoff=backoff))


def test_action_line_and_source_are_ndjson():
    item = bulk_item("cloudtrail-2024-01", 'a"b', {"eventName": "X", "n": "é"})
    action, source, end = item.lines.decode().split("\n")
    assert json.loads(action) == {"index": {"_index": "cloudtrail-2024-01", "_id": 'a"b'}}
    assert json.loads(source) == {"eventName": "X", "n": "é"} and end == ""


def test_chunks_respect_count_and_bytes():
    sample = items(10)
    size = len(sample[0].lines)
    assert [len(c) for c in chunks(sample, 4, 10_000)] == [4, 4, 2]
    assert [len(c) for c in chunks(sample, 100, size * 3)] == [3, 3, 3, 1]
    big = bulk_item("idx", "big", {"f": "x" * 5000})
    assert [len(c) for c in chunks([big, *sample[:2]], 100, 1000)] == [1, 2]
    # A chunk exactly at the byte limit goes whole: no one-document request after it.
    assert [len(c) for c in chunks(sample[:6], 100, size * 3)] == [3, 3]


def test_all_items_indexed_in_one_request():
    cluster, sleeps = fakes.ScriptedCluster("ok"), []
    result = writer(cluster, sleeps).write(items(5), deadline=100)
    assert (result.indexed, result.failures, result.retried, sleeps) == (5, [], 0, [])


def test_only_throttled_items_are_retried_and_rejected_ones_reported():
    cluster, sleeps = fakes.ScriptedCluster([201, 429, 400, 503], [201, 429], "ok"), []
    result = writer(cluster, sleeps).write(items(4), deadline=100)
    assert cluster.bulk == [["id0", "id1", "id2", "id3"], ["id1", "id3"], ["id3"]]
    assert result.indexed == 3 and result.retried == 3
    assert [(f.doc_id, f.status, f.reason) for f in result.failures] == [
        ("id2", 400, "mapper_parsing_exception: scripted rejection")]
    assert sleeps == [0.5, 1.0]


@pytest.mark.parametrize("fault", [429, 502, 503, 504, ClusterUnreachable("reset")])
def test_whole_request_faults_are_retried(fault):
    cluster, sleeps = fakes.ScriptedCluster(fault, fault, "ok"), []
    result = writer(cluster, sleeps).write(items(3), deadline=100)
    assert result.indexed == 3 and len(cluster.bulk) == 3 and len(sleeps) == 2


def test_backoff_is_exponential_capped_and_jittered():
    low = Backoff(base=0.5, cap=4.0, jitter=lambda: 0.0)
    assert [low.delay(a) for a in range(1, 7)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    high = Backoff(base=0.5, cap=4.0, jitter=lambda: 1.0)
    assert [high.delay(a) for a in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]


def test_retries_stop_loudly_at_the_deadline():
    now = [0.0]
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        now[0] += seconds

    cluster = fakes.ScriptedCluster(*[429] * 50)
    w = Writer(BulkWriter(cluster, compress=False,
                              backoff=Backoff(sleep=sleep, clock=lambda: now[0], jitter=lambda: 1.0)))
    with pytest.raises(RetryDeadlineExceeded, match="gave up retrying 2 documents .HTTP 429"):
        w.write(items(2), deadline=10.0)
    assert sleeps == [0.5, 1.0, 2.0, 4.0] and len(cluster.bulk) == 5


def test_other_request_errors_raise_with_the_status():
    with pytest.raises(ClusterError, match="HTTP 400"):
        writer(fakes.ScriptedCluster(400), []).write(items(2), deadline=100)


def test_413_splits_the_chunk_and_a_lone_oversized_document_is_reported():
    cluster, sleeps = fakes.ScriptedCluster(413, "ok", 413, 413, "ok"), []
    result = writer(cluster, sleeps).write(items(4), deadline=100)
    assert cluster.bulk == [["id0", "id1", "id2", "id3"], ["id0", "id1"], ["id2", "id3"],
                                ["id2"], ["id3"]]
    assert result.indexed == 3
    assert [(f.doc_id, f.status) for f in result.failures] == [("id2", 413)]


def test_a_short_answer_is_an_error_not_a_success():
    class Short(fakes.ScriptedCluster):
        def request(self, *a, **k):
            response = super().request(*a, **k)
            response._body["items"] = response._body["items"][:-1]
            return response

    with pytest.raises(ClusterError, match="lists 1 items for 2 sent"):
        writer(Short(), []).write(items(2), deadline=100)


def test_bodies_are_gzipped_when_asked():
    cluster, sleeps = fakes.ScriptedCluster("ok"), []
    result = writer(cluster, sleeps, compress=True).write(items(3), deadline=100)
    assert result.indexed == 3 and cluster.headers["Content-Encoding"] == "gzip"
    assert cluster.bulk == [["id0", "id1", "id2"]]


def test_a_write_block_stops_at_once_with_a_clear_error():
    cluster = fakes.ScriptedCluster([201, 403])
    with pytest.raises(ClusterBlocked, match="writes to idx are blocked: index read-only"):
        writer(cluster, []).write(items(2), deadline=100)
    assert len(cluster.bulk) == 1


def test_fast_and_fallback_serialisers_write_the_same_bytes():
    from pathlib import Path

    from cloudtrail_es.write import bulk
    from cloudtrail_es.documents.transform import document_for

    golden = Path(__file__).resolve().parents[1] / "events" / "transform"
    for path in golden.glob("*.input.json"):
        document = document_for(json.loads(path.read_text()))
        assert bulk.dumps(document) == bulk._dumps_stdlib(document)
    assert bulk.dumps({"n": 2 ** 70}) == b'{"n":1180591620717411303424}'


def test_requests_and_throttled_requests_are_counted():
    # 1: items 429/503; 2: whole request 429; 3: one item 503 only; 4: all written.
    cluster, sleeps = fakes.ScriptedCluster([201, 429, 503], 429, [503, 201], "ok"), []
    result = writer(cluster, sleeps).write(items(3), deadline=100)
    assert result.indexed == 3 and len(cluster.bulk) == 4
    assert result.requests == 4 and result.throttled == 2
    split = fakes.ScriptedCluster(413, "ok", 429, "ok")
    counted = writer(split, []).write(items(4), deadline=100)
    assert counted.requests == len(split.bulk) == 4 and counted.throttled == 1
