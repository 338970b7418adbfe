"""All settings in one place, read from the environment once; explicit arguments win."""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Mapping
from urllib.parse import urlsplit

from .errors import ConfigurationError
from .filters import parse_rules

# Environment variables the code reads (the README lists exactly these).
ES_HOSTNAME = "ES_HOSTNAME"
ES_AUTH = "ES_AUTH"
ES_USERNAME = "ES_USERNAME"
ES_PASSWORD = "ES_PASSWORD"
AWS_REGION = "AWS_REGION"
INDEX_PREFIX = "INDEX_PREFIX"
INDEX_SHARDS = "INDEX_SHARDS"
INDEX_REPLICAS = "INDEX_REPLICAS"
BULK_MAX_DOCS = "BULK_MAX_DOCS"
BULK_MAX_BYTES = "BULK_MAX_BYTES"
RETRY_LIMIT_SECONDS = "RETRY_LIMIT_SECONDS"
ES_COMPRESS_REQUESTS = "ES_COMPRESS_REQUESTS"
DEAD_LETTER_BUCKET = "DEAD_LETTER_BUCKET"
DEAD_LETTER_PREFIX = "DEAD_LETTER_PREFIX"
ES_API_KEY = "ES_API_KEY"
ES_CA_CERTS = "ES_CA_CERTS"
ES_VERIFY_CERTS = "ES_VERIFY_CERTS"
ES_SERVICE = "ES_SERVICE"
AOSS_COLLECTION = "AOSS_COLLECTION"
EXCLUDE_EVENTS = "EXCLUDE_EVENTS"

AUTH_MODES = ("sigv4", "basic", "apikey", "none")


@dataclass(frozen=True)
class Settings:
    es_url: str
    auth: str = "sigv4"
    region: str | None = None
    username: str | None = None
    password: str | None = None
    index_prefix: str = "cloudtrail"
    index_shards: int = 1
    index_replicas: int = 1
    bulk_max_docs: int = 2000
    #: Amazon OpenSearch Service accepts 10 MiB requests on its smallest
    #: instance types; 5 MiB leaves room and keeps memory flat.
    bulk_max_bytes: int = 5 * 1024 * 1024
    #: How long the CLI keeps retrying throttled requests for one file.
    retry_limit_seconds: float = 900.0
    #: gzip ``_bulk`` bodies (signed over the compressed bytes).
    compress_requests: bool = True
    dead_letter_bucket: str | None = None
    dead_letter_prefix: str = "dead-letter/"
    api_key: str | None = None
    #: A CA bundle to verify the cluster's certificate with; verification is on unless
    #: ES_VERIFY_CERTS=false says otherwise, explicitly.
    ca_certs: str | None = None
    verify_certs: bool = True
    #: SigV4 service: "es" (Amazon OpenSearch Service domains) or "aoss" (Serverless).
    sigv4_service: str = "es"
    #: Serverless time-series collections refuse client document ids.
    client_ids: bool = True
    #: Exclusion rules (``filters.py``), each ``FIELD=PATTERN[,FIELD=PATTERN...]``.
    exclude_events: tuple[str, ...] = ()

    @property
    def serverless(self) -> bool:
        return self.sigv4_service == "aoss"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> "Settings":
        env = os.environ if environ is None else environ
        hostname = overrides.pop("es_url", None) or env.get(ES_HOSTNAME)
        if not hostname:
            raise ConfigurationError(f"{ES_HOSTNAME} is not set (the cluster's host name or URL)")
        url = base_url(hostname)
        default_auth = ("apikey" if env.get(ES_API_KEY) else
                        "basic" if env.get(ES_USERNAME) else "sigv4")
        settings = cls(
            es_url=url,
            auth=(env.get(ES_AUTH) or default_auth).lower(),
            region=env.get(AWS_REGION) or env.get("AWS_DEFAULT_REGION"),
            username=env.get(ES_USERNAME),
            password=env.get(ES_PASSWORD),
            index_prefix=index_prefix_from_env(env),
            index_shards=_int(env, INDEX_SHARDS, cls.index_shards),
            index_replicas=_int(env, INDEX_REPLICAS, cls.index_replicas),
            bulk_max_docs=_int(env, BULK_MAX_DOCS, cls.bulk_max_docs),
            bulk_max_bytes=_int(env, BULK_MAX_BYTES, cls.bulk_max_bytes),
            retry_limit_seconds=float(env.get(RETRY_LIMIT_SECONDS, cls.retry_limit_seconds)),
            compress_requests=_bool(env, ES_COMPRESS_REQUESTS, cls.compress_requests),
            dead_letter_bucket=env.get(DEAD_LETTER_BUCKET) or None,
            dead_letter_prefix=env.get(DEAD_LETTER_PREFIX, cls.dead_letter_prefix),
            api_key=env.get(ES_API_KEY) or None,
            ca_certs=env.get(ES_CA_CERTS) or None,
            verify_certs=_bool(env, ES_VERIFY_CERTS, True),
            sigv4_service=(env.get(ES_SERVICE) or
                           ("aoss" if (urlsplit(url).hostname or "").endswith(".aoss.amazonaws.com")
                            else "es")).lower(),
            client_ids=env.get(AOSS_COLLECTION, "search").lower() != "timeseries",
            exclude_events=tuple(rule for rule in env.get(EXCLUDE_EVENTS, "").split(";") if rule.strip()),
        )
        return replace(settings, **overrides).validated()

    def validated(self) -> "Settings":
        if self.auth not in AUTH_MODES:
            raise ConfigurationError(f"{ES_AUTH}={self.auth!r}: expected one of {AUTH_MODES}")
        if self.auth == "sigv4" and not self.region:
            raise ConfigurationError(f"{ES_AUTH}=sigv4 needs {AWS_REGION}")
        if self.auth == "basic" and not (self.username and self.password):
            raise ConfigurationError(f"{ES_AUTH}=basic needs {ES_USERNAME} and {ES_PASSWORD}")
        if self.auth == "apikey" and not self.api_key:
            raise ConfigurationError(f"{ES_AUTH}=apikey needs {ES_API_KEY}")
        if self.sigv4_service not in ("es", "aoss"):
            raise ConfigurationError(f"{ES_SERVICE}={self.sigv4_service!r}: expected es or aoss")
        if self.bulk_max_docs < 1 or self.bulk_max_bytes < 1024:
            raise ConfigurationError("bulk limits must be at least 1 document and 1024 bytes")
        parse_rules(self.exclude_events)  # a bad rule is a ConfigurationError naming it
        return self


def index_prefix_from_env(environ: Mapping[str, str] | None = None) -> str:
    """``INDEX_PREFIX``, for commands that name indexes without talking to a cluster."""
    return (os.environ if environ is None else environ).get(INDEX_PREFIX, Settings.index_prefix)


def base_url(hostname: str) -> str:
    """A bare host name means HTTPS on 443 (Amazon's endpoints); a URL is kept."""
    hostname = hostname.strip().rstrip("/")
    if "://" not in hostname:
        hostname = "https://" + hostname
    parts = urlsplit(hostname)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"{ES_HOSTNAME}={hostname!r} is neither a host name nor a URL")
    return hostname


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigurationError(f"{name}={value!r} is not a whole number") from None


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name, "").strip().lower()
    if value == "":
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{name}={value!r}: expected true or false")
