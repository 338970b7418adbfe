"""Sigma conversions against the real cluster: generated rules (random modifiers, values with
regular-expression metacharacters, quotes, unicode, long lists) over generated events loaded
by the real write path, each rule's hits compared with an independent Python reading of the
rule over the raw events (``tests/sigma_reference.py``); and the cases the conversion used to
get wrong, one by one.
"""
from __future__ import annotations

import random
import re
import time
import uuid
from typing import Any

import pytest
import requests
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import sigma_reference
from cloudtrail_es.core.config import Settings
from cloudtrail_es.detections import fieldref, sigma
from cloudtrail_es.write.processor import create_processor

pytestmark = pytest.mark.integration

NAMES = ["DeleteBucketPolicy", "PutBucketPolicy", "ConsoleLogin", "Delete", "Policy", "CreateUser",
         "AttachUserPolicy", "deleteGROUP", "Get*Thing?", "a.b+c", "x|y", "(paren)", "[br]",
         "{curly}", 'quote"d', "back\\slash", "caret^dollar$", "ünïcödé", "中文名", "emoji😀x",
         "two words", "StopLogging"]
MESSAGES = ["Failed authentication", 'Access Denied: user "bob" is not authorized',
            "Rate exceeded (retry later)", "Élan vital", "No such key: a*b?c", "ok",
            "multi\nline message", "path C:\\temp\\x"]
AGENTS = ["aws-cli/1.12.3 Python/3.8", "aws-cli/2.0.1 Python/3.11", 'Boto3/1.20 "quoted"',
          "console.amazonaws.com", "S3Browser/9.5.5 https://s3browser.com", "Mozilla/5.0 (X11)",
          "curl/7.88 中"]
ADDRESSES = ["10.1.2.3", "10.200.0.1", "192.0.2.44", "192.0.2.200", "203.0.113.7", "2001:db8::1",
             "2001:db8:0:0::a", "ec2.amazonaws.com", "AWS Internal", "198.51.100.9"]
USERS = ["alice", "Bob", "carol.smith@example.com", "dave'o", "ÉMILE", "admin*"]
TYPES = ["IAMUser", "AssumedRole", "Root", "AWSService"]
POOLS = {"eventName": NAMES, "errorMessage": MESSAGES, "userAgent": AGENTS,
         "sourceIPAddress": ADDRESSES, "userIdentity.userName": USERS,
         "userIdentity.type": TYPES, "requestParameters.userName": USERS,
         "requestParameters.bucketName": NAMES, "additionalEventData.MFAUsed": ["Yes", "No"],
         "requestID": ["REQ-1", "req-2", "a b", 'q"r']}
EVENT_COUNT = 300


def generated_events(seed: int = 21) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    events = []
    for n in range(EVENT_COUNT):
        event: dict[str, Any] = {"eventVersion": "1.08", "eventID": f"gen-{n:04d}",
                                 "eventTime": f"2024-01-{1 + n % 28:02d}T10:00:00Z",
                                 "eventSource": rng.choice(["iam.amazonaws.com", "s3.amazonaws.com",
                                                            "signin.amazonaws.com"])}
        for path, pool in POOLS.items():
            if rng.random() < 0.8:
                *parents, leaf = path.split(".")
                level = event
                for parent in parents:
                    level = level.setdefault(parent, {})
                level[leaf] = rng.choice(pool)
        if rng.random() < 0.2 and "requestParameters" in event:
            event["requestParameters"]["policy"] = {"Statement": [{"Principal": rng.choice(
                ["*", {"AWS": "*"}, "arn:aws:iam::1:root"]), "Effect": "Allow"}]}
        events.append(event)
    return events


EVENTS = generated_events()


@pytest.fixture(scope="module")
def index(opensearch_url):
    """The generated events, written by the real write path into one monthly index."""
    prefix = f"test-sigmagen-{uuid.uuid4().hex[:8]}"
    name = f"{prefix}-2024-01"
    processor = create_processor(Settings(es_url=opensearch_url, auth="none", index_prefix=prefix,
                                          index_replicas=0), s3_client=object())
    result = processor.load_events(name, EVENTS, time.monotonic() + 120)
    assert (result.indexed, result.degraded, result.undeliverable) == (EVENT_COUNT, 0, [])
    requests.post(f"{opensearch_url}/{name}/_refresh", timeout=60).raise_for_status()
    yield opensearch_url, name
    requests.delete(f"{opensearch_url}/{name}", timeout=60)


def found(index: tuple[str, str], rule: dict[str, Any]) -> set[str]:
    url, name = index
    response = requests.post(f"{url}/{name}/_search", timeout=60, json={
        "size": 1000, "_source": fieldref.source_fields(rule) or False, "query": rule["query"]})
    assert response.status_code == 200, (response.text[:2000], rule["query"])
    return {hit["_id"] for hit in response.json()["hits"]["hits"]
            if fieldref.matches(rule, hit.get("_source", {}))}


def expected(rule_yaml: dict[str, Any]) -> set[str]:
    return {e["eventID"] for e in EVENTS if sigma_reference.matches(rule_yaml, e)}


def convert(rule_yaml: dict[str, Any], tmp_path) -> sigma.Conversion:
    path = tmp_path / f"{uuid.uuid4().hex}.yml"
    path.write_text(yaml.safe_dump(rule_yaml, allow_unicode=True), encoding="utf-8")
    return sigma.convert_paths([path])


def rule_of(detection: dict[str, Any]) -> dict[str, Any]:
    return {"title": "generated", "logsource": {"product": "aws", "service": "cloudtrail"},
            "detection": detection}


# -- Generated rules --------------------------------------------------------------------------

FIELDS = list(POOLS) + ["requestParameters"]
STRING_MODIFIERS = ["", "|contains", "|startswith", "|endswith", "|cased", "|contains|cased",
                    "|contains|all", "|startswith|cased"]
METACHARS = ".*?+|()[]{}^$\\\"'/#@&<>~ -"
ALPHABET = st.sampled_from(list("abcxyzABC019") + list(METACHARS) + list("éÉ中😀"))


ALL_VALUES = sorted({v for vs in POOLS.values() for v in vs})
#: What a rule's value is cut from: mostly the field's own values, so that a rule finds some
#: events and not all (a rule that finds none, or all, checks little).
FIELD_VALUES = {field: sorted(set(pool)) for field, pool in POOLS.items()} | {
    "requestParameters": sorted({*USERS, *NAMES, "Principal", '"AWS":"*"', "Allow"})}


@st.composite
def pieces(draw: Any, field: str | None = None) -> str:
    """Part of a value: a slice of a real value of the field (or of any field: so rules hit),
    or random characters."""
    choice = draw(st.integers(0, 5))
    if choice:
        pool = FIELD_VALUES.get(field or "", ALL_VALUES) if choice > 1 else ALL_VALUES
        value = draw(st.sampled_from(pool))
        start = draw(st.integers(0, len(value)))
        return value[start:draw(st.integers(start, len(value)))] or value
    return draw(st.text(ALPHABET, min_size=1, max_size=6))


@st.composite
def regexes(draw: Any, field: str) -> str:
    def atom() -> str:
        kind = draw(st.sampled_from(["text", "text", "dot", "star", "class", "digits", "word",
                                     "space", "group"]))
        if kind == "text":
            return re.escape(draw(pieces(field)))
        return {"dot": ".", "star": ".*", "class": "[a-e]", "digits": r"\d+", "word": r"\w",
                "space": r"\s",
                "group": f"({re.escape(draw(pieces(field)))}|{re.escape(draw(pieces(field)))})"
                }[kind]

    def alternative() -> str:
        body = "".join(atom() for _ in range(draw(st.integers(1, 3))))
        return ("^" if draw(st.booleans()) else "") + body + ("$" if draw(st.booleans()) else "")

    pattern = "|".join(alternative() for _ in range(draw(st.integers(1, 3))))
    return ("(?i)" if draw(st.integers(0, 4)) == 0 else "") + pattern


@st.composite
def items(draw: Any) -> tuple[str, Any]:
    field = draw(st.sampled_from(FIELDS))
    kind = draw(st.sampled_from(["string", "string", "string", "re", "exists", "cidr"]))
    if kind == "re":
        return f"{field}|re" + ("|i" if draw(st.booleans()) else ""), draw(regexes(field))
    if kind == "exists":
        return f"{field}|exists", draw(st.booleans())
    if kind == "cidr" and field == "sourceIPAddress":
        networks = ["10.0.0.0/8", "192.0.2.0/25", "192.0.2.128/25", "2001:db8::/32",
                    "203.0.113.0/24", "198.51.100.0/30"]
        return "sourceIPAddress|cidr", draw(st.lists(st.sampled_from(networks), min_size=1,
                                                     max_size=6, unique=True))
    modifier = draw(st.sampled_from(STRING_MODIFIERS))
    if field == "requestParameters" and modifier in ("", "|cased"):
        modifier = "|contains"
    longest = 2 if "|all" in modifier else draw(st.sampled_from([1, 3, 40]))
    values = draw(st.lists(pieces(field), min_size=1, max_size=longest))
    return field + modifier, values if len(values) > 1 else values[0]


@st.composite
def rules(draw: Any) -> dict[str, Any]:
    selections = {f"sel{n}": dict(draw(st.lists(items(), min_size=1, max_size=2,
                                                unique_by=lambda item: item[0])))
                  for n in range(1, draw(st.integers(1, 3)) + 1)}
    condition = draw(st.sampled_from(["sel1", "1 of sel*", "1 of sel*", "all of sel*",
                                      "sel1 and not sel2", "not sel1", "(sel1 or sel2) and not sel3"]))
    for name in re.findall(r"sel\d", condition):
        selections.setdefault(name, dict([draw(items())]))
    if condition in ("sel1", "all of sel*", "sel1 and not sel2") and draw(st.integers(0, 5)) == 0:
        selections["sel1"]["userIdentity.userName|fieldref"] = "requestParameters.userName"
    return rule_of({**selections, "condition": condition})


@settings(max_examples=int(__import__("os").environ.get("SIGMA_EXAMPLES", "200")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rule=rules())
def test_generated_rules_find_what_an_independent_reading_finds(index, rule, tmp_path_factory):
    conversion = convert(rule, tmp_path_factory.mktemp("rule"))
    if conversion.skipped:  # refused: only for what Lucene cannot say, with that reason
        [skipped] = conversion.skipped
        event("refused")
        assert "Lucene" in skipped["reason"] or "max_regex_length" in skipped["reason"], skipped
        return
    [converted] = conversion.rules
    wanted = expected(rule)
    event("no event matches" if not wanted else "every event matches" if len(wanted) == EVENT_COUNT
          else "some events match")
    assert found(index, converted) == wanted


# -- The cases that used to go wrong ------------------------------------------------------------

def only(conversion: sigma.Conversion) -> dict[str, Any]:
    assert conversion.skipped == []
    [rule] = conversion.rules
    return rule


@pytest.mark.parametrize("detection", [
    {"sel": {"eventName|re": "^Delete|Policy$"}, "condition": "sel"},
    {"sel": {"errorMessage": "Failed authentication"}, "condition": "sel"},
    {"sel": {"errorMessage|contains": 'user "bob"'}, "condition": "sel"},
    {"sel": {"requestParameters|re": '"Principal":"\\*"'}, "condition": "sel"},
    {"sel": {"requestParameters|contains": '"AWS":"*"'}, "condition": "sel"},
    {"sel": {"eventName|re": "(?i)^deletegroup$"}, "condition": "sel"},
    {"sel": {"eventName|re|i": "^DELETE"}, "condition": "sel"},
    {"sel": {"userAgent|re": "aws-cli/[12]\\.\\d+\\.\\d+ Python"}, "condition": "sel"},
    {"sel": {"errorMessage|re|m": "^line"}, "condition": "sel"},
    {"sel": {"requestID": ["REQ-1", 'q"r']}, "condition": "sel"},
    {"sel": {"sourceIPAddress|cidr": [f"192.0.2.{n * 128}/25" for n in range(2)] + [
        f"10.{n}.0.0/25" for n in range(7)]}, "condition": "sel"},
    {"sel": {"userIdentity.userName|fieldref": "requestParameters.userName"}, "condition": "sel"},
    {"sel": {"userIdentity.userName|fieldref": "requestParameters.userName"},
     "ours": {"eventName|contains": "policy"}, "condition": "sel and not ours"},
])
def test_conversions_that_used_to_match_nothing_or_fail(index, tmp_path, detection):
    rule = rule_of(detection)
    converted = only(convert(rule, tmp_path))
    wanted = expected(rule)
    assert wanted, "the case has something to find"
    assert found(index, converted) == wanted


@pytest.mark.parametrize(("detection", "reason"), [
    ({"sel": {"eventName|re": "Delete(?=Bucket)"}, "condition": "sel"}, "lookahead"),
    ({"sel": {"eventName|re": "(?<!Put)Policy"}, "condition": "sel"}, "lookbehind"),
    ({"sel": {"eventName|re": "\\bDelete"}, "condition": "sel"}, "word boundary"),
    ({"sel": {"eventName|re": "(a)\\1"}, "condition": "sel"}, "backreference"),
    ({"sel": {"eventTime|startswith": "2024-01"}, "condition": "sel"}, "eventTime is a date"),
    ({"sel": {"eventTime|re": "^2024"}, "condition": "sel"}, "eventTime is a date"),
    ({"sel": {"userIdentity.userName|fieldref": "requestParameters.userName"},
      "other": {"eventName": "x"}, "condition": "sel or other"}, "under 'or' or 'not'"),
    ({"sel": ["just", "keywords"], "condition": "sel"}, "keyword search"),
    ({"sel": {"sourceIPAddress|expand": "%trusted_ranges%"}, "condition": "not sel"},
     "placeholder"),
])
def test_what_the_engine_cannot_say_is_refused_with_the_reason(tmp_path, detection, reason):
    conversion = convert(rule_of(detection), tmp_path)
    assert conversion.rules == []
    [skipped] = conversion.skipped
    assert reason in skipped["reason"] and skipped["id"].startswith("noid-")
