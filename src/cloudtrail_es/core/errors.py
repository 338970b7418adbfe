"""Typed errors, all of them; each carries what a user needs to act on it.

Two live elsewhere, for a reason: ``detections.sigma.NotConvertible`` extends a pySigma error
(pySigma is a build-time dependency), and ``aws.rolemapping.CustomResourceError`` belongs to a
module that is copied alone into the template and imports nothing of ours.
"""
from __future__ import annotations

from typing import Any

from cloudtrail_es.core.redact import redact


class LoaderError(Exception):
    """Base class of every error this package raises on purpose.

    Its text has every secret this process knows blanked out (``redact``), wherever it goes:
    a usage line, a summary, a log line, or the exception the Lambda runtime reports.
    """

    def __str__(self) -> str:
        return redact(super().__str__())


class ConfigurationError(LoaderError):
    """A setting is missing or has a value we cannot use."""


class BadFilterRule(ConfigurationError):
    """An exclusion rule that cannot be understood; the message names it."""

    def __init__(self, rule: str, problem: str) -> None:
        self.rule = rule
        super().__init__(f"bad exclusion rule {rule!r}: {problem}")


class StateFileError(ConfigurationError):
    """The ``--state`` file cannot be read, or is not one this program wrote."""


class ClusterError(LoaderError):
    """The cluster refused a request as a whole, or could not be reached."""

    def __init__(self, message: str, response: Any = None) -> None:
        self.status = getattr(response, "status_code", None)
        self.body = _short_text(response)
        detail = f" (HTTP {self.status}: {self.body})" if response is not None else ""
        super().__init__(message + detail)


class ClusterUnreachable(ClusterError):
    """No HTTP answer: connection refused or reset, DNS failure, timeout."""


class ClusterDown(ClusterError):
    """The cluster has been unreachable, or answering 5xx, for longer than the breaker allows."""


class ClusterBlocked(ClusterError):
    """The cluster or index refuses writes (read-only, disk flood stage): retrying items is futile."""


class RetryDeadlineExceeded(ClusterError):
    """Retries of throttled or failed requests ran out of time; nothing was given up silently."""

    #: The retries made before giving up (a failed file's summary counts them).
    retries: int = 0


class SourceError(LoaderError):
    """The object could not be read (missing, access denied, network)."""


class BadLogFile(LoaderError):
    """The object is not a readable CloudTrail log file."""


class FileTooLarge(BadLogFile):
    """The file inflates to more than ``max_file_bytes`` (MAX_FILE_BYTES)."""


class DeadLetterError(LoaderError):
    """Undeliverable events could not be stored either: the file must fail."""


class DeadLetterUnreadable(LoaderError):
    """A dead-letter file cannot be read, or is not one this program wrote."""


class AccountingError(LoaderError):
    """Events read and events accounted for differ: a bug, never to be ignored."""


class UnknownEvent(LoaderError):
    """The handler was invoked with something it does not recognise."""


class NothingSelected(LoaderError):
    """The bucket, prefix, directory and filters select no CloudTrail log file at all."""


class DetectionError(LoaderError):
    """Rules could not be loaded or the detector could not run."""


class EngineUnsupported(DetectionError):
    """A rule needs a query feature this engine lacks."""


class FileFailed(LoaderError):
    """One CloudTrail log file could not be loaded completely."""

    #: Retries made for the file's events before it failed (its summary's ``retried``).
    retried: int = 0

    def __init__(self, bucket: str, key: str, reason: str) -> None:
        self.bucket = bucket
        self.key = key
        self.reason = reason
        super().__init__(f"s3://{bucket}/{key}: {reason}")


class LoadFailed(LoaderError):
    """Raised by the Lambda handler so that the invocation fails and is retried."""

    def __init__(self, failures: list[FileFailed]) -> None:
        self.failures = failures
        listed = "; ".join(str(failure) for failure in failures)
        super().__init__(f"{len(failures)} file(s) not fully loaded: {listed}")


class BatchFailed(LoaderError):
    """Every message of an SQS batch failed: the handler raises, so the batch is retried whole."""

    def __init__(self, reasons: dict[str, str]) -> None:
        self.reasons = reasons
        listed = "; ".join(f"{message_id}: {why}" for message_id, why in reasons.items())
        super().__init__(f"all {len(reasons)} message(s) failed: {listed}")


def reason_of(exc: BaseException) -> str:
    """What went wrong, for a log line or a summary: our errors say it themselves; any other
    exception is named by its type too (``KeyError: 'x'`` says more than ``'x'``)."""
    return str(exc) if isinstance(exc, LoaderError) else f"{type(exc).__name__}: {exc}"


def _short_text(response: Any, limit: int = 500) -> str:
    text = getattr(response, "text", "") or ""
    return text if len(text) <= limit else text[:limit] + "..."
