"""The processor over the in-memory source and the scripted cluster: pipeline, boundary, accounting."""
import json
import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudtrail_es.write.pipeline import stamp_ingested
from cloudtrail_es.write import processor as processor_module
from cloudtrail_es.documents import transform
from cloudtrail_es.write.bulk import bulk_item
from cloudtrail_es.read.decoder import OversizedEvent
from cloudtrail_es.core.errors import ClusterUnreachable, FileFailed
from cloudtrail_es.write.pipeline import MAX_ID_BYTES, derived_id
from cloudtrail_es.core.refs import ObjectRef

KEYS = ["FileNumberOne01", "FileNumberTwo02", "FileNumberThree"]


def batch(fakes, sizes, **settings_overrides):
    """(processor, cluster, dead letters, refs) for files of ``sizes`` events each."""
    files = {fakes.log_key(KEYS[n]): fakes.trail_file(fakes.event(f"f{n}-e{i}") for i in range(size))
             for n, size in enumerate(sizes)}
    cluster, dead = fakes.ScriptedCluster(), fakes.MemoryDeadLetters()
    processor = fakes.processor_for(fakes.MemorySource(files), cluster, dead, **settings_overrides)
    return processor, cluster, dead, [ObjectRef("b", key) for key in files]


def test_files_of_a_batch_share_requests_and_each_is_counted(fakes):
    processor, cluster, _, refs = batch(fakes, [4, 3], bulk_max_docs=3)

    first, second = processor.process_files(refs, deadline=100)

    assert (first.events_read, first.indexed, second.events_read, second.indexed) == (4, 4, 3, 3)
    assert [len(ids) for ids in cluster.bulk] == [3, 3, 1]
    assert len(cluster.documents) == 7 and first.index == "ct-2024-01"


def test_a_chunk_exactly_at_the_byte_limit_is_one_request(fakes):
    item_bytes = max(len(stamp_ingested(bulk_item(
        "ct-2024-01", f"f0-e{i}", transform.document_for(fakes.event(f"f0-e{i}")))).lines)
        for i in range(6))
    processor, cluster, _, refs = batch(fakes, [6], bulk_max_bytes=3 * item_bytes)

    processor.process_files(refs, deadline=100)

    assert [len(ids) for ids in cluster.bulk] == [3, 3]


def test_rejected_events_are_degraded_and_doubly_rejected_ones_dead_lettered(fakes):
    processor, cluster, dead, refs = batch(fakes, [4])
    cluster.reject = lambda doc_id, doc: (400 if doc_id in ("f0-e1", "f0-e2") and
                                          (doc_id == "f0-e2" or "degraded_reason" not in doc) else None)

    [result] = processor.process_files(refs, deadline=100)

    assert (result.indexed, result.degraded, result.dead_lettered) == (2, 1, 1)
    [record] = dead.records
    assert record["doc_id"] == "f0-e2" and record["event"]["eventID"] == "f0-e2"
    assert record["reason"].count("mapper_parsing_exception") == 2 and "degraded form" in record["reason"]
    assert "degraded_reason" in cluster.documents[("ct-2024-01", "f0-e1")]
    assert result.dead_letter in dead.stored


def test_throttled_items_are_retried_and_counted_on_their_own_file(fakes):
    processor, cluster, _, refs = batch(fakes, [2, 2])
    cluster.script = [{"f1-e0": 429, "f1-e1": 503}, 429, ClusterUnreachable("reset")]

    first, second = processor.process_files(refs, deadline=100)

    assert (first.retried, second.retried) == (0, 6)  # two items, three retries each
    assert first.indexed == second.indexed == 2 and len(cluster.documents) == 4


def test_a_lone_document_too_large_for_the_cluster_is_dead_lettered(fakes):
    processor, cluster, dead, refs = batch(fakes, [2])
    cluster.script = [413, 413, "ok"]

    [result] = processor.process_files(refs, deadline=100)

    assert (result.indexed, result.dead_lettered) == (1, 1)
    assert dead.records[0]["status"] == 413 and "larger than the cluster accepts" in dead.records[0]["reason"]


@pytest.mark.parametrize("poison", [RecursionError("maximum recursion depth exceeded"),
                                    UnicodeEncodeError("utf-8", "\udc80", 0, 1, "surrogates not allowed"),
                                    MemoryError(), KeyError("eventTime"), ValueError("odd")])
def test_a_poison_event_fails_its_file_alone_with_its_reason(fakes, monkeypatch, caplog, poison):
    processor, cluster, _, refs = batch(fakes, [3, 3, 3], bulk_max_docs=4)
    real = transform.document_for

    def document_for(event):
        if event["eventID"] == "f1-e1":
            raise poison
        return real(event)

    monkeypatch.setattr(transform, "document_for", document_for)
    caplog.set_level(logging.INFO)

    first, second, third = processor.process_files(refs, deadline=100)

    assert isinstance(second, FileFailed) and second.key == refs[1].key
    assert type(poison).__name__ in second.reason and second.__cause__ is poison
    assert first.indexed == third.indexed == 3
    assert {doc_id for _, doc_id in cluster.documents} >= {f"f{n}-e{i}" for n in (0, 2) for i in range(3)}
    traces = [r for r in caplog.records if r.exc_info]
    assert len(traces) == 1 and traces[0].exc_info[1] is poison
    assert [r.msg for r in caplog.records if r.msg.startswith("file")].count("file failed") == 1


def test_an_unreadable_file_fails_alone_whatever_the_source_raises(fakes):
    processor, cluster, _, refs = batch(fakes, [1, 1])

    class Exploding(fakes.MemorySource):
        def read(self, bucket, key):
            if key == refs[0].key:
                raise RuntimeError("disk on fire")
            return super().read(bucket, key)

    processor.source = Exploding(processor.source.files)
    missing = ObjectRef("b", fakes.log_key("NotThereAtAll1"))

    failed, loaded, gone = processor.process_files([refs[0], refs[1], missing], deadline=100)

    assert isinstance(failed, FileFailed) and "RuntimeError: disk on fire" in failed.reason
    assert loaded.indexed == 1
    assert isinstance(gone, FileFailed) and "NoSuchKey" in gone.reason


def test_a_cluster_failure_fails_every_file_of_the_batch(fakes):
    processor, cluster, _, refs = batch(fakes, [2, 2])
    cluster.script = [400]

    outcomes = processor.process_files(refs, deadline=100)

    assert all(isinstance(o, FileFailed) and "HTTP 400" in o.reason for o in outcomes)


def test_an_oversized_event_is_read_and_dead_lettered_with_its_head(fakes, monkeypatch):
    processor, cluster, dead, refs = batch(fakes, [0])
    processor._pipeline.max_event_bytes = 1000
    oversized = OversizedEvent(size=5000, head='{"eventID": "huge-1", "x": "aaaa', event_id="huge-1")
    monkeypatch.setattr(processor_module, "iter_events", lambda data, **limits: iter(
        [fakes.event("small-1"), oversized, fakes.event("small-2")]))

    [result] = processor.process_files(refs, deadline=100)

    assert (result.events_read, result.indexed, result.dead_lettered) == (3, 2, 1)
    [record] = dead.records
    assert record["reason"] == "event too large (5000 bytes, limit 1000)"
    assert record["doc_id"] == "huge-1" and record["event_head"] == oversized.head
    assert "event" not in record and record["index"] == "ct-2024-01"


def test_an_identical_redelivered_event_is_one_document(fakes):
    twice = fakes.event("same-1")
    files = {fakes.log_key(KEYS[0]): fakes.trail_file([twice, fakes.event("other"), twice])}
    cluster = fakes.ScriptedCluster()
    processor = fakes.processor_for(fakes.MemorySource(files), cluster, fakes.MemoryDeadLetters())

    [result] = processor.process_files([ObjectRef("b", k) for k in files], deadline=100)

    assert (result.events_read, result.indexed, result.duplicate_ids) == (3, 3, 0)
    assert sorted(doc_id for _, doc_id in cluster.documents) == ["other", "same-1"]


def test_different_events_sharing_an_id_both_land_under_a_derived_id(fakes):
    first, second = fakes.event("dup-1"), fakes.event("dup-1", eventName="DeleteObject")
    files = {fakes.log_key(KEYS[0]): fakes.trail_file([first, second, second])}
    landed = []
    for _ in range(2):  # the derived id is the same on every run
        cluster = fakes.ScriptedCluster()
        processor = fakes.processor_for(fakes.MemorySource(files), cluster, fakes.MemoryDeadLetters())
        [result] = processor.process_files([ObjectRef("b", k) for k in files], deadline=100)
        assert (result.events_read, result.indexed, result.duplicate_ids) == (3, 3, 1)
        landed.append({doc_id: doc["eventName"] for (_, doc_id), doc in cluster.documents.items()})
    assert landed[0] == landed[1] and len(landed[0]) == 2
    derived = next(i for i in landed[0] if i != "dup-1")
    assert landed[0]["dup-1"] == "GetObject" and landed[0][derived] == "DeleteObject"
    assert derived.startswith("dup-1")


def test_a_derived_id_stays_within_the_id_limit():
    long_id = "é" * 600
    derived = derived_id(long_id, b"content")
    assert len(derived.encode()) <= MAX_ID_BYTES and derived.startswith("é" * 100)
    assert derived == derived_id(long_id, b"content") != derived_id(long_id, b"other")


def test_without_a_dead_letter_a_rejection_fails_the_file(fakes):
    files = {fakes.log_key(KEYS[0]): fakes.trail_file([fakes.event("a")])}
    cluster = fakes.ScriptedCluster(reject=lambda doc_id, doc: 400)
    processor = fakes.processor_for(fakes.MemorySource(files), cluster)

    [outcome] = processor.process_files([ObjectRef("b", k) for k in files], deadline=100)

    assert isinstance(outcome, FileFailed) and "no dead letter configured" in outcome.reason


def test_load_events_keeps_the_recorded_ids(fakes):
    cluster = fakes.ScriptedCluster()
    processor = fakes.processor_for(fakes.MemorySource(), cluster)

    outcome = processor.load_events("ct-2024-01", [fakes.event("x"), fakes.event("y")], 100,
                                    doc_ids=["x", "x~derived"])

    assert outcome.indexed == 2 and set(cluster.documents) == {("ct-2024-01", "x"),
                                                               ("ct-2024-01", "x~derived")}


ITEM_ANSWERS = st.sampled_from([201, 201, 201, 400, 429, 503])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(0, 6), min_size=1, max_size=3),
       script=st.lists(st.one_of(st.lists(ITEM_ANSWERS, max_size=8), st.sampled_from([429, 413, "ok"])),
                       max_size=6),
       reject_degraded=st.booleans(), max_docs=st.integers(1, 5))
def test_every_event_read_is_accounted_for_once(fakes, sizes, script, reject_degraded, max_docs):
    processor, cluster, dead, refs = batch(fakes, sizes, bulk_max_docs=max_docs)
    cluster.script = list(script)
    if reject_degraded:
        cluster.reject = lambda doc_id, doc: 400 if "degraded_reason" in doc else None

    outcomes = processor.process_files(refs, deadline=100)

    assert not [o for o in outcomes if isinstance(o, FileFailed)]
    for n, result in enumerate(outcomes):
        assert result.events_read == sizes[n]
        assert result.indexed + result.degraded + result.dead_lettered == sizes[n]
        landed = {doc_id for (_, doc_id) in cluster.documents if doc_id.startswith(f"f{n}-")}
        dead_ids = {r["doc_id"] for r in dead.records if r["key"] == refs[n].key}
        assert landed | dead_ids == {f"f{n}-e{i}" for i in range(sizes[n])}
        assert not landed & dead_ids
    assert json.dumps([o.summary() for o in outcomes])


def test_an_unexpected_failure_of_the_write_path_fails_the_batch_and_is_logged_once(fakes, caplog):
    processor, cluster, _, refs = batch(fakes, [1, 1, 1])
    cluster.script = [ZeroDivisionError("a bug")]

    outcomes = processor.process_files(refs, deadline=100)

    assert all(isinstance(o, FileFailed) and "ZeroDivisionError: a bug" in o.reason for o in outcomes)
    assert len([r for r in caplog.records if r.exc_info]) == 1
