"""All settings in one place, read from the environment once; explicit arguments win."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, TypeVar
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

from cloudtrail_es.core import names
from cloudtrail_es.core import redact
from cloudtrail_es.core.errors import ConfigurationError
from cloudtrail_es.core.filters import parse_rules, split_rules

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
LOG_LEVEL = "LOG_LEVEL"
RETENTION_MONTHS = "RETENTION_MONTHS"
DEAD_LETTER_DIR = "DEAD_LETTER_DIR"
MAX_EVENT_BYTES = "MAX_EVENT_BYTES"
MAX_FILE_BYTES = "MAX_FILE_BYTES"
FINDINGS_TOPIC_ARN = "FINDINGS_TOPIC_ARN"
DETECTION_DELAY_MINUTES = "DETECTION_DELAY_MINUTES"
DETECTION_MAX_FINDINGS = "DETECTION_MAX_FINDINGS"
DETECTION_CATCH_UP_HOURS = "DETECTION_CATCH_UP_HOURS"
BREAKER_SECONDS = "BREAKER_SECONDS"

AUTH_MODES = ("sigv4", "basic", "apikey", "none")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class Settings:
    es_url: str
    auth: str = "sigv4"
    region: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
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
    #: The CLI's dead letters: a local directory.
    dead_letter_dir: str = "dead-letter"
    api_key: str | None = field(default=None, repr=False)
    #: A CA bundle to verify the cluster's certificate with; verification is on unless
    #: ES_VERIFY_CERTS=false says otherwise, explicitly.
    ca_certs: str | None = None
    verify_certs: bool = True
    #: SigV4 service: "es" (Amazon OpenSearch Service domains) or "aoss" (Serverless).
    sigv4_service: str = "es"
    #: Serverless time-series collections refuse client document ids.
    client_ids: bool = True
    #: CLI: a cluster unreachable (or answering 5xx) this long stops the run (circuit breaker).
    breaker_seconds: float = 120.0
    #: Exclusion rules (``filters.py``), each ``FIELD=PATTERN[,FIELD=PATTERN...]``.
    exclude_events: tuple[str, ...] = ()
    log_level: str = "INFO"
    #: Months of monthly indexes the scheduled retention keeps; 0: retention off.
    retention_months: int = 0
    #: An event whose JSON text is longer is dead-lettered as too large, never held whole
    #: (sources.DEFAULT_MAX_EVENT_BYTES); a file inflating to more than max_file_bytes fails.
    max_event_bytes: int = 8 << 20
    max_file_bytes: int = 2 << 30
    #: Detector: SNS topic new findings are published to (none: not published).
    findings_topic_arn: str | None = None

    @property
    def serverless(self) -> bool:
        return self.sigv4_service == "aoss"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> "Settings":
        env = os.environ if environ is None else environ
        redact.register_environment(env)  # before anything is checked: errors quote values
        hostname = overrides.pop("es_url", None) or env.get(ES_HOSTNAME)
        if not hostname:
            raise ConfigurationError(f"{ES_HOSTNAME} is not set (the cluster's host name or URL)")
        url, url_username, url_password = split_credentials(base_url(hostname))
        if url_username is None and env.get(ES_HOSTNAME):
            _, url_username, url_password = split_credentials(base_url(env[ES_HOSTNAME]))
        username = env.get(ES_USERNAME) or url_username
        password = env.get(ES_PASSWORD) or url_password
        default_auth = ("apikey" if env.get(ES_API_KEY) else
                        "basic" if username else "sigv4")
        auth = (env.get(ES_AUTH) or default_auth).lower()
        if auth == "none" and url_username is not None:  # requests used to send them as basic auth
            auth = "basic"
        settings = cls(
            es_url=url,
            auth=auth,
            region=env.get(AWS_REGION) or env.get("AWS_DEFAULT_REGION"),
            username=username,
            password=password,
            index_prefix=index_prefix_from_env(env),
            index_shards=_setting(env, "index_shards"),
            index_replicas=_setting(env, "index_replicas"),
            bulk_max_docs=_setting(env, "bulk_max_docs"),
            bulk_max_bytes=_setting(env, "bulk_max_bytes"),
            retry_limit_seconds=_setting(env, "retry_limit_seconds"),
            compress_requests=_bool(env, ES_COMPRESS_REQUESTS, cls.compress_requests),
            dead_letter_bucket=env.get(DEAD_LETTER_BUCKET) or None,
            dead_letter_prefix=env.get(DEAD_LETTER_PREFIX, cls.dead_letter_prefix),
            dead_letter_dir=env.get(DEAD_LETTER_DIR) or cls.dead_letter_dir,
            api_key=env.get(ES_API_KEY) or None,
            ca_certs=env.get(ES_CA_CERTS) or None,
            verify_certs=_bool(env, ES_VERIFY_CERTS, True),
            sigv4_service=(env.get(ES_SERVICE) or
                           ("aoss" if (urlsplit(url).hostname or "").endswith(".aoss.amazonaws.com")
                            else "es")).lower(),
            client_ids=env.get(AOSS_COLLECTION, "search").lower() != "timeseries",
            breaker_seconds=_setting(env, "breaker_seconds"),
            exclude_events=tuple(split_rules(env.get(EXCLUDE_EVENTS, ""))),
            log_level=log_level_from_env(env),
            retention_months=retention_months_from_env(env),
            max_event_bytes=_setting(env, "max_event_bytes"),
            max_file_bytes=_setting(env, "max_file_bytes"),
            findings_topic_arn=env.get(FINDINGS_TOPIC_ARN) or None,
        )
        settings = replace(settings, **overrides).validated()
        redact.register([settings.password, settings.api_key])
        redact.register_aws_environment(env)
        return settings

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
        for name in NUMBERS:  # explicit arguments (--retry-limit nan) are held to the same rules
            _check(name, getattr(self, name))
        names.validate_prefix(self.index_prefix)
        parse_rules(self.exclude_events)  # a bad rule is a ConfigurationError naming it
        return self._validated_limits()

    def _validated_limits(self) -> "Settings":
        """The numbers and names the cluster would refuse file after file: refused here, once."""
        if not self.index_prefix.strip():
            raise ConfigurationError(f"{INDEX_PREFIX} is empty: indexes are named PREFIX-YYYY-MM")
        if self.log_level.upper() not in LOG_LEVELS:
            raise ConfigurationError(
                f"{LOG_LEVEL}={self.log_level!r}: expected one of {', '.join(LOG_LEVELS)}")
        return self


@dataclass(frozen=True)
class DetectionSettings:
    """The detector's own settings: read apart from ``Settings``, so that a bad one fails
    detection alone and never the loader's routes."""

    #: The scheduled window ends this long before now: documents still being written land first.
    delay_minutes: float = 15.0
    #: Findings one rule records in one run at most; the rest is picked up by the next run.
    max_findings: int = 10_000
    #: A rule that has not completed a run for longer resumes from this long ago, saying so.
    catch_up_hours: float = 168.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "DetectionSettings":
        env = os.environ if environ is None else environ
        return cls(
            delay_minutes=number_from_env(env, DETECTION_DELAY_MINUTES, cls.delay_minutes, float,
                                          unit="minutes"),
            max_findings=number_from_env(env, DETECTION_MAX_FINDINGS, cls.max_findings, int, 1),
            catch_up_hours=number_from_env(env, DETECTION_CATCH_UP_HOURS, cls.catch_up_hours, float,
                                           1, unit="hours"),
        )


def index_prefix_from_env(environ: Mapping[str, str] | None = None) -> str:
    """``INDEX_PREFIX``, for commands that name indexes without talking to a cluster; validated."""
    return names.validate_prefix(
        (os.environ if environ is None else environ).get(INDEX_PREFIX, Settings.index_prefix))


def log_level_from_env(environ: Mapping[str, str] | None = None, default: str = Settings.log_level) -> str:
    """``LOG_LEVEL``, for commands that log before (or without) the cluster's settings."""
    value = (os.environ if environ is None else environ).get(LOG_LEVEL, "").strip().upper()
    if value and value not in LOG_LEVELS:
        raise ConfigurationError(f"{LOG_LEVEL}={value!r}: expected one of {', '.join(LOG_LEVELS)}")
    return value or default


def retention_months_from_env(environ: Mapping[str, str] | None = None) -> int:
    """``RETENTION_MONTHS``: months kept by the scheduled retention (0 or unset: off)."""
    return _setting(os.environ if environ is None else environ, "retention_months")


#: How ES_HOSTNAME is read, quoted when it is refused.
HOSTNAME_RULE = ("a URL (http://127.0.0.1:9200, https://search-x.es.amazonaws.com) or a bare host name "
                 "(HTTPS on 443, as Amazon's endpoints); a host:port without a scheme must say http:// or https://")


def base_url(hostname: str) -> str:
    """A bare host name (or host:443) means HTTPS on 443 (Amazon's endpoints); a URL is kept;
    a scheme-less ``host:port`` on another port is refused: HTTP or HTTPS would be a guess."""
    hostname = hostname.strip().rstrip("/")
    shown = redact.without_url_password(hostname)  # a refusal quotes it, never its password
    if "://" not in hostname:
        try:
            port = urlsplit("//" + hostname).port
        except ValueError:
            raise ConfigurationError(f"{ES_HOSTNAME}={shown!r}: expected {HOSTNAME_RULE}") from None
        if port not in (None, 443):
            raise ConfigurationError(
                f"{ES_HOSTNAME}={shown!r} has a port but no scheme: write http://{shown} or "
                f"https://{shown} (expected {HOSTNAME_RULE})")
        hostname = "https://" + hostname
    try:
        parts = urlsplit(hostname)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 - read for its check: an invalid port raises ValueError
    except ValueError as exc:  # "Invalid IPv6 URL", a port out of range...
        raise ConfigurationError(f"{ES_HOSTNAME}={shown!r}: {exc}; expected {HOSTNAME_RULE}") from None
    if not valid:
        raise ConfigurationError(f"{ES_HOSTNAME}={shown!r} is neither a host name nor a URL")
    return hostname


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """``https://user:pw@host`` -> (``https://host``, user, pw), percent-decoded, as requests reads them."""
    parts, username, password = split_credentials_parts(urlsplit(url))
    return urlunsplit(parts), username, password


def split_credentials_parts(parts: SplitResult) -> tuple[SplitResult, str | None, str | None]:
    if "@" not in parts.netloc:
        return parts, None, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    return parts._replace(netloc=hostport), unquote(username), unquote(password) or None


#: Each numeric setting's field -> (variable, lowest value, whether that value itself is
#: refused, unit): read with ``number_from_env``, checked again with ``check_number`` when given
#: explicitly (a command-line option).
NUMBERS: dict[str, tuple[str, float, bool, str]] = {
    "index_shards": (INDEX_SHARDS, 1, False, ""),
    "index_replicas": (INDEX_REPLICAS, 0, False, ""),
    "bulk_max_docs": (BULK_MAX_DOCS, 1, False, "documents"),
    "bulk_max_bytes": (BULK_MAX_BYTES, 1024, False, "bytes"),
    "retry_limit_seconds": (RETRY_LIMIT_SECONDS, 0, False, "seconds"),
    "breaker_seconds": (BREAKER_SECONDS, 0, True, "seconds"),
    "retention_months": (RETENTION_MONTHS, 0, False, "months (0: off)"),
    "max_event_bytes": (MAX_EVENT_BYTES, 1, False, "bytes"),
    "max_file_bytes": (MAX_FILE_BYTES, 1, False, "bytes"),
}


def _setting(env: Mapping[str, str], name: str) -> Any:
    variable, minimum, above, unit = NUMBERS[name]
    default = getattr(Settings, name)
    return number_from_env(env, variable, default, type(default), minimum, above, unit)


def _check(name: str, number: Any) -> None:
    variable, minimum, above, unit = NUMBERS[name]
    check_number(variable, number, minimum, above, unit)


N = TypeVar("N", int, float)


def number_from_env(env: Mapping[str, str], name: str, default: N, kind: type[N],
                    minimum: float = 0, above: bool = False, unit: str = "") -> N:
    """The number in ``env[name]`` (``default`` when unset or blank), refused in one line that
    names the variable when it is not one: garbage, a fraction where a whole number is
    expected, NaN, an infinity, or below ``minimum`` (at or below it when ``above``).

    Surrounding blanks, a sign, ``_`` digit groups and exponents are taken (``5e6`` is a whole
    number). Every numeric setting goes through here (or ``check_number``, for an explicit
    argument), so each refuses the same forms the same way.
    """
    value = env.get(name)
    if value is None or not value.strip():
        return default
    number = _parse(value.strip(), kind)
    if number is None:
        what = "a whole number" if kind is int else "a number"
        raise ConfigurationError(
            f"{name}={value!r} is not {what}: expected {_expected(kind, minimum, above, unit)}")
    return check_number(name, number, minimum, above, unit, shown=repr(value))


def _parse(text: str, kind: type[N]) -> N | None:
    """``text`` as a ``kind``; a whole number may be written ``5e6`` or ``5.0`` too."""
    try:
        return kind(text)
    except ValueError:
        pass
    if kind is int:
        try:
            number = float(text)
        except ValueError:
            return None
        if number.is_integer():
            return kind(number)
    return None


def check_number(name: str, number: N, minimum: float = 0, above: bool = False, unit: str = "",
                 shown: str | None = None) -> N:
    """``number`` if it is finite and at least ``minimum`` (more than it when ``above``);
    else ConfigurationError naming ``name``."""
    kind = type(number)
    if (not math.isfinite(number) or number < minimum or (above and number == minimum)):
        raise ConfigurationError(
            f"{name}={shown if shown is not None else repr(number)}: "
            f"expected {_expected(kind, minimum, above, unit)}")
    return number


def _expected(kind: type, minimum: float, above: bool, unit: str) -> str:
    what = "a whole number" if kind is int else "a finite number"
    bound = f"more than {minimum:g}" if above else f"{minimum:g} or more"
    return f"{what}, {bound}{' ' + unit if unit else ''}"


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name, "").strip().lower()
    if value == "":
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{name}={value!r}: expected true or false")
