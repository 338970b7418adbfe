"""Cost filters over the whole corpus, loaded by the backfill into the real OpenSearch.

The expected counts are computed here, from the corpus events, by a matcher written for the
test (fnmatch on the JSON spelling of the value at a dotted path), not by cloudtrail_es.core.filters.
"""
import fnmatch
import gzip
import json

import pytest
from support import ids_by_index

from cloudtrail_es.backfill import cli

# The trail is a load here: the shared corpus adds nothing to what these tests check.
pytestmark = [pytest.mark.integration, pytest.mark.generated_trail_only]

#: One with a dotted path and the three filters that save the most on the corpus (README,
#: benchmarks/filter_savings.py); an event is counted under the first rule that matches it.
RULES = ["eventSource=kms.amazonaws.com,userIdentity.type=AWSService", "eventName=Describe*",
         "readOnly=true", "eventName=Get*"]


def value_text(event, path):
    value = event
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    return value if isinstance(value, str) else None


def first_matching_rule(event, rules):
    for rule in rules:
        conditions = [condition.split("=", 1) for condition in rule.split(",")]
        if all((text := value_text(event, field)) is not None and fnmatch.fnmatchcase(text, pattern)
               for field, pattern in conditions):
            return rule
    return None


@pytest.fixture(scope="module")
def corpus_events(corpus_files):
    return [event for _, data in corpus_files for event in json.loads(gzip.decompress(data))["Records"]]


def test_backfill_with_filters_accounts_for_every_event_and_indexes_the_rest(
        loader_env, corpus_dir, corpus_events, opensearch_url, capsys):
    expected_rule = {event["eventID"]: first_matching_rule(event, RULES) for event in corpus_events}
    expected_counts = {rule: sum(1 for r in expected_rule.values() if r == rule) for rule in RULES}
    kept = {event_id for event_id, rule in expected_rule.items() if rule is None}
    assert all(expected_counts.values()), expected_counts  # every rule removes something here

    exit_code = cli.main(["--dir", str(corpus_dir), "--json", "--quiet",
                          *[arg for rule in RULES[:2] for arg in ("--exclude", rule)],
                          "--exclude", ";".join(RULES[2:])])

    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert exit_code == cli.EXIT_OK, summary
    assert summary["events_read"] == len(corpus_events)
    assert summary["filtered_by_rule"] == expected_counts
    assert summary["filtered"] == sum(expected_counts.values()) == len(corpus_events) - len(kept)
    assert summary["indexed"] + summary["degraded"] + summary["dead_lettered"] == \
        summary["events_read"] - summary["filtered"]
    assert summary["bulk_requests"] >= 1 and summary["throttled"] == 0
    assert summary["ingestion_lag_seconds_max"] > 0

    found = ids_by_index(opensearch_url, loader_env)
    assert len(found) == summary["events_read"] - summary["filtered"]
    assert set(found) == kept


def test_a_bad_rule_is_a_usage_error_naming_it(loader_env, corpus_dir, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--dir", str(corpus_dir), "--exclude", "eventName=Get*", "--exclude", "readOnly"])
    assert exit_.value.code == cli.EXIT_USAGE
    assert "'readOnly'" in capsys.readouterr().err


def test_exclude_events_from_the_environment_is_checked_before_loading(
        loader_env, corpus_dir, monkeypatch, capsys):
    monkeypatch.setenv("EXCLUDE_EVENTS", "eventName=Get*;userIdentity..type=AWSService")
    assert cli.main(["--dir", str(corpus_dir), "--quiet"]) == cli.EXIT_USAGE
    assert "'userIdentity..type=AWSService'" in capsys.readouterr().err
