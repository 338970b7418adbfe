"""Where CloudTrail log files come from, and how their bytes become events."""
from __future__ import annotations

import codecs
import gzip
import io
import json
import re
import zlib
from typing import Any, Iterator

from .errors import BadLogFile, LoaderError

GZIP_MAGIC = b"\x1f\x8b"


class SourceError(LoaderError):
    """The object could not be read (missing, access denied, network)."""


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


def events_in(data: bytes) -> list[dict[str, Any]]:
    """All the ``Records`` of a CloudTrail log file (see ``iter_events``)."""
    return list(iter_events(data))


READ_SIZE = 1 << 20
_RECORDS_START = re.compile(r'\s*\{\s*"Records"\s*:\s*\[')
_WHITESPACE = re.compile(r"\s*")


def iter_events(data: bytes) -> Iterator[dict[str, Any]]:
    """The events of a CloudTrail log file, gzipped or not (told by its magic bytes), one by one.

    A file shaped as CloudTrail writes it (``{"Records":[...]}``) is decoded an event at a
    time from a 1 MiB window, so a file of 100,000 events never sits in memory whole.
    Anything else is parsed whole and checked. Errors raise BadLogFile, possibly after
    some events were yielded.
    """
    chunks = _text_chunks(data)
    buffer = next(chunks, "")
    start = _RECORDS_START.match(buffer)
    if start is None:
        yield from _parse_whole(buffer + "".join(chunks))
        return
    decoder = json.JSONDecoder()
    pos, first, exhausted = start.end(), True, False
    while True:
        if not exhausted and len(buffer) - pos < READ_SIZE // 2:
            buffer, pos, exhausted = _refill(buffer, pos, chunks)
            if not exhausted:
                continue
        pos = _WHITESPACE.match(buffer, pos).end()
        if pos < len(buffer) and buffer[pos] == "]":
            if buffer[pos + 1:].strip() + "".join(chunks).strip() not in ("}",):
                raise BadLogFile("not a CloudTrail log file: unexpected content after \"Records\"")
            return
        if not first:
            if pos >= len(buffer) and not exhausted:
                continue
            if pos >= len(buffer):
                raise BadLogFile("not valid JSON: the file ends inside \"Records\"")
            if buffer[pos] != ",":
                raise BadLogFile(f"not valid JSON: expected ',' or ']' at character {pos}")
            pos = _WHITESPACE.match(buffer, pos + 1).end()
        try:
            event, end = decoder.raw_decode(buffer, pos)
        except (ValueError, RecursionError) as exc:
            if exhausted:
                raise BadLogFile(f"not valid JSON: {exc}") from exc
            buffer, pos, exhausted = _refill(buffer, pos, chunks)
            continue
        if not isinstance(event, dict):
            raise BadLogFile("not a CloudTrail log file: a \"Records\" element is not an object")
        first, pos = False, end
        yield event


def _refill(buffer: str, pos: int, chunks: Iterator[str]) -> tuple[str, int, bool]:
    """The unread rest of the window plus the next piece; or, at the end, (buffer, pos, True)."""
    more = next(chunks, None)
    if more is None:
        return buffer, pos, True
    return buffer[pos:] + more, 0, False


def _text_chunks(data: bytes) -> Iterator[str]:
    """The file's text in ~1 MiB pieces, gunzipped when it starts with gzip's magic bytes."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    stream = gzip.GzipFile(fileobj=io.BytesIO(data)) if data[:2] == GZIP_MAGIC else io.BytesIO(data)
    while True:
        try:
            raw = stream.read(READ_SIZE)
        except (OSError, EOFError, zlib.error) as exc:
            raise BadLogFile(f"corrupt gzip data: {exc}") from exc
        try:
            text = decoder.decode(raw, final=not raw)
        except UnicodeDecodeError as exc:
            raise BadLogFile(f"not valid JSON: {exc}") from exc
        if text:
            yield text
        if not raw:
            return


def _parse_whole(text: str) -> list[dict[str, Any]]:
    try:
        content = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise BadLogFile(f"not valid JSON: {exc}") from exc
    records = content.get("Records") if isinstance(content, dict) else None
    if not isinstance(records, list):
        raise BadLogFile("not a CloudTrail log file: no top-level \"Records\" array")
    if not all(isinstance(record, dict) for record in records):
        raise BadLogFile("not a CloudTrail log file: a \"Records\" element is not an object")
    return records
