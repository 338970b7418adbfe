"""ES_SECRET_ARN: the secret's text -> the credentials' variables (moto: tests/integration)."""
from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from cloudtrail_es.aws.clustersecret import credentials, environment_with_secret
from cloudtrail_es.core.errors import ConfigurationError

ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:loader-AbCdEf"


def test_basic_and_api_key_secrets():
    assert credentials(json.dumps({"username": "loader", "password": "pw"}), ARN) == {
        "ES_USERNAME": "loader", "ES_PASSWORD": "pw"}
    assert credentials(json.dumps({"api_key": "a2V5"}), ARN) == {"ES_API_KEY": "a2V5"}


@settings(max_examples=200)
@given(secret=st.one_of(
    st.text(max_size=40),
    st.dictionaries(st.sampled_from(["username", "password", "user", "key", "api"]),
                    st.one_of(st.text(max_size=12), st.integers(), st.none()), max_size=3).map(json.dumps)))
def test_a_secret_of_another_shape_is_refused_without_showing_its_values(secret):
    try:
        parsed = credentials(secret, ARN)
    except ConfigurationError as error:
        message = str(error)
        assert ARN in message and "ES_SECRET_ARN" in message
        try:
            values = json.loads(secret)
        except ValueError:
            values = None
        if isinstance(values, dict):  # the keys may be named, never the values
            for value in values.values():
                if isinstance(value, str) and len(value) > 3 and value not in message.split(": ")[0]:
                    assert f"'{value}'" not in message and f'"{value}"' not in message
        return
    # Accepted: only a complete pair or a key, and then Settings can use it.
    assert set(parsed) in ({"ES_USERNAME", "ES_PASSWORD"}, {"ES_API_KEY"})
    assert all(parsed.values())


def test_the_environment_without_a_secret_is_left_alone():
    environ = {"ES_HOSTNAME": "https://x.example.com", "ES_AUTH": "sigv4"}

    def no_client():
        raise AssertionError("no secret named: Secrets Manager is not called")

    assert environment_with_secret(environ, no_client) is environ
