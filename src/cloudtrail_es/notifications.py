"""Typed views of the events that invoke the Lambda, each yielding decoded (bucket, key)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import unquote_plus

from .errors import LoaderError
from .processor import ObjectRef


class UnknownEvent(LoaderError):
    """The handler was invoked with something it does not recognise."""


@dataclass(frozen=True)
class S3Notification:
    """An S3 event notification: ``{"Records": [{"eventSource": "aws:s3", ...}]}``.

    S3 URL-encodes object keys in notifications (``+`` for a space, ``%xx``).
    An ``s3:TestEvent`` (sent when a notification is configured) names no object.
    """

    body: Mapping[str, Any]

    @staticmethod
    def matches(event: Any) -> bool:
        if not isinstance(event, Mapping):
            return False
        if event.get("Event") == "s3:TestEvent":
            return True
        records = event.get("Records")
        return isinstance(records, list) and bool(records) and all(
            isinstance(r, Mapping) and r.get("eventSource") == "aws:s3" for r in records
        )

    @property
    def is_test_event(self) -> bool:
        return self.body.get("Event") == "s3:TestEvent"

    def objects(self) -> list[ObjectRef]:
        if self.is_test_event:
            return []
        return [
            ObjectRef(r["s3"]["bucket"]["name"], unquote_plus(r["s3"]["object"]["key"]))
            for r in self.body["Records"]
            if str(r.get("eventName", "ObjectCreated")).startswith("ObjectCreated")
        ]


def parse_notification(event: Any) -> S3Notification:
    if S3Notification.matches(event):
        return S3Notification(event)
    raise UnknownEvent(f"not an S3 event notification: {_describe(event)}")


def _describe(event: Any, limit: int = 300) -> str:
    try:
        text = json.dumps(event, default=str)
    except (TypeError, ValueError):
        text = repr(event)
    return text if len(text) <= limit else text[:limit] + "..."
