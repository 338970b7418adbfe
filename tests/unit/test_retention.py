from datetime import date

import pytest

from cloudtrail_es.core.errors import ConfigurationError
from cloudtrail_es.commands.retention import expired_indexes, ism_policy

NAMES = ["cloudtrail-2025-12", "cloudtrail-2026-07", "cloudtrail-2026-08", "cloudtrail-2026-11",
         "cloudtrail-2027-01", "cloudtrail-2026-13", "cloudtrail-extra", "other-2020-01",
         "cloudtrail-2026-07-copy"]


def test_keeps_the_current_month_and_the_months_before_it():
    assert expired_indexes(NAMES, "cloudtrail", 4, date(2026, 11, 26)) == [
        "cloudtrail-2025-12", "cloudtrail-2026-07"]
    assert expired_indexes(NAMES, "cloudtrail", 3, date(2026, 11, 26)) == [
        "cloudtrail-2025-12", "cloudtrail-2026-07", "cloudtrail-2026-08"]
    assert expired_indexes(NAMES, "cloudtrail", 1, date(2026, 11, 1)) == [
        "cloudtrail-2025-12", "cloudtrail-2026-07", "cloudtrail-2026-08"]
    assert expired_indexes(NAMES, "cloudtrail", 120, date(2026, 11, 1)) == []


def test_never_deletes_with_less_than_one_month():
    with pytest.raises(ConfigurationError):
        expired_indexes(NAMES, "cloudtrail", 0, date(2026, 11, 1))


def test_ism_policy_targets_the_prefix():
    policy = ism_policy("audit", 6)["policy"]
    assert policy["ism_template"][0]["index_patterns"] == ["audit-*"]
    assert policy["states"][0]["transitions"][0]["conditions"]["min_index_age"] == "186d"
