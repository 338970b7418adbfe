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


@pytest.mark.parametrize("query", [
    {"term": {"eventName": "StopLogging"}},  # the short form: no options, so case-sensitive
    {"prefix": {"eventName": "Stop"}},
    {"term": {"a": {"value": "x"}, "b": {"value": "y"}}},  # not a query the engine takes, kept
    {"wildcard": "*"},
])
def test_short_and_odd_forms_are_kept_as_they_are(query):
    rewritten = detect.for_engine({"bool": {"filter": [query]}}, OLD)
    assert rewritten == {"bool": {"filter": [query]}}


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


# -- Regular expressions in Lucene's dialect ---------------------------------------------------

from cloudtrail_es.detections import fieldref, lucene_regex  # noqa: E402

#: What we emit (escapes, classes, groups, quantifiers, |) reads the same in Python's syntax,
#: so Python can stand in for Lucene's whole-value match here; the integration suite runs
#: the same translations on the real cluster.
SUBJECT = st.text(st.sampled_from(list("abAB01 _-.\n\"é")), max_size=8)


@st.composite
def patterns(draw):
    atoms = st.sampled_from(["a", "B", "0", "\\.", ".", ".*", "[a-b]", "[^a]", "\\d", "\\w+",
                             "\\s", "(a|b)", "é", '"', "x?", "a{1,2}", "(?i:ab)", "-",
                             # alternatives sharing a start, which Python's parser moves out
                             "(ab|a)", "(\\(a|\\()", "(a|a)", "(a|)", "()", "()*"])
    def alternative():
        body = "".join(draw(st.lists(atoms, min_size=1, max_size=3)))
        return ("^" if draw(st.booleans()) else "") + body + ("$" if draw(st.booleans()) else "")
    flags = draw(st.sampled_from(["", "(?i)", "(?s)", "(?m)"]))
    return flags + "|".join(alternative() for _ in range(draw(st.integers(1, 3))))


@settings(max_examples=400)
@given(patterns(), SUBJECT)
def test_translated_regex_matches_the_whole_value_where_the_original_searches_it(pattern, subject):
    translated = lucene_regex.translate(pattern)
    flags = re.DOTALL | re.ASCII | (re.IGNORECASE if translated.case_insensitive else 0)
    assert bool(re.fullmatch(translated.regexp, subject, flags)) == bool(
        re.search(pattern, subject, re.ASCII)), translated
    assert not empty_alternatives(translated.regexp), translated  # Lucene refuses "(a|)", "()"


def empty_alternatives(regexp: str) -> list[int]:
    """Where ``regexp`` has an empty group or alternative (outside escapes and classes)."""
    found, previous, index, in_class = [], "", 0, False
    while index < len(regexp):
        char = regexp[index]
        if char == "\\":
            previous, index = "x", index + 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char in "|)" and previous in ("(", "|"):
            found.append(index)
        previous = "x" if in_class else char
        index += 1
    return found


def test_the_empty_alternative_check_finds_them():
    assert empty_alternatives("(a|)") == [3] and empty_alternatives("()") == [1]
    assert empty_alternatives("\\(\\)|[(|)]") == []


@pytest.mark.parametrize(("pattern", "reason"), [
    ("a(?=b)", "lookahead"), ("(?<=a)b", "lookahead or lookbehind"), ("\\bword", "word boundary"),
    ("(a)\\1", "backreference"), ("a^b", "anchor"), ("(?>ab)", "no equivalent"),
    ("a++", "no equivalent"), ("[\\W]", "negated class escape"), ("(", "not a valid"),
    ("a" * 1001, "max_regex_length"),
])
def test_what_lucene_cannot_say_is_refused_with_the_reason(pattern, reason):
    with pytest.raises(lucene_regex.Untranslatable, match=reason):
        lucene_regex.translate(pattern)


def test_quotes_and_lucene_operators_are_escaped():
    regexp = lucene_regex.translate('"a"#@&<>~').regexp
    assert regexp == '.*\\"a\\"\\#\\@\\&\\<\\>\\~.*'


def test_anchors_apply_to_their_own_alternative():
    assert lucene_regex.translate("^Delete|Policy$").regexp == "Delete.*|.*Policy(\n)?"


# -- fieldref, checked on a hit -----------------------------------------------------------------

def test_fieldref_compares_every_value_of_both_fields_exactly():
    rule = {"fieldref": [{"field": "userIdentity.userName",
                          "equals": "requestParameters_flattened.userName"}]}
    assert fieldref.source_fields(rule) == ["requestParameters_flattened.userName",
                                            "userIdentity.userName"]
    hit = {"userIdentity": {"userName": "bob"},
           "requestParameters_flattened": {"userName": ["alice", "bob"]}}
    assert fieldref.matches(rule, hit)
    assert not fieldref.matches(rule, {**hit, "userIdentity": {"userName": "Bob"}})
    assert not fieldref.matches(rule, {"userIdentity": {"userName": "bob"}})
    assert fieldref.matches({"id": "no references"}, {})


# -- Rule files: ids and what cannot be read ------------------------------------------------------

RULE = """title: no id here
logsource: {product: aws, service: cloudtrail}
detection:
  sel:
    eventName: StopLogging
  condition: sel
"""


def test_a_rule_without_id_has_the_same_id_whatever_path_reaches_it(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "rule.yml").write_text(RULE)
    (tmp_path / "b.yml").write_text(RULE)
    (tmp_path / "c.yml").write_text(RULE.replace("StopLogging", "DeleteTrail"))
    first = sigma.convert_paths([tmp_path / "a" / "rule.yml"]).rules[0]["id"]
    again = sigma.convert_paths([str(tmp_path / "a" / ".." / "a" / "rule.yml")]).rules[0]["id"]
    ids = [rule["id"] for rule in sigma.convert_paths([tmp_path]).rules]
    assert first == again and first.startswith("noid-")
    assert ids.count(first) == 2 and len(set(ids)) == 2


@pytest.mark.parametrize("text", ["title: [unclosed\n", "- just\n- a list\n", "\x00binary",
                                  "title: x\ndetection: {condition: sel}\n",
                                  RULE.replace("eventName", "eventName|nosuchmodifier")])
def test_a_file_that_is_no_rule_is_skipped_with_its_reason_and_the_others_run(tmp_path, text):
    (tmp_path / "bad.yml").write_text(text)
    (tmp_path / "good.yml").write_text(RULE)
    conversion = sigma.convert_paths([tmp_path])
    assert [rule["title"] for rule in conversion.rules] == ["no id here"]
    [skipped] = conversion.skipped
    assert skipped["reason"] and "\n" not in skipped["reason"] and skipped["id"]


def test_cidr_on_the_source_address_is_a_typed_query(tmp_path):
    (tmp_path / "r.yml").write_text(RULE.replace(
        "eventName: StopLogging", "sourceIPAddress|cidr: ['10.0.0.0/25', '2001:db8::/32']"))
    [rule] = sigma.convert_paths([tmp_path]).rules
    assert rule["query"] == {"bool": {"should": [{"term": {"source.ip": "10.0.0.0/25"}},
                                                 {"term": {"source.ip": "2001:db8::/32"}}],
                                      "minimum_should_match": 1}}


def test_package_bundles_the_good_rules_and_names_the_broken_file(tmp_path, monkeypatch, capsys):
    import importlib.util
    import json
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "package.py"
    spec = importlib.util.spec_from_file_location("package_script", script)
    package = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(package)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "good.yml").write_text(RULE)
    (tmp_path / "rules" / "broken.yml").write_text("title: [unclosed\n")
    monkeypatch.setattr(package, "RULES", tmp_path / "rules")

    package.write_rule_bundle(tmp_path / "rules.json")

    bundle = json.loads((tmp_path / "rules.json").read_text())
    assert [rule["title"] for rule in bundle["rules"]] == ["no id here"]
    assert "broken.yml" in bundle["skipped"][0]["reason"]
    assert "broken.yml" in capsys.readouterr().err
