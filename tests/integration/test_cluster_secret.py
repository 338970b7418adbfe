"""ES_SECRET_ARN against moto server's Secrets Manager: the Lambda's settings take the secret's
credentials, and a secret that cannot be read stops it with the ARN and the reason, no value."""
from __future__ import annotations

import json
import uuid

import boto3
import pytest

from cloudtrail_es.aws.clustersecret import environment_with_secret
from cloudtrail_es.core.config import Settings
from cloudtrail_es.core.errors import ConfigurationError

pytestmark = pytest.mark.integration


@pytest.fixture()
def secret(aws_env):
    client = boto3.client("secretsmanager")
    password = f"pw-{uuid.uuid4().hex}"
    arn = client.create_secret(Name=f"loader-{uuid.uuid4().hex[:8]}",
                               SecretString=json.dumps({"username": "loader", "password": password}))["ARN"]
    yield arn, password
    client.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)


def test_settings_take_the_secret_credentials(secret):
    arn, password = secret
    environ = {"ES_HOSTNAME": "https://x.example.com", "ES_AUTH": "basic", "ES_SECRET_ARN": arn}
    settings = Settings.from_env(environment_with_secret(environ, lambda: boto3.client("secretsmanager")))
    assert (settings.username, settings.password) == ("loader", password)
    assert password not in repr(settings)


def test_a_missing_secret_names_the_arn_and_the_reason(aws_env):
    arn = f"arn:aws:secretsmanager:us-east-1:123456789012:secret:gone-{uuid.uuid4().hex[:6]}"
    with pytest.raises(ConfigurationError) as error:
        environment_with_secret({"ES_SECRET_ARN": arn}, lambda: boto3.client("secretsmanager"))
    assert arn in str(error.value) and "ResourceNotFound" in str(error.value)
