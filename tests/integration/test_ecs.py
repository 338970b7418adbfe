"""ECS names on the real cluster: aliases answer exactly as their CloudTrail fields.

The whole corpus is loaded once for the module by the backfill; every expectation is
computed here from the corpus events themselves (never from the transform's output).
Also: an index made before the ECS fields existed gets them when first touched, and
events whose own top-level keys collide with the ECS objects are indexed whole.
"""
from __future__ import annotations

import contextlib
import copy
import gzip
import io
import ipaddress
import json
import logging
import os
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import requests
from faultproxy import FaultProxy
from support import count, moto_source, refresh, value_at
from test_engines import services

from cloudtrail_es.backfill import cli
from cloudtrail_es.documents import ecs
from cloudtrail_es.write import indexes
from cloudtrail_es.documents import transform
from cloudtrail_es.write.cluster import create_cluster
from cloudtrail_es.core.config import Settings
from cloudtrail_es.write.engine import detect
from cloudtrail_es.read.keys import index_name_for
from cloudtrail_es.write.processor import create_processor

pytestmark = pytest.mark.integration

EVENTS = Path(__file__).resolve().parents[1] / "events"
KEY = ("AWSLogs/111122223333/CloudTrail/eu-west-1/2024/02/01/"
       "111122223333_CloudTrail_eu-west-1_20240201T1005Z_EcsCollide000001.json.gz")




def present(value: Any) -> bool:
    return value is not None and value != []


def address(text: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text) if isinstance(text, str) else None
    except ValueError:
        return None


def failed(event: dict[str, Any]) -> bool:
    """ECS outcome, computed from the event: an error code, or a sign-in that says Failure."""
    response = event.get("responseElements")
    return bool(event.get("errorCode")) or (
        isinstance(response, dict) and response.get(event.get("eventName")) == "Failure")


# --------------------------------------------------------------------------------------
# The corpus, loaded once by the backfill.
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def events(corpus_files) -> list[dict[str, Any]]:
    return [event for _, data in corpus_files
            for event in json.loads(gzip.decompress(data))["Records"]]


def backfill(url: str, prefix: str, corpus_dir: Path) -> dict[str, Any]:
    """The CLI over the corpus directory, as a user runs it; its JSON summary."""
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as env, contextlib.redirect_stdout(out):
        for name, value in {"ES_HOSTNAME": url, "ES_AUTH": "none", "INDEX_PREFIX": prefix,
                            "INDEX_REPLICAS": "0"}.items():
            env.setenv(name, value)
        assert cli.main(["--dir", str(corpus_dir), "--json", "--quiet"]) == cli.EXIT_OK
    requests.post(f"{url}/{prefix}-*/_refresh", timeout=120).raise_for_status()
    return json.loads(out.getvalue())


def load_corpus(url: str, prefix: str, corpus_dir: Path, events: list[dict[str, Any]]) -> None:
    """The corpus, every event in its full form, in one run.

    On a busy machine an engine may answer "timed out while waiting for a dynamic mapping
    update" for a few events (seen on Elasticsearch 8 here): the loader retries those items
    itself (the cluster was busy; the document was not judged), so one run must land every
    event whole. A second run would hide a loader that degrades them instead.
    """
    summary = backfill(url, prefix, corpus_dir)
    assert summary["events_read"] == summary["indexed"] == len(events)
    assert summary["degraded"] == summary["dead_lettered"] == 0


@pytest.fixture(scope="module")
def cluster(opensearch_url, corpus_dir, events):
    """(url, index pattern) of the whole corpus loaded by the backfill, own prefix."""
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    try:
        load_corpus(opensearch_url, prefix, corpus_dir, events)
        yield opensearch_url, f"{prefix}-*"
    finally:
        requests.delete(f"{opensearch_url}/{prefix}-*", timeout=120)




def terms(cluster, field, size=500) -> Counter:
    url, pattern = cluster
    response = requests.post(f"{url}/{pattern}/_search", timeout=60, json={
        "size": 0, "aggs": {"values": {"terms": {"field": field, "size": size}}}})
    assert response.status_code == 200, response.text
    return Counter({b["key"]: b["doc_count"]
                    for b in response.json()["aggregations"]["values"]["buckets"]})


# --------------------------------------------------------------------------------------
# Aliases and typed fields over the corpus, on any engine.
# --------------------------------------------------------------------------------------


def check_aliases(cluster, events) -> None:
    """Every alias answers as its field, and as the corpus says: exists, term, range."""
    checked_terms = 0
    for name, path in ecs.ALIASES.items():
        values = [value_at(e, path) for e in events]
        expected_present = sum(present(v) for v in values)
        assert count(cluster, {"exists": {"field": name}}) == expected_present, name
        assert count(cluster, {"exists": {"field": path}}) == expected_present, path
        if path == transform.DATE_FIELD:
            continue
        query = "match_phrase" if path in transform.TEXT_FIELDS else "term"
        for value, expected in Counter(v for v in values if isinstance(v, str)).most_common(3):
            assert count(cluster, {query: {name: value}}) == expected, (name, value)
            assert count(cluster, {query: {path: value}}) == expected, (path, value)
            checked_terms += 1
    assert checked_terms >= 3 * (len(ecs.ALIASES) - 1) - 3  # a field may have fewer values

    def time_of(event):
        return datetime.fromisoformat(event["eventTime"].replace("Z", "+00:00"))

    # Whole days from the trail's first third to its second: part of it, wherever it lies in time.
    times = sorted(time_of(e) for e in events)
    start, end = (times[len(times) * n // 3].replace(hour=0, minute=0, second=0) for n in (1, 2))
    end = max(end, start + timedelta(days=1))  # the two thirds may fall on one day (the corpus)
    expected = sum(start <= time_of(e) < end for e in events)
    assert 0 < expected < len(events)
    window = {"gte": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "lt": end.strftime("%Y-%m-%dT%H:%M:%SZ")}
    assert count(cluster, {"range": {"@timestamp": window}}) == expected
    assert count(cluster, {"range": {"eventTime": window}}) == expected


def check_typed_fields(cluster, events) -> None:
    """source.ip answers CIDR queries; event.outcome counts successes and failures."""
    addresses = [a for a in (address(e.get("sourceIPAddress")) for e in events) if a]
    assert count(cluster, {"exists": {"field": "source.ip"}}) == len(addresses)
    # Service names and pseudonymised non-addresses ("253.252.51.07") have none.
    assert len(addresses) < len(events)
    by_16 = Counter(ipaddress.ip_network(f"{a}/16", strict=False) for a in addresses if a.version == 4)
    by_8 = Counter(ipaddress.ip_network(f"{a}/8", strict=False) for a in addresses if a.version == 4)
    networks = [n for n, _ in by_16.most_common(3)] + [n for n, _ in by_8.most_common(2)]
    networks += [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("10.0.0.0/8")]
    for network in networks:
        expected = sum(a in network for a in addresses)
        assert count(cluster, {"term": {"source.ip": str(network)}}) == expected, network
    outcomes = Counter("failure" if failed(e) else "success" for e in events
                       if e.get("eventType") != "AwsCloudTrailInsight")  # not a call: no outcome
    assert outcomes["failure"] > 0 and outcomes["success"] > 0
    assert terms(cluster, "event.outcome") == outcomes


def expected_user(event: dict[str, Any]) -> str | None:
    """user.name as the docs state it, read off the raw event."""
    identity = event.get("userIdentity") or {}
    issuer = (identity.get("sessionContext") or {}).get("sessionIssuer") or {}
    arn = identity.get("arn") or ""
    from_arn = None
    for marker in (":assumed-role/", ":user/", ":federated-user/"):
        if marker in arn:
            rest = arn.split(marker, 1)[1]
            from_arn = rest.split("/")[0] if marker == ":assumed-role/" else rest.split("/")[-1]
    return (issuer.get("userName") or identity.get("userName") or from_arn
            or (identity.get("onBehalfOf") or {}).get("userId") or None)


#: The identity services (IAM, Identity Center) whose calls are ``iam``, and the calls, whatever
#: their service, that start (or check, or end) a session: ``authentication``.
IDENTITY_SOURCES = {"iam.amazonaws.com", "identitystore.amazonaws.com", "sso.amazonaws.com",
                    "sso-directory.amazonaws.com"}
SESSION_STARTS = {"ConsoleLogin", "SwitchRole", "AssumeRole", "AssumeRoleWithSAML",
                  "AssumeRoleWithWebIdentity", "AssumeRoot", "GetSessionToken", "GetFederationToken",
                  "GetSigninToken", "Federate", "Authenticate", "UserAuthentication",
                  "CredentialVerification"}
SESSION_CALLS = SESSION_STARTS | {"CheckMfa", "CredentialChallenge", "GetRoleCredentials", "CreateToken",
                                  "PasswordVerification", "ExitRole", "Logout", "ConsoleLogout"}


def check_real_fields(cluster, events, loaded_from: str, loaded_to: str) -> None:
    """user.name, cloud.account.id, the IAM targets, event.category and event.ingested."""
    calls = [e for e in events if e.get("eventType") != ecs.INSIGHT_EVENT_TYPE]
    users = Counter(u for u in map(expected_user, calls) if u)
    assert terms(cluster, "user.name", size=5000) == users
    assert sum(users.values()) > sum(1 for e in calls if (e.get("userIdentity") or {}).get(
        "userName"))  # assumed roles and the rest now have one
    accounts = Counter(e.get("recipientAccountId") or (e.get("userIdentity") or {}).get("accountId")
                       for e in events)
    del accounts[None]
    assert terms(cluster, "cloud.account.id") == accounts
    iam = [e for e in calls if e.get("eventSource") == "iam.amazonaws.com"]
    targets = Counter(e["requestParameters"]["userName"] for e in iam
                      if isinstance(e.get("requestParameters"), dict)
                      and e["requestParameters"].get("userName"))
    assert targets and terms(cluster, "user.target.name") == targets
    identity = [e for e in calls if e.get("eventSource") in IDENTITY_SOURCES
                and e.get("eventName") not in SESSION_CALLS]
    assert count(cluster, {"term": {"event.category": "iam"}}) == len(identity)
    sign_ins = sum(e.get("eventName") in SESSION_STARTS for e in calls)
    assert sign_ins and count(cluster, {"bool": {"filter": [
        {"term": {"event.category": "authentication"}}, {"term": {"event.type": "start"}}]}}) == sign_ins
    window = {"gte": loaded_from, "lte": loaded_to}
    assert count(cluster, {"range": {"event.ingested": window}}) == len(events)


def test_aliases_answer_exactly_as_their_cloudtrail_fields(cluster, events):
    check_aliases(cluster, events)


def test_the_names_analysts_and_rules_use_match_the_corpus(cluster, events):
    url, pattern = cluster
    stamps = requests.post(f"{url}/{pattern}/_search", timeout=60, json={"size": 0, "aggs": {
        "first": {"min": {"field": "event.ingested"}},
        "last": {"max": {"field": "event.ingested"}}}}).json()["aggregations"]
    check_real_fields(cluster, events, stamps["first"]["value_as_string"],
                      stamps["last"]["value_as_string"])
    # Every document of the corpus was stamped while the module loaded it, within minutes.
    assert stamps["last"]["value"] - stamps["first"]["value"] < 3600_000


def test_source_ip_and_event_outcome_match_the_corpus(cluster, events):
    check_typed_fields(cluster, events)


def test_aliases_aggregate_and_sort_like_their_fields(cluster, events):
    assert terms(cluster, "event.provider") == terms(cluster, "eventSource") == Counter(
        e["eventSource"] for e in events if "eventSource" in e)  # Insights events have none
    assert terms(cluster, "cloud.region") == Counter(e["awsRegion"] for e in events)
    url, pattern = cluster
    first = requests.post(f"{url}/{pattern}/_search", timeout=60, json={
        "size": 1, "sort": [{"@timestamp": "asc"}]}).json()["hits"]["hits"][0]
    assert first["_source"]["eventTime"] == min(e["eventTime"] for e in events)


# --------------------------------------------------------------------------------------
# Events whose own keys collide with the ECS objects; IPv6.
# --------------------------------------------------------------------------------------


def collision_events() -> list[dict[str, Any]]:
    base = json.loads((EVENTS / "transform" / "ecs_collisions.input.json").read_text())
    variants = [
        {},
        {"eventID": "ecs-v6", "sourceIPAddress": "2001:db8:1::7", "errorCode": None,
         "event": {"outcome": "hostile"}, "source": "198.51.100.1", "@timestamp": 5},
        {"eventID": "ecs-mapped", "sourceIPAddress": "::ffff:198.51.100.9", "errorCode": None,
         "user": {"name": "mallory"}, "cloud": {"region": 1}, "error": "x"},
        {"eventID": "ecs-service", "sourceIPAddress": "ec2.amazonaws.com", "errorCode": None},
    ]
    events = []
    for variant in variants:
        event = copy.deepcopy(base)
        event.update(variant)
        events.append({k: v for k, v in event.items() if v is not None})
    return events


def load(moto_url, processor, key, events):
    processor.source, bucket = moto_source(
        moto_url, {key: gzip.compress(json.dumps({"Records": events}).encode())})
    return processor.process_file(bucket, key, time.monotonic() + 120)


def test_events_with_top_level_ecs_names_are_indexed_whole(opensearch_url, moto_url, index_prefix):
    events = collision_events()
    processor = create_processor(Settings(es_url=opensearch_url, auth="none",
                                          index_prefix=index_prefix, index_replicas=0),
                                 s3_client=object())
    result = load(moto_url, processor, KEY, events)
    assert (result.indexed, result.degraded, result.dead_lettered) == (len(events), 0, 0)
    refresh(opensearch_url, index_prefix)
    cluster = (opensearch_url, f"{index_prefix}-*")

    def ids(query):
        response = requests.post(f"{opensearch_url}/{index_prefix}-*/_search", timeout=60,
                                 json={"query": query, "size": 100, "_source": False})
        assert response.status_code == 200, response.text
        return {hit["_id"] for hit in response.json()["hits"]["hits"]}

    assert ids({"term": {"source.ip": "2001:db8::/32"}}) == {"ecs-collisions-0001", "ecs-v6"}
    assert ids({"term": {"source.ip": "198.51.100.0/24"}}) == {"ecs-mapped"}
    assert ids({"term": {"event.outcome": "failure"}}) == {"ecs-collisions-0001"}
    assert ids({"term": {"user.name": "bob"}}) == {e["eventID"] for e in events}
    # The events' own values stay searchable under their escaped names.
    scalar = "a top-level scalar where ECS keeps an object"
    assert ids({"term": {"%65vent": scalar}}) == {
        e["eventID"] for e in events if e.get("event") == scalar}
    assert ids({"term": {"%75ser": "eve"}}) == {e["eventID"] for e in events if e["user"] == "eve"}
    assert ids({"term": {"%65vent_flattened.outcome": "hostile"}}) == {"ecs-v6"}
    assert ids({"term": {"%75ser_flattened.name": "mallory"}}) == {"ecs-mapped"}
    assert count(cluster, {"term": {"event.outcome": "hostile"}}) == 0


# --------------------------------------------------------------------------------------
# An index made before this version.
# --------------------------------------------------------------------------------------


def old_index_body() -> dict[str, Any]:
    """The body of an index made before the ECS fields (and the exact copies) existed."""
    body = indexes.index_body(1, 0)
    properties = body["mappings"]["properties"]
    for name in indexes.added_properties():
        del properties[name]
    properties["errorMessage"] = indexes.TEXT
    properties["requestID"] = {"type": "keyword", "index": False, "doc_values": False}
    return body


def previous_index_body() -> dict[str, Any]:
    """The body of an index made by the version before this one: user.name and
    cloud.account.id were aliases, event.outcome and source.ip the only real ECS fields."""
    body = old_index_body()
    body["mappings"]["properties"].update({
        "user": {"properties": {"name": {"type": "alias", "path": "userIdentity.userName"},
                                "id": {"type": "alias", "path": "userIdentity.principalId"}}},
        "cloud": {"properties": {"account": {"properties": {
            "id": {"type": "alias", "path": "recipientAccountId"}}},
            "region": {"type": "alias", "path": "awsRegion"}}},
        "event": {"properties": {"outcome": indexes.KEYWORD,
                                 "action": {"type": "alias", "path": "eventName"}}},
        "source": {"properties": {"ip": {"type": "ip"}}}})
    return body


def test_an_index_of_the_previous_version_gets_all_but_the_two_former_aliases(
        opensearch_url, moto_url, index_prefix, caplog):
    index = f"{index_prefix}-2024-02"
    assert requests.put(f"{opensearch_url}/{index}", json=previous_index_body(),
                        timeout=60).status_code == 200
    processor = create_processor(Settings(es_url=opensearch_url, auth="none",
                                          index_prefix=index_prefix, index_replicas=0),
                                 s3_client=object())
    with caplog.at_level(logging.WARNING, logger="cloudtrail_es.write.indexes"):
        result = load(moto_url, processor, KEY, collision_events())
    assert (result.indexed, result.degraded, result.dead_lettered) == (4, 0, 0)
    [warning] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert warning.levelno == logging.WARNING and warning.fields == ["cloud.account.id", "user.name"]
    refresh(opensearch_url, index_prefix)
    cluster = (opensearch_url, index)
    # The aliases still answer; every other new field is there for the new documents.
    assert count(cluster, {"term": {"user.name": "bob"}}) == 4
    assert count(cluster, {"term": {"cloud.account.id": "111122223333"}}) == 4
    assert count(cluster, {"exists": {"field": "event.ingested"}}) == 4
    assert count(cluster, {"exists": {"field": "related.user"}}) == 4
    assert count(cluster, {"term": {"event.category": "configuration"}}) == 4
    assert count(cluster, {"term": {"errorMessage.keyword": "Access Denied"}}) == 4
    source = requests.get(f"{opensearch_url}/{index}/_doc/ecs-v6", timeout=60).json()["_source"]
    assert "cloud" not in source and "name" not in source.get("user", {})


def old_document(event: dict[str, Any]) -> dict[str, Any]:
    document = transform.document_for(event)
    for root in ecs.ROOTS:
        document.pop(root, None)
    return document


def test_an_index_made_before_the_ecs_fields_gets_them_when_first_touched(
        opensearch_url, moto_url, index_prefix, caplog):
    index = f"{index_prefix}-2024-02"
    assert requests.put(f"{opensearch_url}/{index}", json=old_index_body(),
                        timeout=60).status_code == 200
    old_event = {**collision_events()[1], "eventID": "written-before", "eventName": "OldCall"}
    assert requests.put(f"{opensearch_url}/{index}/_doc/written-before", timeout=60,
                        json=old_document(old_event)).status_code == 201
    mapped = requests.get(f"{opensearch_url}/{index}/_mapping", timeout=60).json()
    assert "event" not in mapped[index]["mappings"]["properties"]

    with FaultProxy(opensearch_url) as proxy:
        processor = create_processor(Settings(es_url=proxy.url, auth="none",
                                              index_prefix=index_prefix, index_replicas=0),
                                     s3_client=object())
        with caplog.at_level(logging.ERROR):
            first = load(moto_url, processor, KEY, collision_events()[:2])
            second = load(moto_url, processor, KEY.replace("Collide000001", "Collide000002"),
                          collision_events()[2:])
        updates = [r for r in proxy.requests if r.method == "PUT" and r.path.endswith("/_mapping")]
    # The ECS fields ride in the first chunk's one mapping update (with the fields it brings);
    # the second chunk's update declares only the fields it brings: one update per chunk at most.
    assert {r.path for r in updates} == {f"/{index}/_mapping"}
    assert len(updates) <= 2
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert (first.indexed + second.indexed, first.degraded + second.degraded) == (4, 0)

    properties = requests.get(f"{opensearch_url}/{index}/_mapping", timeout=60).json()[
        index]["mappings"]["properties"]
    for name, path in ecs.ALIASES.items():
        field = properties
        *parents, leaf = name.split(".")
        for parent in parents:
            field = field[parent]["properties"]
        assert field[leaf] == {"type": "alias", "path": path}
    assert properties["source"]["properties"]["ip"] == {"type": "ip"}
    assert properties["insightDetails"]["properties"]["insightType"]["type"] == "keyword"

    refresh(opensearch_url, index_prefix)
    cluster = (opensearch_url, index)
    # Aliases read the old documents too; the typed fields fill for new documents only.
    assert count(cluster, {"term": {"event.action": "OldCall"}}) == 1
    assert count(cluster, {"range": {"@timestamp": {"gte": "2024-02-01T00:00:00Z"}}}) == 5
    assert count(cluster, {"exists": {"field": "event.outcome"}}) == 4
    assert count(cluster, {"term": {"source.ip": "2001:db8::/32"}}) == 2

    # Another process touches the index again: the update is a no-op, no error.
    with caplog.at_level(logging.ERROR):
        again = create_processor(Settings(es_url=opensearch_url, auth="none",
                                          index_prefix=index_prefix, index_replicas=0),
                                 s3_client=object())
        assert load(moto_url, again, KEY, collision_events()[:1]).indexed == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_an_old_index_that_refuses_the_ecs_fields_still_loads_and_says_why(
        opensearch_url, moto_url, index_prefix, caplog):
    """An earlier version indexed a top-level scalar "user": the alias cannot be added."""
    index = f"{index_prefix}-2024-02"
    body = old_index_body()
    body["mappings"]["properties"]["user"] = indexes.KEYWORD
    assert requests.put(f"{opensearch_url}/{index}", json=body, timeout=60).status_code == 200
    processor = create_processor(Settings(es_url=opensearch_url, auth="none",
                                          index_prefix=index_prefix, index_replicas=0),
                                 s3_client=object())
    with caplog.at_level(logging.ERROR, logger="cloudtrail_es.write.indexes"):
        result = load(moto_url, processor, KEY, collision_events())
    assert (result.indexed, result.degraded, result.dead_lettered) == (4, 0, 0)
    [error] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert error.index == index and "user" in error.error


# --------------------------------------------------------------------------------------
# The same on other engines, each a real server (test_engines.py starts them the same way).
# --------------------------------------------------------------------------------------

#: Engines the ECS checks also run on (space-separated; empty runs none), and their port.
ECS_ENGINES = os.environ.get("ECS_ENGINE_MATRIX", "elasticsearch-8.19.0").split()
ECS_ENGINE_PORT = int(os.environ.get("ECS_ENGINE_PORT", "9360"))


@pytest.fixture(scope="module", params=ECS_ENGINES)
def engine_url(request):
    """Started once for the module: both trails load into the same server."""
    engine = request.param
    services("start", ECS_ENGINE_PORT, timeout=900, ENGINE=engine)
    yield engine, f"http://127.0.0.1:{ECS_ENGINE_PORT}"
    services("stop", ECS_ENGINE_PORT, ENGINE=engine)


def test_ecs_names_on_another_engine(engine_url, corpus_dir, corpus_files, events):
    engine, url = engine_url
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    detected = detect(create_cluster(Settings(es_url=url, auth="none")))
    assert engine.startswith(detected.distribution)
    # An index made by an earlier version, before the trail lands in it (the month of the
    # trail's first file): the loader adds the ECS fields when it first touches it.
    old = index_name_for(corpus_files[0][0], prefix)
    assert requests.put(f"{url}/{old}", json=detected.index_body(old_index_body()),
                        timeout=60).status_code == 200
    try:
        started = datetime.now(timezone.utc).isoformat()
        load_corpus(url, prefix, corpus_dir, events)
        cluster = (url, f"{prefix}-*")
        check_aliases(cluster, events)
        check_typed_fields(cluster, events)
        check_real_fields(cluster, events, started, datetime.now(timezone.utc).isoformat())
        mapping = requests.get(f"{url}/{old}/_mapping", timeout=60).json()[old]["mappings"]
        properties = mapping.get(detected.doc_type, mapping)["properties"]
        assert properties["event"]["properties"]["action"] == {"type": "alias", "path": "eventName"}
        assert properties["source"]["properties"]["ip"] == {"type": "ip"}
    finally:
        requests.delete(f"{url}/{prefix}-*", timeout=120)
