"""EMF records: the exact shape CloudWatch accepts, the numbers they carry, the lags."""
from __future__ import annotations

import io
import json
import math
from datetime import datetime, timedelta, timezone

import jsonschema
import pytest
from emf_schema import EMF_SCHEMA, MAX_VALUES, assert_valid_emf
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudtrail_es.aws import metrics
from cloudtrail_es.core import results
from cloudtrail_es.core.errors import FileFailed
from cloudtrail_es.core.results import FileResult, RunResult

SPEC_METRICS = {"EventsRead", "EventsIndexed", "EventsDegraded", "EventsDeadLettered",
                "EventsFiltered", "FilesLoaded", "FilesFailed", "BulkRequests", "BulkRetries",
                "Throttled", "IngestionLagSeconds", "ObjectLagSeconds"}
PER_INDEX_METRICS = SPEC_METRICS - {"BulkRequests", "Throttled"}


NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc).timestamp()


def result(index: str, n: int, lag: float | None = 60.0, object_lag: float | None = 30.0,
           **counts) -> FileResult:
    r = FileResult("bucket", f"key-{index}-{n}", index, **counts)
    if lag is not None:
        r.newest_event_time = datetime.fromtimestamp(NOW - lag, timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%SZ")
        r.searchable_at = NOW
    if object_lag is not None and r.searchable_at is not None:
        r.object_modified = NOW - object_lag
    return r


def failure(index_month: str) -> FileFailed:
    return FileFailed("bucket", f"AWSLogs/111122223333/CloudTrail/us-east-1/{index_month}/01/"
                      f"111122223333_CloudTrail_us-east-1_{index_month.replace('/', '')}01T0000Z_x.json.gz",
                      "corrupt gzip data")


def emitted(runs, **kwargs) -> list[dict]:
    out = io.StringIO()
    returned = metrics.emit(runs, "ct", function_name="loader", stream=out, clock=lambda: NOW, **kwargs)
    lines = out.getvalue().splitlines()
    records = [assert_valid_emf(line) for line in lines]
    assert records == returned
    return records


def test_one_record_per_dimension_set_with_the_counts():
    run = RunResult(
        loaded=[result("ct-2024-01", 1, events_read=10, indexed=6, degraded=1, dead_lettered=1,
                       filtered=2, retried=3, bulk_requests=2, throttled=1),
                result("ct-2024-01", 2, lag=120.0, events_read=5, indexed=5, bulk_requests=1),
                result("ct-2024-02", 3, lag=None, events_read=4, filtered=4)],
        failed=[failure("2024/02"), failure("2024/03")])
    first, second, third, fourth = emitted([run, RunResult()])

    assert first["_aws"]["Timestamp"] == int(NOW * 1000)
    for record in (first, second, third, fourth):
        [directive] = record["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "CloudTrailToElasticsearch"
        assert record["FunctionName"] == "loader"
    assert first["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["FunctionName"]]
    assert {m["Name"] for m in first["_aws"]["CloudWatchMetrics"][0]["Metrics"]} == SPEC_METRICS
    assert {k: first[k] for k in ("EventsRead", "EventsIndexed", "EventsDegraded",
                                  "EventsDeadLettered", "EventsFiltered", "BulkRetries",
                                  "BulkRequests", "Throttled", "FilesLoaded", "FilesFailed")} == {
        "EventsRead": 19, "EventsIndexed": 11, "EventsDegraded": 1, "EventsDeadLettered": 1,
        "EventsFiltered": 6, "BulkRetries": 3, "BulkRequests": 3, "Throttled": 1,
        "FilesLoaded": 3, "FilesFailed": 2}
    assert sorted(first["IngestionLagSeconds"]) == [60.0, 120.0]
    assert first["ObjectLagSeconds"] == [30.0, 30.0]

    assert [r["Index"] for r in (second, third, fourth)] == ["ct-2024-01", "ct-2024-02", "ct-2024-03"]
    for record in (second, third, fourth):
        assert record["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["FunctionName", "Index"]]
        names = {m["Name"] for m in record["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
        assert names <= PER_INDEX_METRICS and "BulkRequests" not in record
    assert (second["EventsRead"], second["FilesLoaded"], second["FilesFailed"]) == (15, 2, 0)
    assert sorted(second["IngestionLagSeconds"]) == [60.0, 120.0]
    assert (third["EventsRead"], third["EventsFiltered"], third["FilesFailed"]) == (4, 4, 1)
    assert "IngestionLagSeconds" not in third      # nothing of it became searchable
    assert (fourth["FilesLoaded"], fourth["FilesFailed"], fourth["EventsRead"]) == (0, 1, 0)


def test_an_invocation_without_files_still_reports_zeros():
    [record] = emitted([])
    assert record["EventsRead"] == record["FilesLoaded"] == record["BulkRequests"] == 0
    assert "IngestionLagSeconds" not in record


@settings(max_examples=20, deadline=None)
@given(files=st.integers(0, 450), indexes=st.integers(1, 3))
def test_lag_values_beyond_100_go_to_more_records_and_counts_are_not_repeated(files, indexes):
    run = RunResult(loaded=[result(f"ct-2024-0{n % indexes + 1}", n, lag=float(n), events_read=1)
                            for n in range(files)])
    records = emitted([run])
    function = [r for r in records if "Index" not in r]
    assert sum(r.get("EventsRead", 0) for r in function) == files
    assert sorted(v for r in function for v in r.get("IngestionLagSeconds", [])) == \
        [float(n) for n in range(files)]
    assert len(function) == max(1, math.ceil(files / MAX_VALUES))
    for index in {f"ct-2024-0{n % indexes + 1}" for n in range(files)}:
        own = [r for r in records if r.get("Index") == index]
        assert sum(r.get("EventsRead", 0) for r in own) == sum(
            1 for n in range(files) if f"ct-2024-0{n % indexes + 1}" == index)
        assert all(len(r.get("ObjectLagSeconds", [])) <= MAX_VALUES for r in own)


def test_record_refuses_to_break_emf_limits():
    with pytest.raises(ValueError):
        metrics.record({f"d{n}": "x" for n in range(10)}, {"EventsRead": 1}, 0)
    with pytest.raises(ValueError):
        metrics.record({"FunctionName": "f"}, {f"m{n}": 1 for n in range(101)}, 0)


def test_lags_of_a_file():
    r = FileResult("b", "k", "i")
    assert results.lags(r) == {} and results.ingestion_lag(r) is None
    r.newest_event_time = "2024-03-13T08:38:00Z"
    r.searchable_at = datetime(2024, 3, 13, 8, 40, 30, tzinfo=timezone.utc).timestamp()
    r.object_modified = r.searchable_at - 12.5
    assert results.lags(r) == {"ingestion_lag_seconds": 150.0, "object_lag_seconds": 12.5}
    r.newest_event_time = "2024-03-13T09:00:00Z"        # ahead of our clock: no negative age
    assert results.ingestion_lag(r) == 0.0
    r.newest_event_time = "2024-99-13T09:00:00Z"        # malformed: unknown, not an error
    assert results.ingestion_lag(r) is None


def test_max_lags_of_a_run():
    run = RunResult(loaded=[result("i", 1, lag=5.0), result("i", 2, lag=50.0, object_lag=None),
                            result("i", 3, lag=None)])
    assert results.max_lags(run.loaded) == {"ingestion_lag_seconds_max": 50.0,
                                            "object_lag_seconds_max": 30.0}
    assert RunResult().summary()["ingestion_lag_seconds_max"] is None


event_times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31))


@settings(max_examples=100)
@given(times=st.lists(event_times, max_size=20),
       junk=st.lists(st.one_of(st.none(), st.integers(), st.text(max_size=25)), max_size=5))
def test_the_newest_event_time_is_the_latest_well_formed_one(times, junk):
    r = FileResult("b", "k", "i")
    events = [{"eventTime": t.strftime("%Y-%m-%dT%H:%M:%SZ")} for t in times]
    events += [{"eventTime": j} for j in junk if not (isinstance(j, str) and len(j) == 20)] + [{}]
    for event in sorted(events, key=lambda e: str(e.get("eventTime"))[::-1]):
        results.note_event_time(r, event)
    if times:
        newest = max(times).replace(microsecond=0, tzinfo=timezone.utc)
        assert results.epoch_seconds(r.newest_event_time) == newest.timestamp()
        r.searchable_at = newest.timestamp() + 7
        assert results.ingestion_lag(r) == 7.0
    else:
        assert r.newest_event_time == ""


def test_emit_defaults_to_the_lambda_function_name_and_stdout(monkeypatch, capsys):
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "CloudTrail_to_Elasticsearch")
    metrics.emit([RunResult(loaded=[result("ct-2024-01", 1, events_read=3)])], "ct")
    lines = capsys.readouterr().out.splitlines()
    records = [assert_valid_emf(line) for line in lines]
    assert [r.get("Index") for r in records] == [None, "ct-2024-01"]
    assert {r["FunctionName"] for r in records} == {"CloudTrail_to_Elasticsearch"}
    assert records[0]["_aws"]["Timestamp"] > (datetime.now(timezone.utc) - timedelta(minutes=5)
                                              ).timestamp() * 1000


def test_the_schema_rejects_what_cloudwatch_rejects():
    good = metrics.record({"FunctionName": "f"}, {"EventsRead": 1}, 1)
    jsonschema.validate(good, EMF_SCHEMA)
    broken = [
        {k: v for k, v in good.items() if k != "_aws"},
        {**good, "_aws": {**good["_aws"], "Timestamp": "now"}},
        {**good, "_aws": {**good["_aws"], "CloudWatchMetrics": [
            {**good["_aws"]["CloudWatchMetrics"][0], "Metrics": [{"Name": "EventsRead", "Unit": "Things"}]}]}},
        {**good, "_aws": {**good["_aws"], "CloudWatchMetrics": [
            {**good["_aws"]["CloudWatchMetrics"][0], "Dimensions": [[f"d{n}" for n in range(10)]]}]}},
    ]
    for record in broken:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(record, EMF_SCHEMA)
    with pytest.raises(AssertionError):
        assert_valid_emf(json.dumps({**good, "FunctionName": 3}))
    with pytest.raises(AssertionError):
        assert_valid_emf(json.dumps({**good, "EventsRead": list(range(101))}))
