"""Secrets this process knows, blanked out of anything it writes: logs, errors, summaries.

Secrets are kept out of messages by construction (``Settings`` takes the credentials
out of ``ES_HOSTNAME``, its repr hides them, nothing logs a request's headers); this is
the safety net for text we do not build ourselves, such as an exception from a library.
"""
from __future__ import annotations

import json
import os
import threading
from typing import Iterable, Mapping
from urllib.parse import unquote

MASK = "***"
#: Shorter values are not treated as secrets: blanking them out would garble every message.
MIN_SECRET_LENGTH = 4
#: The AWS credentials botocore reads from the environment (an access key id included).
AWS_SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")
#: Real AWS keys are 16 characters or more; shorter values are placeholders (tests: "testing").
MIN_AWS_SECRET_LENGTH = 16

_lock = threading.Lock()
_secrets: set[str] = set()


def register(values: Iterable[str | None], min_length: int = MIN_SECRET_LENGTH) -> None:
    """Remember secrets to blank out (with their JSON-escaped spelling, as logs write them)."""
    with _lock:
        for value in values:
            if value and len(value) >= min_length:
                _secrets.add(value)
                _secrets.add(json.dumps(value, ensure_ascii=False)[1:-1])
                _secrets.add(json.dumps(value)[1:-1])


#: The settings whose whole value is a credential (``config`` names them too).
SECRET_VARIABLES = ("ES_PASSWORD", "ES_API_KEY")
#: The setting that may hold a password in its URL (``https://user:password@host``).
URL_VARIABLE = "ES_HOSTNAME"


def register_environment(environ: Mapping[str, str] | None = None) -> None:
    """Every credential the environment holds, registered before anything reads or checks it
    (the first thing an entry point and ``Settings.from_env`` do): ES_PASSWORD, ES_API_KEY,
    the password in ES_HOSTNAME's URL as written and percent-decoded, and AWS's keys."""
    env = os.environ if environ is None else environ
    register(env.get(name) for name in SECRET_VARIABLES)
    register(url_passwords(env.get(URL_VARIABLE) or ""))
    register_aws_environment(env)


def url_passwords(text: str) -> list[str]:
    """The password of ``[scheme://]user:password@host...`` as written and percent-decoded,
    found without parsing the URL (it may be one no parser takes)."""
    userinfo = text.rpartition("@")[0].split("://", 1)[-1]
    _, colon, password = userinfo.partition(":")
    return [password, unquote(password)] if colon and password else []


def without_url_password(text: str) -> str:
    """``text`` with the password of its ``user:password@`` (any length) replaced by ``***``."""
    for password in url_passwords(text):
        text = text.replace(f":{password}@", f":{MASK}@")
    return text


def register_aws_environment(environ: Mapping[str, str] | None = None) -> None:
    env = os.environ if environ is None else environ
    register((env.get(name) for name in AWS_SECRET_VARIABLES), MIN_AWS_SECRET_LENGTH)


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***`` (longest first)."""
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text
