"""Where CloudTrail log files come from, and how their bytes become events."""
from __future__ import annotations

import gzip
import json
import zlib
from typing import Any, Iterator

from .errors import BadLogFile, LoaderError

GZIP_MAGIC = b"\x1f\x8b"


class SourceError(LoaderError):
    """The object could not be read (missing, access denied, network)."""


class S3Source:
    """Reads and lists objects with an injected boto3 S3 client."""

    def __init__(self, s3_client: Any) -> None:
        self.s3_client = s3_client

    def read(self, bucket: str, key: str) -> bytes:
        try:
            return self.s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as exc:  # botocore raises many unrelated types; all mean "unreadable"
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            raise SourceError(f"cannot read object ({code or type(exc).__name__}: {exc})") from exc

    def list_keys(self, bucket: str, prefix: str) -> Iterator[str]:
        paginator = self.s3_client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for entry in page.get("Contents", []):
                yield entry["Key"]


def events_in(data: bytes) -> list[dict[str, Any]]:
    """The ``Records`` of a CloudTrail log file, gzipped or not (told by its magic bytes)."""
    if data[:2] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise BadLogFile(f"corrupt gzip data: {exc}") from exc
    try:
        content = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadLogFile(f"not valid JSON: {exc}") from exc
    records = content.get("Records") if isinstance(content, dict) else None
    if not isinstance(records, list):
        raise BadLogFile("not a CloudTrail log file: no top-level \"Records\" array")
    if not all(isinstance(record, dict) for record in records):
        raise BadLogFile("not a CloudTrail log file: a \"Records\" element is not an object")
    return records
