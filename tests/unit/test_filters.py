"""Exclusion rules: parsing (bad rules named), matching (fnmatch semantics on JSON spellings)."""
from __future__ import annotations

import fnmatch
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudtrail_es.core.config import Settings
from cloudtrail_es.core.errors import ConfigurationError
from cloudtrail_es.core.filters import BadFilterRule, parse_rule, parse_rules

EC2_DESCRIBE = {"eventSource": "ec2.amazonaws.com", "eventName": "DescribeInstances",
                "readOnly": True, "userIdentity": {"type": "IAMUser", "userName": "alice"}}
KMS_DECRYPT = {"eventSource": "kms.amazonaws.com", "eventName": "Decrypt", "readOnly": True,
               "userIdentity": {"type": "AWSService", "invokedBy": "s3.amazonaws.com"}}
ISSUE_EXAMPLE = "readOnly=true,eventSource=ec2.amazonaws.com;eventName=Decrypt,userIdentity.type=AWSService"


def test_the_issue_example():
    rules = parse_rules(ISSUE_EXAMPLE)
    assert [rule.text for rule in rules.rules] == [
        "readOnly=true,eventSource=ec2.amazonaws.com", "eventName=Decrypt,userIdentity.type=AWSService"]
    assert rules.excluding(EC2_DESCRIBE) is rules.rules[0]
    assert rules.excluding(KMS_DECRYPT) is rules.rules[1]
    assert not rules.excludes({**EC2_DESCRIBE, "readOnly": False})
    assert not rules.excludes({**KMS_DECRYPT, "userIdentity": {"type": "AssumedRole"}})


@pytest.mark.parametrize(("rule", "event", "excluded"), [
    ("readOnly=true", {"readOnly": True}, True),
    ("readOnly=true", {"readOnly": "true"}, True),
    ("readOnly=true", {"readOnly": False}, False),
    ("readOnly=false", {"readOnly": False}, True),
    ("readOnly=True", {"readOnly": True}, False),            # case-sensitive, like the index
    ("eventName=Describe*", {"eventName": "DescribeInstances"}, True),
    ("eventName=describe*", {"eventName": "DescribeInstances"}, False),
    ("eventName=Get*", {"eventName": "ListBuckets"}, False),
    ("eventName=?et*", {"eventName": "GetObject"}, True),
    ("eventName=[GL]*", {"eventName": "ListBuckets"}, True),
    ("eventName=[!GL]*", {"eventName": "ListBuckets"}, False),
    ("errorCode=*", {"eventName": "X"}, False),              # missing never matches
    ("errorCode=*", {"errorCode": None}, False),             # nor does null
    ("errorCode=*", {"errorCode": "AccessDenied"}, True),
    ("requestParameters=*", {"requestParameters": {"a": 1}}, False),  # nor an object
    ("resources=*", {"resources": [{"ARN": "x"}]}, False),   # nor an array
    ("userIdentity.type=AWSService", {"userIdentity": {"type": "AWSService"}}, True),
    ("userIdentity.type=AWSService", {"userIdentity": "AWSService"}, False),
    ("userIdentity.type=AWSService", {"userIdentity.type": "AWSService"}, False),
    ("userIdentity.sessionContext.sessionIssuer.userName=ops-*",
     {"userIdentity": {"sessionContext": {"sessionIssuer": {"userName": "ops-admin"}}}}, True),
    ("requestParameters.maxResults=1000", {"requestParameters": {"maxResults": 1000}}, True),
    ("requestParameters.ratio=1.5", {"requestParameters": {"ratio": 1.5}}, True),
    ("eventName=Decrypt, userIdentity.type = AWSService ", KMS_DECRYPT, True),  # spaces trimmed
    ("sourceIPAddress=a=b", {"sourceIPAddress": "a=b"}, True),  # split on the first '=' only
    ("eventName=Decrypt,eventName=Encrypt", {"eventName": "Decrypt"}, False),  # all must match
])
def test_matching(rule, event, excluded):
    assert parse_rules(rule).excludes(event) is excluded


@pytest.mark.parametrize(("text", "problem"), [
    ("eventName", "is not FIELD=PATTERN"),
    ("=Decrypt", "names no field"),
    ("eventName=", "empty pattern"),
    ("userIdentity..type=x", "empty path segment"),
    (".type=x", "empty path segment"),
    ("eventName=Decrypt,", "is not FIELD=PATTERN"),
    ("eventName=Decrypt,,readOnly=true", "is not FIELD=PATTERN"),
])
def test_a_bad_rule_is_a_configuration_error_naming_it(text, problem):
    with pytest.raises(BadFilterRule) as caught:
        parse_rules(f"readOnly=true;{text}")
    assert isinstance(caught.value, ConfigurationError)
    assert repr(text.strip()) in str(caught.value) and problem in str(caught.value)


def test_blank_rules_are_ignored():
    assert not parse_rules("")
    assert not parse_rules(" ; ;")
    assert len(parse_rules(["eventName=A;", ";eventName=B", "eventName=C"]).rules) == 3
    with pytest.raises(BadFilterRule):
        parse_rule("  ")


def test_settings_read_and_check_exclude_events():
    env = {"ES_HOSTNAME": "http://127.0.0.1:9200", "ES_AUTH": "none"}
    assert Settings.from_env(env).exclude_events == ()
    settings = Settings.from_env({**env, "EXCLUDE_EVENTS": ISSUE_EXAMPLE + ";"})
    assert settings.exclude_events == ("readOnly=true,eventSource=ec2.amazonaws.com",
                                       "eventName=Decrypt,userIdentity.type=AWSService")
    with pytest.raises(ConfigurationError, match="'eventName=Decrypt,oops'"):
        Settings.from_env({**env, "EXCLUDE_EVENTS": "readOnly=true;eventName=Decrypt,oops"})


# --- properties: the rules agree with fnmatch.fnmatchcase on JSON spellings -----------------

names = st.text(st.characters(codec="ascii", categories=("L", "N")), min_size=1, max_size=8)
values = st.one_of(st.text(st.characters(codec="ascii", exclude_characters=",;"), max_size=12),
                   st.booleans(), st.integers(-10**6, 10**6))
pattern_pieces = st.lists(st.one_of(
    st.sampled_from(["*", "?", "[a-m]", "[!a-m]", "Get", "true", "1", "-"]),
    st.text(st.characters(codec="ascii", categories=("L", "N")), min_size=1, max_size=3)),
    min_size=1, max_size=5).map("".join)


def _spelling(value):
    return value if isinstance(value, str) else json.dumps(value)


@settings(max_examples=200)
@given(field=names, value=values, pattern=pattern_pieces)
def test_a_condition_is_fnmatchcase_of_the_json_spelling(field, value, pattern):
    rule = parse_rules(f"{field}={pattern}")
    expected = fnmatch.fnmatchcase(_spelling(value), pattern)
    assert rule.excludes({field: value}) is expected
    assert not rule.excludes({field + "x": value})            # another field: missing
    assert rule.excludes({"outer": {field: value}}) is False   # not at the top level


@settings(max_examples=100)
@given(event=st.dictionaries(names, values, max_size=5),
       conditions=st.lists(st.tuples(names, pattern_pieces), min_size=1, max_size=4),
       more=st.lists(st.lists(st.tuples(names, pattern_pieces), min_size=1, max_size=3), max_size=3))
def test_a_rule_needs_every_condition_and_any_rule_excludes(event, conditions, more):
    rules = [conditions, *more]
    text = ";".join(",".join(f"{f}={p}" for f, p in rule) for rule in rules)
    parsed = parse_rules(text)

    def fits(field, pattern):
        return field in event and fnmatch.fnmatchcase(_spelling(event[field]), pattern)

    expected = [all(fits(f, p) for f, p in rule) for rule in rules]
    assert parsed.excludes(event) is any(expected)
    matched = parsed.excluding(event)
    assert (matched is None) if not any(expected) else (matched is parsed.rules[expected.index(True)])
