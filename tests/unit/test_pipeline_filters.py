"""The exclusion hook and the metrics counts in the pipeline (in-memory source, scripted cluster)."""
import fakes
from cloudtrail_es.core.refs import ObjectRef
from cloudtrail_es.read.sources import ObjectBytes

RULES = ("eventName=Describe*", "eventSource=kms.amazonaws.com,readOnly=true")


def events():
    return [fakes.event("keep-0"),
            fakes.event("drop-describe", eventName="DescribeInstances", eventTime="2024-01-15T09:30:00Z"),
            fakes.event("drop-kms", eventSource="kms.amazonaws.com", readOnly=True),
            fakes.event("keep-kms-write", eventSource="kms.amazonaws.com", readOnly=False),
            fakes.event("keep-1", eventTime="2024-01-15T09:20:00Z")]


def test_excluded_events_are_counted_filtered_and_never_sent():
    key = fakes.log_key("FilteredFile001")
    source = fakes.MemorySource({key: ObjectBytes.of(fakes.trail_file(events()), 1705310000.0)})
    cluster = fakes.ScriptedCluster([201, 429], "ok")  # one item throttled, then written
    processor = fakes.processor_for(source, cluster, exclude_events=RULES)

    [result] = processor.process_files([ObjectRef("b", key)], deadline=100)

    sent = {doc_id for request in cluster.bulk for doc_id in request}
    assert sent == {"keep-0", "keep-kms-write", "keep-1"}
    assert (result.events_read, result.indexed, result.filtered) == (5, 3, 2)
    assert dict(result.filtered_by_rule) == {RULES[0]: 1, RULES[1]: 1}
    assert (result.bulk_requests, result.throttled, result.retried) == (2, 1, 1)
    # the newest event *sent* (the later, excluded one does not count)
    assert result.newest_event_time == "2024-01-15T09:20:00Z"
    assert result.object_modified == 1705310000.0 and result.searchable_at is not None
    assert result.summary()["filtered_by_rule"] == {RULES[0]: 1, RULES[1]: 1}


def test_a_file_whose_events_are_all_filtered_sends_nothing_and_has_no_lag():
    key = fakes.log_key("AllFiltered0001")
    source = fakes.MemorySource({key: fakes.trail_file(events()[1:3])})
    cluster = fakes.ScriptedCluster()
    processor = fakes.processor_for(source, cluster, exclude_events=RULES)

    [result] = processor.process_files([ObjectRef("b", key)], deadline=100)

    assert cluster.bulk == [] and (result.events_read, result.filtered, result.bulk_requests) == (2, 2, 0)
    assert result.searchable_at is None and "ingestion_lag_seconds" not in result.summary()


def test_events_given_directly_are_never_filtered():
    """``load_events`` (redrive) sends what it is given: the rules apply to files read."""
    cluster = fakes.ScriptedCluster()
    processor = fakes.processor_for(fakes.MemorySource(), cluster, exclude_events=RULES)

    outcome = processor.load_events("ct-2024-01", events(), deadline=100)

    assert outcome.indexed == 5 and len(cluster.bulk[0]) == 5
