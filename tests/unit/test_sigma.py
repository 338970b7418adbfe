"""The Sigma field mapping and the engine adaptation of queries (pure code)."""
from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudtrail_es.detections import detect
from cloudtrail_es.detections import sigma
from cloudtrail_es.write.engine import Engine
from cloudtrail_es.aws.notifications import DetectionRequest, RetentionRequest, parse_invocation


@pytest.mark.parametrize(("rule_field", "expected"), [
    ("eventName", "eventName"),
    ("userIdentity.type", "userIdentity.type"),
    ("userIdentity.sessionContext.attributes.mfaAuthenticated",
     "userIdentity.sessionContext.attributes.mfaAuthenticated"),
    ("userIdentity.sessionContext.webIdFederationData.attributes.aud",
     "userIdentity_flattened.aud"),
    ("requestParameters", "requestParameters_raw"),
    ("requestParameters.ipPermissions.items.ipRanges.items.cidrIp", "requestParameters_flattened.cidrIp"),
    ("additionalEventData.MFAUsed", "additionalEventData_flattened.MFAUsed"),
    ("resources.ARN", "resources_flattened.ARN"),
    ("requestParameters_flattened.a%2Eb", "requestParameters_flattened.a%2Eb"),
    ("someNewScalar", "someNewScalar"),
])
def test_field_for(rule_field, expected):
    assert sigma.field_for(rule_field) == expected


def test_whole_unindexed_section_is_not_convertible():
    with pytest.raises(sigma.NotConvertible, match="someNewSection as a whole"):
        sigma.string_query("someNewSection_raw", sigma.SigmaString("x*"))
    assert sigma.string_query("additionalEventData_raw", sigma.SigmaString("x*")) == {
        "prefix": {"additionalEventData_raw.keyword": {"value": "x", "case_insensitive": True}}}


OLD = Engine("elasticsearch", (7, 9, 3))


@pytest.mark.parametrize("engine", [Engine("opensearch", (1, 3, 20)), Engine("elasticsearch", (7, 10, 2)),
                                    Engine("serverless")])
def test_queries_kept_where_case_insensitive_is_known(engine):
    query = {"term": {"eventName": {"value": "StopLogging", "case_insensitive": True}}}
    assert detect.for_engine(query, engine) is query


@settings(max_examples=60)
@given(st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12),
       st.sampled_from(["term", "prefix"]))
def test_case_folded_regexp_matches_as_case_insensitive_term(value, kind):
    query = detect.for_engine({kind: {"f": {"value": value, "case_insensitive": True}}}, OLD)
    regexp = query["regexp"]["f"]["value"]
    # Lucene's syntax for what we emit (classes, escapes, .*) is Python's too.
    pattern = re.compile(regexp, re.DOTALL)
    assert pattern.fullmatch(value)
    if all(len(c.swapcase()) == 1 and c.swapcase().swapcase() == c for c in value):
        assert pattern.fullmatch(value.swapcase())
    assert bool(pattern.fullmatch(value + "tail")) == (kind == "prefix")


def test_wildcards_become_regexp_and_nested_bools_are_rewritten():
    query = {"bool": {"filter": [
        {"wildcard": {"f": {"value": "*0.0.0.0/0?\\*", "case_insensitive": True}}},
        {"term": {"g": {"value": "Exact"}}}]}}
    rewritten = detect.for_engine(query, OLD)
    regexp = rewritten["bool"]["filter"][0]["regexp"]["f"]["value"]
    assert re.fullmatch(regexp, 'x"0.0.0.0/0!*')
    assert not re.fullmatch(regexp, "x0.0.0.0/0!!")
    assert rewritten["bool"]["filter"][1] == {"term": {"g": {"value": "Exact"}}}
    with pytest.raises(detect.EngineUnsupported):
        detect.for_engine({"regexp": {"f": {"value": "a.*", "case_insensitive": True}}}, OLD)


def test_detection_event_is_its_own_kind():
    assert isinstance(parse_invocation({"cloudtrail_es": "detect"}), DetectionRequest)
    assert isinstance(parse_invocation({"cloudtrail_es": "retention"}), RetentionRequest)


def test_finding_id_is_one_per_rule_and_event():
    assert detect.finding_id("r", "e") == detect.finding_id("r", "e")
    assert len({detect.finding_id("r", "e"), detect.finding_id("r2", "e"),
                detect.finding_id("r", "e2")}) == 3


def test_starter_rules_all_convert():
    conversion = sigma.convert_paths([sigma.Path(__file__).resolve().parents[2] / "rules"])
    assert conversion.skipped == [] and len(conversion.rules) >= 15
    assert len({rule["id"] for rule in conversion.rules}) == len(conversion.rules)
