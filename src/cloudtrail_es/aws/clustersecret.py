"""``ES_SECRET_ARN``: a cluster's credentials read from Secrets Manager when the Lambda starts.

The stack's existing-cluster mode (``ClusterAuth`` basic or apikey) names a secret instead of
putting credentials in a parameter or in the function's environment. Its ``SecretString`` is
JSON: ``{"username": ..., "password": ...}`` (basic auth) or ``{"api_key": ...}`` (an encoded
API key). They become ``ES_USERNAME`` / ``ES_PASSWORD`` / ``ES_API_KEY`` of the environment
``Settings`` is built from, and ``Settings`` registers them for redaction like any other.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Mapping

from cloudtrail_es.core.config import ES_API_KEY, ES_PASSWORD, ES_USERNAME
from cloudtrail_es.core.errors import ConfigurationError

ES_SECRET_ARN = "ES_SECRET_ARN"


def credentials(secret_string: str, arn: str) -> dict[str, str]:
    """The environment variables a secret's text stands for; ConfigurationError otherwise."""
    try:
        secret = json.loads(secret_string)
    except ValueError:
        secret = None
    if not isinstance(secret, dict):
        raise ConfigurationError(f"{ES_SECRET_ARN}={arn}: the secret is not a JSON object "
                                 '({"username", "password"} or {"api_key"})')
    if isinstance(secret.get("api_key"), str) and secret["api_key"]:
        return {ES_API_KEY: secret["api_key"]}
    if all(isinstance(secret.get(name), str) and secret[name] for name in ("username", "password")):
        return {ES_USERNAME: secret["username"], ES_PASSWORD: secret["password"]}
    raise ConfigurationError(f"{ES_SECRET_ARN}={arn}: the secret holds neither username and "
                             f"password nor api_key (it has: {', '.join(sorted(secret)) or 'nothing'})")


def environment_with_secret(environ: Mapping[str, str],
                            secrets_client: Callable[[], Any]) -> Mapping[str, str]:
    """``environ``, plus the credentials of the secret ``ES_SECRET_ARN`` names, if it names one."""
    arn = environ.get(ES_SECRET_ARN)
    if not arn:
        return environ
    try:
        answer = secrets_client().get_secret_value(SecretId=arn)
    except Exception as exc:  # botocore's errors: the reason, never the secret
        raise ConfigurationError(f"{ES_SECRET_ARN}={arn}: cannot read the secret: "
                                 f"{type(exc).__name__}: {exc}") from None
    return {**environ, **credentials(str(answer.get("SecretString", "")), arn)}
