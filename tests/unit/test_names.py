"""INDEX_PREFIX checked against the engine's index-name rules; URL path segments encoded."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudtrail_es.core import config
from cloudtrail_es.core import names
from cloudtrail_es.core.errors import ConfigurationError


@pytest.mark.parametrize("prefix", [
    "", "Cloudtrail", "a/b", "a\\b", "a*", "a?", 'a"', "a<", "a>", "a|", "a,b", "a#", "a b", "a:b",
    "_a", "-a", "+a", ".", "..", ".hidden", "a\nb", "a\x00", "é" * 124,
])
def test_refused_prefixes_name_the_rule(prefix):
    with pytest.raises(ConfigurationError, match="INDEX_PREFIX must be lowercase"):
        names.validate_prefix(prefix)
    with pytest.raises(ConfigurationError, match="INDEX_PREFIX"):
        config.index_prefix_from_env({"INDEX_PREFIX": prefix})
    with pytest.raises(ConfigurationError, match="INDEX_PREFIX"):
        config.Settings.from_env({"ES_HOSTNAME": "h", "ES_AUTH": "none", "INDEX_PREFIX": prefix})


@pytest.mark.parametrize("prefix", ["cloudtrail", "audit.prod", "a", "x" * 247, "é" * 123, "ct_2"])
def test_accepted_prefixes(prefix):
    assert names.validate_prefix(prefix) == prefix


@settings(max_examples=200)
@given(st.text(max_size=60))
def test_an_accepted_prefix_makes_index_names_the_engine_accepts(prefix):
    try:
        names.validate_prefix(prefix)
    except ConfigurationError:
        return
    name = f"{prefix}-2024-01"
    assert name == name.lower() and len(name.encode()) <= 255
    assert not set(name) & set('\\/*?"<>|,#: ') and name[0] not in "_-+."
    assert names.segment(name).count("/") == 0


@pytest.mark.parametrize("hostile", ["x/_doc/y", "../_cluster/settings", "a?b=c", "a#b", "%2F"])
def test_a_segment_never_leaves_its_place_in_the_path(hostile):
    encoded = names.segment(hostile)
    assert "/" not in encoded and "?" not in encoded and "#" not in encoded


def test_monthly_index_names():
    assert names.is_monthly_index("ct-2024-12", "ct")
    for name in ("ct-2024-13", "ct-2024-1", "x/_doc/y", "../", "ct-2024-01x", "cu-2024-01", None, 3):
        assert not names.is_monthly_index(name, "ct")
