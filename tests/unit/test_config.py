import pytest

from cloudtrail_es.core.config import Settings
from cloudtrail_es.core.errors import ConfigurationError


def test_bare_host_means_https_on_443_with_sigv4():
    settings = Settings.from_env({"ES_HOSTNAME": "search-x.eu-west-1.es.amazonaws.com",
                                  "AWS_REGION": "eu-west-1"})
    assert settings.es_url == "https://search-x.eu-west-1.es.amazonaws.com"
    assert settings.auth == "sigv4" and settings.region == "eu-west-1"


def test_url_with_scheme_and_port_is_kept():
    settings = Settings.from_env({"ES_HOSTNAME": "http://127.0.0.1:9200/", "ES_AUTH": "none"})
    assert settings.es_url == "http://127.0.0.1:9200"


def test_variables_are_read():
    env = {"ES_HOSTNAME": "h", "ES_AUTH": "basic", "ES_USERNAME": "u", "ES_PASSWORD": "p",
           "INDEX_PREFIX": "audit", "INDEX_SHARDS": "3", "INDEX_REPLICAS": "2",
           "BULK_MAX_DOCS": "10", "BULK_MAX_BYTES": "4096", "RETRY_LIMIT_SECONDS": "5"}
    s = Settings.from_env(env)
    assert (s.username, s.password, s.index_prefix, s.index_shards, s.index_replicas,
            s.bulk_max_docs, s.bulk_max_bytes, s.retry_limit_seconds) == (
        "u", "p", "audit", 3, 2, 10, 4096, 5.0)


def test_explicit_arguments_beat_the_environment():
    s = Settings.from_env({"ES_HOSTNAME": "h", "ES_AUTH": "none", "INDEX_PREFIX": "a"},
                          index_prefix="b")
    assert s.index_prefix == "b"


@pytest.mark.parametrize("env,message", [
    ({}, "ES_HOSTNAME is not set"),
    ({"ES_HOSTNAME": "h"}, "needs AWS_REGION"),
    ({"ES_HOSTNAME": "h", "ES_AUTH": "basic"}, "needs ES_USERNAME"),
    ({"ES_HOSTNAME": "h", "ES_AUTH": "kerberos"}, "expected one of"),
    ({"ES_HOSTNAME": "h", "ES_AUTH": "none", "INDEX_SHARDS": "two"}, "not a whole number"),
    ({"ES_HOSTNAME": "ftp://h", "ES_AUTH": "none"}, "neither a host name nor a URL"),
])
def test_bad_settings_say_what_is_wrong(env, message):
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_env(env)
