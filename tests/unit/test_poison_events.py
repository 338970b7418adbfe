"""Poison events (lone surrogates, deep nesting, busy answers) end counted, never as a crash.

Dead letters must take any event; a repaired document is counted; an item the cluster
failed because it was busy (not because of the document) is retried, not degraded.
"""
import gzip
import json
import logging

import hypothesis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fakes
from cloudtrail_es.core.errors import RetryDeadlineExceeded
from cloudtrail_es.write import deadletter
from cloudtrail_es.core import deepjson
from cloudtrail_es.documents import transform
from cloudtrail_strategies import deep, events
from cloudtrail_es.write.bulk import BulkWriter, bulk_item
from cloudtrail_es.write.deadletter import LocalDeadLetters
from cloudtrail_es.core.results import RunResult
from cloudtrail_es.core.refs import ObjectRef
from cloudtrail_es.core.retry import retryable_item

SURROGATE = "\udc80"
MAPPING_TIMEOUT = {"type": "mapper_exception",
                   "reason": "timed out while waiting for a dynamic mapping update"}


def nested(depth, leaf="deep"):
    value = leaf
    for _ in range(depth):
        value = {"k": value}
    return value


def record_of(event):
    return deadletter.record(reason="rejected", status=400, error={"type": "x"}, bucket="b",
                             key="k", index="ct-2024-01", doc_id="d", event=event)


POISON_EVENTS = {
    "surrogate": {"eventID": "s-1", "eventName": "a" + SURROGATE, "requestParameters": {SURROGATE: "v"}},
    "deep": {"eventID": "d-1", "requestParameters": nested(3000)},
    "line separators": {"eventID": "l-1", "eventName": "a\u2028b\x85c\u2029d\x1c"},
}


@pytest.mark.parametrize("name", POISON_EVENTS)
def test_any_event_can_be_dead_lettered_and_read_back(name):
    event = POISON_EVENTS[name]

    [back] = deadletter.decode(deadletter.encode([record_of(event)]))

    repaired = SURROGATE in transform.json_text(event)
    expected = transform.LONE_SURROGATE.sub("\ufffd", transform.json_text(event))
    assert transform.json_text(back["event"]) == expected
    assert (back.get(transform.REPAIRED_REASON) == transform.SURROGATES_REPLACED) is repaired
    assert back["doc_id"] == "d" and back["reason"] == "rejected"


@pytest.mark.parametrize("name", ["surrogate", "deep"])
def test_a_poison_event_the_cluster_rejects_is_dead_lettered_not_a_failed_file(tmp_path, name):
    poison = POISON_EVENTS[name]
    files = {fakes.log_key("Poison000000001"): fakes.trail_file([fakes.event("good-1"), poison])}
    cluster = fakes.ScriptedCluster(reject=lambda doc_id, doc: 400 if doc_id == poison["eventID"] else None)
    processor = fakes.processor_for(fakes.MemorySource(files), cluster)
    processor.dead_letters = LocalDeadLetters(tmp_path)

    [result] = processor.process_files([ObjectRef("b", k) for k in files], deadline=100)

    assert (result.events_read, result.indexed, result.dead_lettered) == (2, 1, 1)
    [path] = tmp_path.rglob("*.ndjson.gz")
    [record] = deadletter.decode(path.read_bytes())
    assert record["doc_id"] == poison["eventID"] and record["event"]["eventID"] == poison["eventID"]


def test_a_repaired_document_is_indexed_and_counted(caplog):
    events = [fakes.event("clean-1"), fakes.event("bad-1", userAgent="agent" + SURROGATE)]
    files = {fakes.log_key("Repaired0000001"): fakes.trail_file(events)}
    cluster = fakes.ScriptedCluster()
    processor = fakes.processor_for(fakes.MemorySource(files), cluster)

    with caplog.at_level(logging.INFO, logger="cloudtrail_es.write.processor"):
        [result] = processor.process_files([ObjectRef("b", k) for k in files], deadline=100)

    assert (result.events_read, result.indexed, result.repaired) == (2, 2, 1)
    landed = cluster.documents[("ct-2024-01", "bad-1")]
    assert landed[transform.REPAIRED_REASON] == transform.SURROGATES_REPLACED
    assert landed["userAgent"] == "agent\ufffd"
    [line] = [r for r in caplog.records if r.getMessage() == "file loaded"]
    assert line.repaired == 1
    assert RunResult(loaded=[result]).summary()["repaired"] == 1


def test_a_degraded_document_that_was_repaired_is_counted():
    event = fakes.event("bad-2", requestParameters={"x": SURROGATE})
    files = {fakes.log_key("Repaired0000002"): fakes.trail_file([event])}
    cluster = fakes.ScriptedCluster(reject=lambda doc_id, doc: None if transform.DEGRADED_REASON in doc else 400)
    processor = fakes.processor_for(fakes.MemorySource(files), cluster)

    [result] = processor.process_files([ObjectRef("b", k) for k in files], deadline=100)

    assert (result.events_read, result.degraded, result.repaired) == (1, 1, 1)


@pytest.mark.parametrize("error", [
    MAPPING_TIMEOUT,
    {"type": "process_cluster_event_timeout_exception", "reason": "failed to process cluster event"},
    {"type": "es_rejected_execution_exception", "reason": "rejected execution"},
])
def test_an_item_failed_because_the_cluster_was_busy_is_retried_not_degraded(error):
    files = {fakes.log_key("Busy00000000001"): fakes.trail_file([fakes.event("a-1"), fakes.event("b-1")])}
    cluster = fakes.ScriptedCluster({"b-1": (500, error)}, {"b-1": (500, error)})
    processor = fakes.processor_for(fakes.MemorySource(files), cluster)

    [result] = processor.process_files([ObjectRef("b", k) for k in files], deadline=100)

    assert (result.indexed, result.degraded, result.retried) == (2, 0, 2)
    assert transform.DEGRADED_REASON not in cluster.documents[("ct-2024-01", "b-1")]
    assert cluster.bulk == [["a-1", "b-1"], ["b-1"], ["b-1"]]


def test_busy_items_are_retried_only_until_the_deadline():
    clock = iter(range(0, 1000, 10))
    backoff = fakes.quick_backoff()
    backoff.clock = lambda: float(next(clock))
    cluster = fakes.ScriptedCluster(*[{"b-1": (500, MAPPING_TIMEOUT)}] * 50)
    writer = BulkWriter(cluster, backoff=backoff)

    with pytest.raises(RetryDeadlineExceeded, match="gave up retrying"):
        list(writer.outcomes([bulk_item("i", "b-1", {"a": "b"})], deadline=35.0))


#: Reasons around the busy words: any text, the words inside other text, and near misses
#: (a word cut short or changed), so both halves of the property below are exercised.
BUSY_WORDS = MAPPING_TIMEOUT["reason"]
WITH_BUSY_WORDS = st.builds(lambda before, after: before + BUSY_WORDS + after,
                           st.text(max_size=10), st.text(max_size=10))
REASONS = st.one_of(
    st.text(max_size=40), WITH_BUSY_WORDS, WITH_BUSY_WORDS,
    st.builds(lambda cut: BUSY_WORDS[:cut] + BUSY_WORDS[cut + 1:], st.integers(0, len(BUSY_WORDS) - 1)),
    st.builds(lambda at: BUSY_WORDS[:at] + BUSY_WORDS[at].swapcase() + BUSY_WORDS[at + 1:],
              st.integers(0, len(BUSY_WORDS) - 1).filter(lambda at: BUSY_WORDS[at].isalpha())),
)


@settings(max_examples=120, deadline=None)
@given(status=st.one_of(st.sampled_from([400, 429, 500, 503]), st.integers(min_value=100, max_value=599)),
       error_type=st.one_of(st.just("mapper_exception"),
                            st.sampled_from(["mapper_exception", "mapper_parsing_exception",
                                             "illegal_argument_exception",
                                             "version_conflict_engine_exception"])),
       reason=REASONS)
def test_a_document_error_is_never_retried(status, error_type, reason):
    """Only 429/503 and busy errors are retried: an error about the document stays final."""
    error = {"type": error_type, "reason": reason}
    busy = error_type == "mapper_exception" and BUSY_WORDS in reason
    hypothesis.event("busy" if busy else "throttled" if status in (429, 503) else "final")
    assert retryable_item(status, error) is (status in (429, 503) or busy)


def test_an_item_error_of_a_strange_shape_is_not_retried():
    for error in (None, "text", ["list"], {"type": None}, {"reason": MAPPING_TIMEOUT["reason"]}):
        assert retryable_item(500, error) is False
    assert retryable_item(500, {**MAPPING_TIMEOUT, "reason": "x " + MAPPING_TIMEOUT["reason"]})


@settings(max_examples=40, deadline=None)
@given(event=st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=15), depth=st.integers(min_value=0, max_value=1500))
def test_every_record_encodes_and_decodes(event, depth):
    """Any JSON value (lone surrogates included), at any depth, goes through a dead letter."""
    record = record_of({"eventID": "p", "requestParameters": nested(depth, event)})

    [back] = deadletter.decode(deadletter.encode([record]))

    text = transform.json_text(record["event"])
    assert transform.json_text(back["event"]) == transform.LONE_SURROGATE.sub("\ufffd", text)


# --- the SQS per-message boundary under hostile message bodies ----------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10)


def shapes(hostile):
    """Bodies that look like each trigger shape, with ``hostile`` where the loader looks."""
    return st.one_of(
        st.builds(lambda h: {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                                          "s3": h}]}, hostile),
        st.builds(lambda h: {"Records": [{"eventSource": "aws:s3", "eventName": h,
                                          "s3": {"bucket": {"name": "b"}, "object": {"key": h}}}]},
                  hostile),
        st.builds(lambda h: {"source": "aws.s3", "detail-type": "Object Created", "detail": h}, hostile),
        st.builds(lambda h: {"s3Bucket": "b", "s3ObjectKey": h}, hostile),
        st.builds(lambda h: {"Type": "Notification", "TopicArn": "t", "Message": h}, hostile),
        st.builds(lambda h: {"Records": h}, hostile),
        hostile,
    )


HOSTILE = JSON_VALUES | st.builds(nested, st.integers(min_value=900, max_value=3000)) | st.just(SURROGATE)
BODIES = shapes(HOSTILE) | st.text(max_size=30) | st.builds(lambda d: '{"a":' * d, st.integers(1, 3000))


def body_text(body):
    if isinstance(body, str):
        return body
    try:
        return json.dumps(body)
    except RecursionError:
        return deepjson.dumps(body)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bodies=st.lists(BODIES, min_size=1, max_size=4))
def test_no_sqs_message_body_fails_another_message(monkeypatch, bodies):
    """Whatever the bodies hold, the good message's file loads and only messages that did not
    load are listed; nothing is raised while the batch has a message that loaded."""
    import lambda_function
    from cloudtrail_es.aws import handler as routes

    good_key = fakes.log_key("GoodFileNumber1")
    files = {good_key: fakes.trail_file([fakes.event("good-a")])}
    cluster = fakes.ScriptedCluster()
    processor = fakes.processor_for(fakes.MemorySource(files), cluster, fakes.MemoryDeadLetters())
    monkeypatch.setattr(routes, "processor", lambda: processor)
    good = {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                         "s3": {"bucket": {"name": "b"}, "object": {"key": good_key}}}]}
    records = [{"messageId": f"m{n}", "eventSource": "aws:sqs", "body": body_text(body)}
               for n, body in enumerate([good, *bodies])]

    answer = lambda_function.lambda_handler({"Records": records}, None)

    failed = {item["itemIdentifier"] for item in answer["batchItemFailures"]}
    assert "m0" not in failed and ("ct-2024-01", "good-a") in cluster.documents
    assert failed <= {f"m{n}" for n in range(1, len(records))}


def test_a_deep_invocation_is_an_unknown_event_not_a_recursion_error():
    from cloudtrail_es.core.errors import UnknownEvent
    from cloudtrail_es.aws.notifications import describe, parse_invocation

    with pytest.raises(UnknownEvent, match="nested too deep"):
        parse_invocation({"detail": nested(5000)})
    assert describe([nested(5000)]) == "a list nested too deep to show"


# --- hostile events through the whole write path, dead letters really encoded --------------

def escaped_file(records):
    """A log file holding ``records`` exactly, at any depth, lone surrogates as escapes."""
    text = deepjson.dumps({"Records": records})
    return gzip.compress(transform.LONE_SURROGATE.sub(lambda m: "\\u%04x" % ord(m.group()), text).encode())


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(records=st.lists(events | st.builds(lambda d, e: {**e, "requestParameters": deep(d)},
                                           st.integers(900, 2500), events), min_size=1, max_size=4),
       rejected=st.sets(st.integers(0, 3)), degraded_too=st.booleans())
def test_hostile_events_are_indexed_degraded_or_dead_lettered_never_a_failed_file(records, rejected, degraded_too):
    """Whatever the events hold and whatever the cluster rejects, the file loads and every
    event read is in one place; the dead letters written decode to the events rejected."""
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        ids = {}

        def reject(doc_id, document):
            number = ids.setdefault(doc_id, len(ids))
            if number in rejected and (degraded_too or transform.DEGRADED_REASON not in document):
                return 400
            return None

        files = {fakes.log_key("Hostile00000001"): escaped_file(records)}
        processor = fakes.processor_for(fakes.MemorySource(files), fakes.ScriptedCluster(reject=reject))
        processor.dead_letters = LocalDeadLetters(directory)

        [result] = processor.process_files([ObjectRef("b", k) for k in files], deadline=100)

        assert not isinstance(result, Exception), result
        assert result.events_read == len(records)
        assert result.indexed + result.degraded + result.dead_lettered == len(records)
        assert result.repaired <= result.indexed + result.degraded
        written = [r for path in LocalDeadLetters(directory).files() for r in LocalDeadLetters(directory).read(path)]
        assert len(written) == result.dead_lettered


def test_a_log_line_naming_a_key_with_a_lone_surrogate_is_written_not_lost():
    import io

    from cloudtrail_es.core.logs import JsonFormatter, _JsonHandler

    stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    handler = _JsonHandler(stream)
    handler.setFormatter(JsonFormatter())
    record = logging.makeLogRecord({"msg": "skipped", "key": "a" + SURROGATE + "é"})

    handler.emit(record)
    stream.flush()

    line = json.loads(stream.buffer.getvalue().decode("utf-8"))
    assert line["key"] == "a" + SURROGATE + "é" and line["message"] == "skipped"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=events, depth=st.integers(0, 2500), reason=st.text(max_size=20))
def test_the_degraded_form_of_any_event_serialises_to_utf8_json_holding_the_event(event, depth, reason):
    """Deep nesting, lone surrogates and integers past 64 bits: the degraded document is sent,
    its ``event_raw`` the event's text (surrogates repaired and said so)."""
    event = {**event, "requestParameters": deep(depth, event.get("requestParameters"))}

    item = bulk_item("ct-2024-01", "id", transform.degraded_document_for(event, reason))

    source = json.loads(item.lines.decode("utf-8").split("\n")[1])
    text = transform.json_text(event)
    assert source[transform.EVENT_RAW] == transform.LONE_SURROGATE.sub("\ufffd", text)
    assert item.repaired is (transform.LONE_SURROGATE.search(text + reason) is not None)
    assert (source.get(transform.REPAIRED_REASON) == transform.SURROGATES_REPLACED) is item.repaired
