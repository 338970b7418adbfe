"""The detector's settings, Lambda route, metrics and answers, without a cluster."""
from __future__ import annotations

import io
import json
from datetime import datetime, timedelta, timezone

import pytest
from emf_schema import assert_valid_emf
from hypothesis import given
from hypothesis import strategies as st

import fakes
from cloudtrail_es.aws import handler as routes
from cloudtrail_es.aws import metrics
from cloudtrail_es.core.config import DetectionSettings, number_from_env
from cloudtrail_es.core.errors import ClusterError, ConfigurationError
from cloudtrail_es.detections import detect
from cloudtrail_es.detections.findings import answer

NUMERIC = ("DETECTION_DELAY_MINUTES", "DETECTION_MAX_FINDINGS", "DETECTION_CATCH_UP_HOURS")


@pytest.mark.parametrize("name", NUMERIC)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-60", "abc", "1e999", "0x10"])
def test_a_detection_setting_refuses_junk_naming_the_variable(name, value):
    with pytest.raises(ConfigurationError, match=name) as error:
        DetectionSettings.from_env({name: value})
    assert "\n" not in str(error.value)


def test_detection_settings_defaults_and_values():
    assert DetectionSettings.from_env({}) == DetectionSettings(15.0, 10_000, 168.0)
    # Blank is unset, as for every setting (a template's empty parameter).
    assert DetectionSettings.from_env(dict.fromkeys(NUMERIC, " ")) == DetectionSettings(15.0, 10_000, 168.0)
    assert DetectionSettings.from_env({"DETECTION_DELAY_MINUTES": "0", "DETECTION_MAX_FINDINGS": "5",
                                       "DETECTION_CATCH_UP_HOURS": "2.5"}) == DetectionSettings(0, 5, 2.5)
    with pytest.raises(ConfigurationError, match="DETECTION_MAX_FINDINGS"):
        DetectionSettings.from_env({"DETECTION_MAX_FINDINGS": "0"})


@given(st.text(max_size=12))
def test_a_number_setting_is_finite_and_non_negative_or_refused(text):
    try:
        value = number_from_env({"X": text}, "X", 1.0, float)
    except ConfigurationError as exc:
        assert str(exc).startswith("X=")
    else:
        assert value >= 0 and value == value and value != float("inf")


@pytest.mark.parametrize("value", ["nan", "-60", "abc"])
def test_the_cli_refuses_a_bad_delay_in_one_line_with_exit_2(value, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("DETECTION_DELAY_MINUTES", value)
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"format": 1, "rules": []}))
    assert detect.main([str(rules)]) == detect.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "DETECTION_DELAY_MINUTES" in err and "Traceback" not in err


def test_a_bad_detection_setting_fails_the_detection_route_alone(monkeypatch):
    """The loader's routes never read it; the detection route names it."""
    monkeypatch.setenv("DETECTION_DELAY_MINUTES", "nan")
    cluster = fakes.ScriptedCluster()
    processor = fakes.processor_for(fakes.MemorySource(
        {fakes.log_key("GoodFileNumber1"): fakes.trail_file([fakes.event("a")])}), cluster,
        fakes.MemoryDeadLetters())
    monkeypatch.setattr(routes, "processor", lambda: processor)
    loaded = routes.lambda_handler({"s3Bucket": "b", "s3ObjectKey": [fakes.log_key("GoodFileNumber1")]},
                                   None)
    assert loaded["indexed"] == 1
    with pytest.raises(ConfigurationError, match="DETECTION_DELAY_MINUTES='nan'"):
        routes.lambda_handler({"cloudtrail_es": "detect"}, None)


class Answer:
    def __init__(self, status, text):
        self.status_code, self.text = status, text
        self.content = text.encode()

    def json(self):
        return json.loads(self.text)


def test_a_non_json_answer_is_a_cluster_error_not_a_crash():
    with pytest.raises(ClusterError, match="not JSON"):
        answer(Answer(200, "<html>proxy</html>"), "search failed")
    with pytest.raises(ClusterError, match="HTTP 502"):
        answer(Answer(502, "bad gateway"), "search failed")
    assert answer(Answer(200, '{"a": 1}'), "x") == {"a": 1}


class _Listing:
    """A cluster whose ``_cat/indices`` answers the given text."""

    def __init__(self, text):
        self.text = text

    def request(self, method, path, body=None, **_):
        return Answer(200, self.text)


@pytest.mark.parametrize("text", ['["ct-2024-01"]', '{"index": "ct-2024-01"}', '[null]', '"x"',
                                  '[{"index": "ct-2024-01", "status": "open"}, 7]'])
def test_an_index_listing_of_another_shape_is_a_cluster_error_naming_it(text):
    """A proxy's or an odd engine's answer stops the run with what it could not do, as
    ``run`` reports a ClusterError; never an AttributeError outside every rule's boundary."""
    from cloudtrail_es.write.engine import Engine

    store = detect.Store(_Listing(text), Engine("opensearch", (2, 19)), "ct")
    with pytest.raises(ClusterError, match="cannot list the indexes ct-YYYY-MM: the answer is not a list"):
        store.monthly_indexes()
    listed = '[{"index": "ct-2024-01", "status": "open"}, {"index": "ct-2024-02", "status": "close"}, ' \
             '{"index": 5, "status": "open"}, {"status": "open"}, {"index": "ct-x-2024-01", "status": "open"}]'
    assert detect.Store(_Listing(listed), Engine("opensearch", (2, 19)), "ct").monthly_indexes() \
        == ["ct-2024-01"]


def test_the_search_pattern_leaves_out_longer_prefixes():
    assert detect.search_pattern("ct") == "ct-*,-ct-*-*-*,-ct-*_*"


def test_a_scheduled_window_is_bounded_by_the_catch_up_and_says_so():
    now = datetime(2026, 1, 10, tzinfo=timezone.utc)
    old = detect.RulePosition(window_end=now - timedelta(days=9))
    window, gap_end = detect.scheduled_window(old, now, timedelta(minutes=15), timedelta(hours=24))
    assert gap_end == window.start == now - timedelta(minutes=15) - timedelta(hours=24)
    assert window.field == detect.ARRIVAL and window.from_state
    fresh, none = detect.scheduled_window(detect.RulePosition(), now, timedelta(0), timedelta(days=7))
    assert none is None and fresh.start == now - detect.FIRST_RUN_LOOKBACK and fresh.end == now


def test_detection_metrics_are_valid_emf_with_a_lag_per_rule():
    summary = {"rules_run": 3, "rules_failed": 1, "findings": 7, "new": 2, "sent": 2, "unsent": 5,
               "skipped": [{"id": "x"}], "capped": ["b"],
               "rules": [{"id": "a", "lag_seconds": 61.5}, {"id": "b", "lag_seconds": 900.0},
                         {"id": "c"}]}
    stream = io.StringIO()
    out = metrics.emit_detection(summary, "fn", stream=stream, clock=lambda: 1_700_000_000)
    for line in stream.getvalue().splitlines():
        assert_valid_emf(line)
    assert out[0]["RulesFailed"] == 1 and out[0]["UnsentNotifications"] == 5
    assert out[0]["RulesSkipped"] == 1 and out[0]["RulesCapped"] == 1
    assert [(r["Rule"], r["DetectionLagSeconds"]) for r in out[1:]] == [("a", 61.5), ("b", 900.0)]
    assert [json.loads(line) for line in stream.getvalue().splitlines()] == out


@given(st.lists(st.integers(0, 30), max_size=80).map(sorted), st.integers(1, 12))
def test_runs_under_a_cap_take_every_hit_once_in_order(moments, cap):
    """Each run starts at the first moment the last one left; together they take every hit
    once, and a run exceeds the cap only by hits of the millisecond it stopped in."""
    hits = [{"_id": str(n), "sort": [moment]} for n, moment in enumerate(moments)]
    taken: list[str] = []
    start = 0
    for _ in range(len(hits) + 1):
        outcome = detect.RuleOutcome("r", "", detect.Window(datetime.now(timezone.utc),
                                                            datetime.now(timezone.utc)))
        window = [hit for hit in hits if hit["sort"][0] >= start]
        run = list(detect.up_to_cap(window, cap, outcome))
        taken += [hit["_id"] for hit in run]
        if run and len(run) > cap:
            assert len({hit["sort"][0] for hit in run[cap - 1:]}) == 1
        if not outcome.capped:
            break
        assert outcome.resume_from is not None
        start = int(outcome.resume_from.timestamp() * 1000)
        assert run and start > run[-1]["sort"][0]
    assert taken == [hit["_id"] for hit in hits]


def test_a_first_run_looks_back_no_further_than_the_catch_up_and_reports_no_gap():
    now = datetime(2026, 1, 10, tzinfo=timezone.utc)
    window, gap = detect.scheduled_window(detect.RulePosition(), now, timedelta(0), timedelta(hours=2))
    assert gap is None and window.start == now - timedelta(hours=2)
