"""Every numeric setting parses what a user may write or refuses it in one line naming it."""
import math

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from cloudtrail_es.core.config import NUMBERS, Settings, number_from_env
from cloudtrail_es.core.errors import ConfigurationError
from cloudtrail_es.core.filters import parse_rules

BASE = {"ES_HOSTNAME": "http://127.0.0.1:9200", "ES_AUTH": "none"}
VARIABLES = sorted((variable, field) for field, (variable, *_) in NUMBERS.items())

numberish = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "1e400", "-1", "0", "-0", "1.5",
                     " 7 ", "+3", "5e6", "1_000", "0x10", "", "  ", "\t12\n", "1,000", "10s"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-10**6, max_value=10**12).map(str),
)


@hsettings(max_examples=300, deadline=None)
@given(variable_field=st.sampled_from(VARIABLES), text=numberish)
def test_a_numeric_setting_is_a_usable_number_or_one_line_naming_it(variable_field, text):
    variable, field = variable_field
    _, minimum, above, _ = NUMBERS[field]
    try:
        value = getattr(Settings.from_env({**BASE, variable: text}), field)
    except ConfigurationError as refused:
        message = str(refused)
        assert message.startswith(f"{variable}=") and "\n" not in message
        assert "expected" in message
        return
    assert math.isfinite(value) and (value > minimum if above else value >= minimum)
    assert type(value) is type(getattr(Settings, field))
    if text.strip():
        assert math.isclose(value, float(text.strip().replace("_", "")), rel_tol=1e-9)


@pytest.mark.parametrize("variable", ["RETRY_LIMIT_SECONDS", "BREAKER_SECONDS"])
@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "-5", "soon"])
def test_deadline_settings_refuse_what_is_no_duration(variable, text):
    with pytest.raises(ConfigurationError, match=f"^{variable}="):
        Settings.from_env({**BASE, variable: text})


@pytest.mark.parametrize("field", ["retry_limit_seconds", "breaker_seconds", "index_shards"])
def test_explicit_arguments_are_held_to_the_same_rules(field):
    with pytest.raises(ConfigurationError, match=NUMBERS[field][0]):
        Settings.from_env(BASE, **{field: float("nan")})


def test_the_helper_serves_any_variable():
    assert number_from_env({"DETECTION_DELAY_MINUTES": " 2.5 "}, "DETECTION_DELAY_MINUTES",
                           15.0, float) == 2.5
    assert number_from_env({}, "DETECTION_DELAY_MINUTES", 15.0, float) == 15.0
    with pytest.raises(ConfigurationError, match="^DETECTION_DELAY_MINUTES='nan'"):
        number_from_env({"DETECTION_DELAY_MINUTES": "nan"}, "DETECTION_DELAY_MINUTES", 15.0, float)


rule = st.tuples(st.sampled_from(["eventName", "eventSource", "userIdentity.type"]),
                 st.text(st.characters(blacklist_categories=("Cs", "Zl", "Zp", "Cc"),
                                       blacklist_characters=",;="), min_size=1, max_size=8)
                 .filter(lambda p: p.strip() and not any(c.isspace() for c in p) and p == p.strip()))


@hsettings(max_examples=100, deadline=None)
@given(rules=st.lists(rule, min_size=1, max_size=5), newline=st.sampled_from(["\n", "\r\n", "\n\n"]))
def test_exclude_events_one_rule_per_line_is_the_same_as_semicolons(rules, newline):
    texts = [f"{name}={pattern}" for name, pattern in rules]
    by_line = Settings.from_env({**BASE, "EXCLUDE_EVENTS": newline.join(texts) + newline})
    by_semicolon = Settings.from_env({**BASE, "EXCLUDE_EVENTS": ";".join(texts)})
    assert by_line.exclude_events == by_semicolon.exclude_events == tuple(texts)
    assert parse_rules(by_line.exclude_events) == parse_rules(";".join(texts))
