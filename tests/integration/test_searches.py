"""Every search users rely on, run on the real cluster over the whole shared corpus.

The mapping trades storage for capabilities field by field (indexes.py says which and why).
These tests pin the capabilities down: each search runs against the corpus loaded by the
processor, and its hits are checked against what is computed here, independently, from the
corpus events in Python. A mapping change that drops an index, doc values or positions a
search needs makes one of them fail (or error), instead of silently breaking Dashboards.
"""
from __future__ import annotations

import gzip
import json
import re
import time
import uuid
from collections import Counter
from datetime import datetime, timezone
from typing import Any

import pytest
import requests
from support import count, leaves, moto_source, value_at

from cloudtrail_es.core.config import Settings
from cloudtrail_es.write.processor import ObjectRef, create_processor


# --------------------------------------------------------------------------------------
# The corpus, loaded once for the module, and the independent expectations.
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def events(corpus_files) -> list[dict[str, Any]]:
    return [event for _, data in corpus_files
            for event in json.loads(gzip.decompress(data))["Records"]]


@pytest.fixture(scope="module")
def cluster(opensearch_url, moto_url, corpus_files, events):
    """(url, index pattern) of the whole corpus loaded through the processor.

    Module-scoped (loading takes a while), so it makes and deletes its own prefix the way
    the ``index_prefix`` fixture does.
    """
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    try:
        settings = Settings(es_url=opensearch_url, auth="none", index_prefix=prefix,
                            index_replicas=0)
        source, bucket = moto_source(moto_url, corpus_files)
        processor = create_processor(settings, source=source)
        results = processor.process_files([ObjectRef(bucket, key) for key, _ in corpus_files],
                                          time.monotonic() + 900)
        assert all(not isinstance(r, Exception) for r in results), results
        assert sum(r.indexed for r in results) == len(events)
        assert sum(r.degraded + r.dead_lettered for r in results) == 0
        requests.post(f"{opensearch_url}/{prefix}-*/_refresh", timeout=120).raise_for_status()
        yield opensearch_url, f"{prefix}-*"
    finally:
        requests.delete(f"{opensearch_url}/{prefix}-*", timeout=120)




def search(cluster, body) -> dict[str, Any]:
    url, pattern = cluster
    response = requests.post(f"{url}/{pattern}/_search", json=body, timeout=60)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["_shards"]["failed"] == 0, result["_shards"]
    return result


def ids(cluster, query) -> set[str]:
    hits = search(cluster, {"query": query, "size": 10_000, "_source": False})["hits"]
    assert hits["total"]["value"] < 10_000
    return {hit["_id"] for hit in hits["hits"]}




def string_values(events, path) -> Counter:
    """How many events have each string value at ``path``."""
    return Counter(v for v in (value_at(e, path) for e in events) if isinstance(v, str))




def events_with_leaf(events, name, key, wanted) -> set[str]:
    return {e["eventID"] for e in events
            if any(k == key and v == wanted for k, v in leaves(e.get(name)))}


def most_common_leaf(events, name, key) -> str:
    counts = Counter()
    for event in events:
        counts.update({v for k, v in leaves(event.get(name)) if k == key and isinstance(v, str)})
    assert counts, f"no {name}.{key} in the corpus"
    return min(counts, key=lambda v: (-counts[v], v))


def top(counter: Counter, n: int) -> list[tuple[str, int]]:
    """The n largest, ties by key ascending (a terms aggregation's order)."""
    return sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def event_time(event) -> datetime:
    return datetime.strptime(event["eventTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


# --------------------------------------------------------------------------------------
# Exact filters on the top-level fields and the user identity
# --------------------------------------------------------------------------------------

EXACT_FIELDS = (
    "eventName", "eventSource", "awsRegion", "sourceIPAddress", "errorCode",
    "userIdentity.arn", "userIdentity.userName", "userIdentity.type",
    "userIdentity.accountId", "userIdentity.principalId", "userIdentity.accessKeyId",
    "userIdentity.sessionContext.sessionIssuer.arn",
    "userIdentity.sessionContext.sessionIssuer.userName",
)


@pytest.mark.parametrize("field", EXACT_FIELDS)
def test_exact_filter_counts_match_the_corpus(cluster, events, field):
    values = string_values(events, field)
    assert values, f"no {field} in the corpus"
    # The most common value, and a rare one: a filter must find every event, not some.
    checked = [top(values, 1)[0]] + [min((kv for kv in values.items() if kv[1] <= 3),
                                         default=top(values, 1)[0])]
    for value, expected in checked:
        assert count(cluster, {"term": {field: value}}) == expected, (field, value)


def test_runinstances_count_by_event_name_and_source(cluster, events):
    expected = sum(1 for e in events if e.get("eventName") == "RunInstances"
                   and e.get("eventSource") == "ec2.amazonaws.com")
    assert expected
    assert count(cluster, {"bool": {"filter": [
        {"term": {"eventName": "RunInstances"}},
        {"term": {"eventSource": "ec2.amazonaws.com"}}]}}) == expected


def test_lookup_by_event_id(cluster, events):
    event = events[len(events) // 2]
    assert ids(cluster, {"term": {"eventID": event["eventID"]}}) == {event["eventID"]}


# --------------------------------------------------------------------------------------
# Time: range queries, date histograms, sorting
# --------------------------------------------------------------------------------------


def test_time_range_query(cluster, events):
    # From the trail's first third to its second, by distinct seconds (a real trail may put
    # most of its events in one day, or one second): part of it, wherever it lies in time.
    times = sorted({event_time(e).replace(microsecond=0) for e in events})
    start, end = (times[len(times) * n // 3] for n in (1, 2))
    expected = sum(1 for e in events if start <= event_time(e) < end)
    assert 0 < expected < len(events)
    assert count(cluster, {"range": {"eventTime": {
        "gte": f"{start:%Y-%m-%dT%H:%M:%SZ}", "lt": f"{end:%Y-%m-%dT%H:%M:%SZ}"}}}) == expected


def test_date_histogram_by_month_and_by_year(cluster, events):
    for interval, key_format in (("year", "%Y"), ("month", "%Y-%m")):
        expected = Counter(event_time(e).strftime(key_format) for e in events)
        result = search(cluster, {"size": 0, "aggs": {"t": {"date_histogram": {
            "field": "eventTime", "calendar_interval": interval, "min_doc_count": 1,
            "format": "yyyy" if interval == "year" else "yyyy-MM"}}}})
        buckets = {b["key_as_string"]: b["doc_count"] for b in result["aggregations"]["t"]["buckets"]}
        assert buckets == dict(expected), interval


def test_newest_first_sort_on_event_time(cluster, events):
    newest = max(event_time(e) for e in events)
    hits = search(cluster, {"size": 1, "sort": [{"eventTime": "desc"}],
                            "_source": ["eventTime"]})["hits"]["hits"]
    assert hits[0]["sort"][0] == int(newest.timestamp() * 1000)


# --------------------------------------------------------------------------------------
# Flattened leaves: exact values at any depth, and exists
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,key", [
    ("requestParameters", "instanceId"),
    ("requestParameters", "bucketName"),
    ("resources", "ARN"),
    ("responseElements", "instanceId"),
])
def test_flattened_leaf_term_lookup(cluster, events, name, key):
    value = most_common_leaf(events, name, key)
    expected = events_with_leaf(events, name, key, value)
    assert ids(cluster, {"term": {f"{name}_flattened.{key}": value}}) == expected


def test_flattened_lookup_finds_the_run_instances_event_of_an_instance(cluster, events):
    run = next(e for e in events if e.get("eventName") == "RunInstances"
               and any(k == "instanceId" for k, _ in leaves(e.get("responseElements"))))
    instance = next(v for k, v in leaves(run["responseElements"]) if k == "instanceId")
    found = ids(cluster, {"term": {"responseElements_flattened.instanceId": instance}})
    assert run["eventID"] in found
    assert found == events_with_leaf(events, "responseElements", "instanceId", instance)


def test_exists_on_a_flattened_leaf(cluster, events):
    expected = {e["eventID"] for e in events
                if any(k == "instanceId" for k, _ in leaves(e.get("responseElements")))}
    assert ids(cluster, {"exists": {"field": "responseElements_flattened.instanceId"}}) == expected


# --------------------------------------------------------------------------------------
# Free text over the raw request and response JSON: match and phrase
# --------------------------------------------------------------------------------------

#: Characters that end a token for the standard analyzer whatever surrounds them. A token
#: is only chosen if every occurrence of it is bounded by these (or the text's ends), so
#: the expected hits do not depend on finer points of Unicode word breaking.
BREAKS = set('"{}[],= -/\t\n')


def raw_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).lower()


def occurrences(text: str, token: str) -> list[tuple[str, str]]:
    """(char before, char after) of each whole-word occurrence of ``token``."""
    found = []
    for match in re.finditer(re.escape(token), text):
        before = text[match.start() - 1] if match.start() else " "
        after = text[match.end()] if match.end() < len(text) else " "
        if not before.isalnum() and not after.isalnum():
            found.append((before, after))
    return found


def clean_token(events, name) -> tuple[str, set[str]]:
    """A token of ``<name>_raw`` found in a few events, every occurrence plainly bounded."""
    texts = {e["eventID"]: raw_text(e[name]) for e in events
             if isinstance(e.get(name), (dict, list))}
    candidates = Counter()
    for text in texts.values():
        candidates.update({run for run in re.findall(r"[a-z0-9]+", text) if 6 <= len(run) <= 40})
    for token in sorted(t for t, n in candidates.items()
                        if 2 <= n <= 50 and re.search("[a-z]", t) and re.search("[0-9]", t)):
        hits, clean = set(), True
        for event_id, text in texts.items():
            around = occurrences(text, token)
            if any(b not in BREAKS or a not in BREAKS for b, a in around):
                clean = False
                break
            if around:
                hits.add(event_id)
        if clean and len(hits) >= 2:
            return token, hits
    pytest.fail(f"no plainly bounded token in {name}_raw")


@pytest.mark.parametrize("name", ["requestParameters", "responseElements"])
def test_match_query_on_raw_text(cluster, events, name):
    token, expected = clean_token(events, name)
    assert ids(cluster, {"match": {f"{name}_raw": token}}) == expected


def test_phrase_query_on_raw_text(cluster, events):
    """A quoted value in Dashboards is a phrase query: the raw text needs positions."""
    bucket = most_common_leaf(events, "requestParameters", "bucketName")
    words = re.findall(r"[a-z0-9]+", bucket.lower())
    pair = '"bucketname":' + raw_text(bucket)
    expected = {e["eventID"] for e in events
                if isinstance(e.get("requestParameters"), (dict, list))
                and pair in raw_text(e["requestParameters"])}
    assert expected
    phrase = ids(cluster, {"match_phrase": {"requestParameters_raw": f"bucketName {bucket}"}})
    assert expected <= phrase
    # Adjacent words only: every hit has the bucket's words right after "bucketName".
    follows = re.compile(r"bucketname[^a-z0-9]+" + r"[^a-z0-9]+".join(map(re.escape, words))
                         + r"(?![a-z0-9])")
    texts = {e["eventID"]: raw_text(e.get("requestParameters")) for e in events}
    assert all(follows.search(texts[event_id]) for event_id in phrase)


# --------------------------------------------------------------------------------------
# Aggregations Dashboards draws
# --------------------------------------------------------------------------------------


def terms(field, size, **extra):
    return {"terms": {"field": field, "size": size, "shard_size": 10_000, **extra}}


@pytest.mark.parametrize("field,n", [("userIdentity.arn", 3), ("eventName", 5),
                                     ("eventSource", 5), ("awsRegion", 3),
                                     ("sourceIPAddress", 3), ("userAgent", 3)])
def test_top_values(cluster, events, field, n):
    result = search(cluster, {"size": 0, "aggs": {"top": terms(field, n)}})
    buckets = [(b["key"], b["doc_count"]) for b in result["aggregations"]["top"]["buckets"]]
    assert buckets == top(string_values(events, field), n)


def test_errors_by_service(cluster, events):
    expected = Counter((e["errorCode"], e["eventSource"]) for e in events
                       if isinstance(e.get("errorCode"), str) and isinstance(e.get("eventSource"), str))
    assert expected
    result = search(cluster, {"size": 0, "aggs": {"errors": {
        **terms("errorCode", 1000), "aggs": {"services": terms("eventSource", 1000)}}}})
    found = Counter({(error["key"], service["key"]): service["doc_count"]
                     for error in result["aggregations"]["errors"]["buckets"]
                     for service in error["services"]["buckets"]})
    assert found == expected


def test_events_per_month_of_the_top_event_name(cluster, events):
    """A date histogram split by a keyword: the usual Dashboards bar chart."""
    name = top(string_values(events, "eventName"), 1)[0][0]
    expected = Counter(event_time(e).strftime("%Y-%m") for e in events if e.get("eventName") == name)
    result = search(cluster, {"size": 0, "query": {"term": {"eventName": name}}, "aggs": {"t": {
        "date_histogram": {"field": "eventTime", "calendar_interval": "month",
                           "min_doc_count": 1, "format": "yyyy-MM"}}}})
    assert {b["key_as_string"]: b["doc_count"]
            for b in result["aggregations"]["t"]["buckets"]} == dict(expected)
