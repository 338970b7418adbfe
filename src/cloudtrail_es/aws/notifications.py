"""Typed views of whatever invokes the Lambda, each yielding decoded (bucket, key) pairs.

| shape | how it arrives | keys |
|---|---|---|
| S3 event notification | directly, in an SNS message, or in an SQS body | URL-encoded |
| CloudTrail's SNS delivery message (``s3Bucket``, ``s3ObjectKey``) | in SNS, or SQS | plain |
| EventBridge "Object Created" | directly, or in an SQS body | plain |
| EventBridge "Scheduled Event", or ``{"cloudtrail_es": "retention"}`` | directly | (retention) |
| ``{"cloudtrail_es": "detect"}`` (the DetectionSchedule rule's input) | directly | (detection) |
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Union
from urllib.parse import unquote_plus

from cloudtrail_es.core.errors import UnknownEvent, reason_of
from cloudtrail_es.core.refs import ObjectRef

__all__ = ["CloudTrailDelivery", "EventBridgeObjectCreated", "Invocation", "NotUnderstood",
           "ObjectSource", "RetentionRequest", "S3Notification", "SnsBatch", "SqsBatch",
           "SqsMessage", "Understood", "UnknownEvent", "describe", "parse_invocation"]


@dataclass(frozen=True)
class S3Notification:
    """``{"Records": [{"eventSource": "aws:s3", "s3": {...}}]}``; an ``s3:TestEvent`` names none."""

    body: Mapping[str, Any]

    @staticmethod
    def matches(event: Any) -> bool:
        return (isinstance(event, Mapping) and event.get("Event") == "s3:TestEvent") or \
            _records_from(event, "eventSource", "aws:s3")

    @property
    def is_test_event(self) -> bool:
        return self.body.get("Event") == "s3:TestEvent"

    def objects(self) -> list[ObjectRef]:
        if self.is_test_event:
            return []
        return [
            ObjectRef(_text(r, "s3", "bucket", "name"), unquote_plus(_text(r, "s3", "object", "key")))
            for r in self.body["Records"]
            if str(r.get("eventName", "ObjectCreated")).startswith("ObjectCreated")
        ]


@dataclass(frozen=True)
class CloudTrailDelivery:
    """The message CloudTrail publishes to its SNS topic for each file it delivers."""

    body: Mapping[str, Any]

    @staticmethod
    def matches(event: Any) -> bool:
        return isinstance(event, Mapping) and isinstance(event.get("s3Bucket"), str) and \
            isinstance(event.get("s3ObjectKey"), list)

    def objects(self) -> list[ObjectRef]:
        keys = self.body["s3ObjectKey"]
        if not all(isinstance(key, str) for key in keys):
            raise UnknownEvent(f"s3ObjectKey holds something other than keys: {describe(keys)}")
        return [ObjectRef(self.body["s3Bucket"], key) for key in keys]


@dataclass(frozen=True)
class EventBridgeObjectCreated:
    body: Mapping[str, Any]

    @staticmethod
    def matches(event: Any) -> bool:
        return isinstance(event, Mapping) and event.get("source") == "aws.s3" and \
            event.get("detail-type") == "Object Created"

    def objects(self) -> list[ObjectRef]:
        return [ObjectRef(_text(self.body, "detail", "bucket", "name"),
                          _text(self.body, "detail", "object", "key"))]


@dataclass(frozen=True)
class RetentionRequest:
    """A scheduled event: delete the monthly indexes past their retention."""

    @staticmethod
    def matches(event: Any) -> bool:
        return isinstance(event, Mapping) and (
            event.get("cloudtrail_es") == "retention"
            or (event.get("source") == "aws.events" and event.get("detail-type") == "Scheduled Event"))


@dataclass(frozen=True)
class DetectionRequest:
    """The detection schedule: run the packaged Sigma rules over the latest events."""

    @staticmethod
    def matches(event: Any) -> bool:
        return isinstance(event, Mapping) and event.get("cloudtrail_es") == "detect"


ObjectSource = Union[S3Notification, CloudTrailDelivery, EventBridgeObjectCreated]


@dataclass(frozen=True)
class Understood:
    """An SQS message naming these objects (none for an ``s3:TestEvent``)."""

    message_id: str
    objects: list[ObjectRef]


@dataclass(frozen=True)
class NotUnderstood:
    """An SQS message we cannot use, and why."""

    message_id: str
    reason: str


SqsMessage = Union[Understood, NotUnderstood]


@dataclass(frozen=True)
class SqsBatch:
    messages: list[SqsMessage]

    @staticmethod
    def matches(event: Any) -> bool:
        return _records_from(event, "eventSource", "aws:sqs")


@dataclass(frozen=True)
class SnsBatch:
    sources: list[ObjectSource]

    @staticmethod
    def matches(event: Any) -> bool:
        return _records_from(event, "EventSource", "aws:sns")


def _records_from(event: Any, field: str, source: str) -> bool:
    """Whether ``event`` is a non-empty ``Records`` list, every record from ``source``."""
    records = event.get("Records") if isinstance(event, Mapping) else None
    return isinstance(records, list) and bool(records) and all(
        isinstance(r, Mapping) and r.get(field) == source for r in records)


Invocation = Union[S3Notification, CloudTrailDelivery, EventBridgeObjectCreated, SqsBatch,
                   SnsBatch, RetentionRequest, DetectionRequest]


def parse_invocation(event: Any) -> Invocation:
    """What the Lambda was invoked with; UnknownEvent names anything else."""
    if SqsBatch.matches(event):
        return SqsBatch([_sqs_message(record) for record in event["Records"]])
    if SnsBatch.matches(event):
        return SnsBatch([_inner_source(_json(_field(r, "Sns", "Message"))) for r in event["Records"]])
    if DetectionRequest.matches(event):
        return DetectionRequest()
    if RetentionRequest.matches(event):
        return RetentionRequest()
    return _object_source(event)


def _object_source(event: Any) -> ObjectSource:
    for kind in (S3Notification, CloudTrailDelivery, EventBridgeObjectCreated):
        if kind.matches(event):
            return kind(event)
    raise UnknownEvent(f"not a notification of a CloudTrail file: {describe(event)}")


def _inner_source(message: Any) -> ObjectSource:
    """An SNS or SQS payload: a notification, possibly inside an SNS envelope."""
    if isinstance(message, Mapping) and "Message" in message and (
            "TopicArn" in message or message.get("Type") == "Notification"):
        message = _json(message["Message"])
    return _object_source(message)


def _sqs_message(record: Mapping[str, Any]) -> SqsMessage:
    """One message, understood or not: whatever its body holds, it never fails its batch."""
    message_id = str(record.get("messageId", ""))
    try:
        return Understood(message_id, _inner_source(_json(record.get("body"))).objects())
    except Exception as exc:  # each message is its own error boundary
        reason = reason_of(exc)
        return NotUnderstood(message_id, reason)


def _field(value: Any, *path: str) -> Any:
    """``value[path[0]][path[1]]...``, or UnknownEvent naming what is missing."""
    found = value
    for name in path:
        if not isinstance(found, Mapping) or name not in found:
            raise UnknownEvent(f"notification without {'.'.join(path)}: {describe(value)}")
        found = found[name]
    return found


def _text(value: Any, *path: str) -> str:
    found = _field(value, *path)
    if not isinstance(found, str):
        raise UnknownEvent(f"notification whose {'.'.join(path)} is not a string: {describe(value)}")
    return found


def _json(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than any notification
        raise UnknownEvent(f"message is not JSON (or nested too deep): {describe(text)}") from None


def describe(event: Any, limit: int = 300) -> str:
    """The start of ``event``'s text, whatever it holds and however deep."""
    try:
        text = event if isinstance(event, str) else json.dumps(event, default=str)
    except RecursionError:
        text = f"a {type(event).__name__} nested too deep to show"
    except (TypeError, ValueError):
        text = repr(event)
    return text if len(text) <= limit else text[:limit] + "..."
