"""Recognising the total-fields limit in a bulk item's error; one warning per index."""
import logging

import pytest

from cloudtrail_es.write import fieldlimit
from cloudtrail_es.core.config import Settings
from cloudtrail_es.core.errors import ConfigurationError


@pytest.mark.parametrize("reason,limit", [
    ("Limit of total fields [1000] has been exceeded", 1000),                         # OpenSearch
    ("Limit of total fields [50] has been exceeded while adding new fields [3]", 50),  # Elasticsearch 8
    ("Limit of total fields [8192] in index [ct-2024-01] has been exceeded", 8192),   # Elasticsearch 6
])
def test_the_field_limit_is_recognised_in_every_engines_words(reason, limit):
    assert fieldlimit.limit_in({"type": "illegal_argument_exception", "reason": reason}) == limit


@pytest.mark.parametrize("error", [
    {"type": "mapper_parsing_exception", "reason": "Limit of total fields [1] has been exceeded"},
    {"type": "illegal_argument_exception", "reason": "Limit of mapping depth [20] has been exceeded"},
    "Limit of total fields [1] has been exceeded", None,
])
def test_other_rejections_are_not_the_field_limit(error):
    assert not fieldlimit.is_field_limit(error)


def test_each_index_is_warned_about_once(caplog):
    caplog.set_level(logging.WARNING)
    error = {"type": "illegal_argument_exception", "reason": "Limit of total fields [7] has been exceeded"}
    results = [fieldlimit.warn_once(index, error) for index in ("u-warn-a", "u-warn-b", "u-warn-a")]
    assert results == [True, True, False]
    records = [r for r in caplog.records if r.getMessage() == "field limit reached"]
    assert [r.index for r in records] == ["u-warn-a", "u-warn-b"] and records[0].limit == 7
    assert "PUT /u-warn-a/_settings" in records[0].advice


def test_breaker_seconds_setting():
    base = {"ES_HOSTNAME": "h", "ES_AUTH": "none"}
    assert Settings.from_env(base).breaker_seconds == 120.0
    assert Settings.from_env({**base, "BREAKER_SECONDS": "7.5"}).breaker_seconds == 7.5
    assert Settings.from_env({**base, "BREAKER_SECONDS": "7.5"}, breaker_seconds=3).breaker_seconds == 3
    for bad in ("0", "-1", "soon"):
        with pytest.raises(ConfigurationError, match="BREAKER_SECONDS"):
            Settings.from_env({**base, "BREAKER_SECONDS": bad})
