"""Where CloudTrail log files come from: S3 objects read and listed with an injected client."""
from __future__ import annotations

from typing import Any, Iterator

from cloudtrail_es.core.errors import SourceError

__all__ = ["ObjectBytes", "S3Source", "SourceError"]


class ObjectBytes(bytes):
    """An object's bytes and when it was last modified (epoch seconds), for the lag metrics."""

    last_modified: float | None = None

    @classmethod
    def of(cls, data: bytes, last_modified: float | None) -> "ObjectBytes":
        blob = cls(data)
        blob.last_modified = last_modified
        return blob


class S3Source:
    """Reads and lists objects with an injected boto3 S3 client."""

    def __init__(self, s3_client: Any) -> None:
        self.s3_client = s3_client

    def read(self, bucket: str, key: str) -> bytes:
        try:
            answer = self.s3_client.get_object(Bucket=bucket, Key=key)
            modified = answer.get("LastModified")
            return ObjectBytes.of(answer["Body"].read(), modified.timestamp() if modified else None)
        except Exception as exc:  # botocore raises many unrelated types; all mean "unreadable"
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            raise SourceError(f"cannot read object ({code or type(exc).__name__}: {exc})") from exc

    def list_keys(self, bucket: str, prefix: str) -> Iterator[str]:
        paginator = self.s3_client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for entry in page.get("Contents", []):
                yield entry["Key"]
