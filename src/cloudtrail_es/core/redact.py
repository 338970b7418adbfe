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
