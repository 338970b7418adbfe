"""Where events the cluster will not take are kept, with why, until ``redrive`` sends them again.

A dead-letter file is gzipped NDJSON, one record per event:
``{"reason", "status", "error", "bucket", "key", "index", "doc_id", "failed_at", "event"}``
where ``event`` is the original CloudTrail event, so that a redrive goes
through the same transform as the first attempt.

A file's records are written to a ``Spool`` as each event is decided (gzipped, in memory up
to ``SPOOL_MEMORY_BYTES``, then in a temporary file), so that a file's memory does not grow
with the number of its events the cluster rejects; the spool is what is stored.
"""
from __future__ import annotations

import gzip
import json
import os
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Protocol

from cloudtrail_es.core import deepjson
from cloudtrail_es.documents import transform
from cloudtrail_es.core.errors import DeadLetterError, DeadLetterUnreadable
from cloudtrail_es.core.redact import redact

__all__ = ["DeadLetterError", "DeadLetterUnreadable", "DeadLetters", "DeadLetterStore",
           "LocalDeadLetters", "S3DeadLetters", "Spool", "record", "encode", "decode", "file_name"]


#: What a record must hold for a redrive: where it came from (and its event, or its head).
RECORD_FIELDS = {"bucket": str, "key": str, "index": str}


#: A spool is held in memory up to this many gzipped bytes, then moves to a temporary file.
SPOOL_MEMORY_BYTES = 1 << 20


class DeadLetters(Protocol):
    def put(self, source_key: str, records: Iterable[dict[str, Any]]) -> str: ...


class DeadLetterStore(Protocol):
    """Dead-letter files as redrive reads and rewrites them."""

    def files(self) -> Iterator[str]: ...

    def read(self, name: str) -> list[dict[str, Any]]: ...

    def replace(self, name: str, records: list[dict[str, Any]]) -> None: ...


def record(*, reason: str, status: int, error: Any, bucket: str, key: str, index: str,
           doc_id: str, event: dict[str, Any] | None, head: str | None = None) -> dict[str, Any]:
    """One dead-lettered event; one too large to hold keeps only the ``head`` of its text."""
    return {
        "reason": reason, "status": status, "error": error, "bucket": bucket, "key": key,
        "index": index, "doc_id": doc_id,
        "failed_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **({"event": event} if event is not None else {"event_head": head}),
    }


def encode(records: Iterable[dict[str, Any]]) -> bytes:
    """Gzipped NDJSON of any records: at any depth, and a record holding lone surrogates
    (not UTF-8) has them replaced with U+FFFD and says so in ``transform.REPAIRED_REASON``."""
    return gzip.compress(b"".join(_line(r) for r in records))


def _line(record: dict[str, Any]) -> bytes:
    return transform.utf8_json(_plain(record))[0] + b"\n"


def _plain(record: dict[str, Any]) -> dict[str, Any]:
    """The record with a cluster error that is not JSON (an exception, ...) as its text, and
    any secret this process knows blanked out of the reason and the error (never the event)."""
    error = record.get("error")
    reason = record.get("reason")
    if isinstance(reason, str) and redact(reason) != reason:
        record = {**record, "reason": redact(reason)}
    if error is None or isinstance(error, (int, float, bool)):
        return record
    if not isinstance(error, (str, dict, list)):
        record = {**record, "error": str(error)}
        error = record["error"]
    text = error if isinstance(error, str) else json.dumps(error, default=str)
    return {**record, "error": redact(text)} if redact(text) != text else record


class Spool:
    """One file's dead-letter records as they are decided: gzipped NDJSON, in memory up to
    ``SPOOL_MEMORY_BYTES`` then in a temporary file; ``first`` keeps a few for the error line.

    Iterating reads the records back (the spool is finished then: no more appends).
    """

    def __init__(self, keep: int = 10) -> None:
        self._file: IO[bytes] | None = None  # made at the first record: most files have none
        self._gzip: gzip.GzipFile | None = None
        self._keep = keep
        self.count = 0
        self.first: list[dict[str, Any]] = []

    def append(self, record: dict[str, Any]) -> None:
        if self._file is None:
            self._file = tempfile.SpooledTemporaryFile(SPOOL_MEMORY_BYTES)
            self._gzip = gzip.GzipFile(fileobj=self._file, mode="wb")
        if self._gzip is None:
            raise ValueError("dead-letter spool already finished")
        self._gzip.write(_line(record))
        self.count += 1
        if len(self.first) < self._keep:
            self.first.append(record)

    def __len__(self) -> int:
        return self.count

    def __bool__(self) -> bool:
        return self.count > 0

    def gzipped(self) -> IO[bytes]:
        """The dead-letter file's bytes (gzipped NDJSON), from the start."""
        if self._file is None:
            self._file = tempfile.SpooledTemporaryFile(SPOOL_MEMORY_BYTES)
            self._file.write(gzip.compress(b""))
        if self._gzip is not None:
            self._gzip.close()
            self._gzip = None
        self._file.seek(0)
        return self._file

    def __iter__(self) -> Iterator[dict[str, Any]]:
        with gzip.GzipFile(fileobj=self.gzipped(), mode="rb") as lines:
            for line in lines:
                yield _loads(line.decode("utf-8"))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def gzipped(records: Iterable[dict[str, Any]]) -> IO[bytes]:
    """A spool's own bytes, or other records spooled now: what a dead letter stores."""
    if not isinstance(records, Spool):
        spool = Spool(keep=0)
        for entry in records:
            spool.append(entry)
        records = spool
    return records.gzipped()


def decode(data: bytes, name: str = "dead-letter file") -> list[dict[str, Any]]:
    """The records of a dead-letter file, at any depth; DeadLetterUnreadable if it is not one we
    wrote. Lines split at ``\n`` only (a record may hold U+2028)."""
    try:
        lines = gzip.decompress(data).decode("utf-8").split("\n")
    except (OSError, EOFError, ValueError) as exc:  # bad gzip, truncated, not UTF-8
        raise DeadLetterUnreadable(f"{name}: not gzipped UTF-8 text: {exc}") from exc
    records = []
    for number, line in enumerate(lines, 1):
        if not line:
            continue
        try:
            entry = _loads(line)
        except ValueError as exc:
            raise DeadLetterUnreadable(f"{name}: line {number} is not JSON: {exc}") from exc
        wrong = _wrong_fields(entry)
        if wrong:
            raise DeadLetterUnreadable(
                f"{name}: line {number} is not a dead-letter record (missing or wrong: {', '.join(wrong)})")
        records.append(entry)
    return records


def _wrong_fields(entry: Any) -> list[str]:
    """The fields of a would-be record that are missing or of the wrong type."""
    if not isinstance(entry, dict):
        return [*RECORD_FIELDS, "event"]
    wrong = [field for field, kind in RECORD_FIELDS.items() if not isinstance(entry.get(field), kind)]
    if not isinstance(entry.get("event"), dict) and not isinstance(entry.get("event_head"), str):
        wrong.append("event")
    return wrong


def _loads(line: str) -> Any:
    try:
        return json.loads(line)
    except RecursionError:
        return deepjson.loads(line)


def file_name(source_key: str) -> str:
    """``YYYY/MM/DD/<source file name>-<unique>.ndjson.gz``, dated when it was written."""
    stem = source_key.rsplit("/", 1)[-1].removesuffix(".gz").removesuffix(".json") or "events"
    return f"{datetime.now(timezone.utc):%Y/%m/%d}/{stem}-{uuid.uuid4().hex[:12]}.ndjson.gz"


class S3DeadLetters:
    """``s3://DEAD_LETTER_BUCKET/DEAD_LETTER_PREFIX...`` (the Lambda's)."""

    def __init__(self, s3_client: Any, bucket: str, prefix: str = "") -> None:
        self._s3 = s3_client
        self.bucket = bucket
        self.prefix = prefix

    def put(self, source_key: str, records: Iterable[dict[str, Any]]) -> str:
        key = self.prefix + file_name(source_key)
        try:
            self._s3.put_object(Bucket=self.bucket, Key=key, Body=gzipped(records),
                                ContentType="application/x-ndjson", ContentEncoding="gzip")
        except Exception as exc:  # any failure to store means the events are not safe
            raise DeadLetterError(f"cannot write s3://{self.bucket}/{key}: {exc}") from exc
        return f"s3://{self.bucket}/{key}"

    def files(self) -> Iterator[str]:
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for entry in page.get("Contents", []):
                if entry["Key"].endswith(".ndjson.gz"):
                    yield entry["Key"]

    def read(self, name: str) -> list[dict[str, Any]]:
        try:
            data = self._s3.get_object(Bucket=self.bucket, Key=name)["Body"].read()
        except Exception as exc:  # botocore's errors: whatever it is, this file is skipped
            raise DeadLetterUnreadable(f"cannot read s3://{self.bucket}/{name}: {exc}") from exc
        return decode(data, f"s3://{self.bucket}/{name}")

    def replace(self, name: str, records: list[dict[str, Any]]) -> None:
        """Keep only ``records`` in the file (a PUT replaces an object whole); remove it when none
        are left. DeadLetterError naming the object when S3 refuses."""
        try:
            if records:
                self._s3.put_object(Bucket=self.bucket, Key=name, Body=gzipped(records),
                                    ContentType="application/x-ndjson", ContentEncoding="gzip")
            else:
                self._s3.delete_object(Bucket=self.bucket, Key=name)
        except Exception as exc:  # botocore's errors: this file is left as it was
            action = "rewrite" if records else "delete"
            raise DeadLetterError(f"cannot {action} s3://{self.bucket}/{name}: {exc}") from exc


class LocalDeadLetters:
    """A local directory (the CLI's)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def put(self, source_key: str, records: Iterable[dict[str, Any]]) -> str:
        path = self.directory / file_name(source_key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, gzipped(records))
        except OSError as exc:
            raise DeadLetterError(f"cannot write {path}: {exc}") from exc
        return str(path)

    def files(self) -> Iterator[str]:
        yield from sorted(str(p) for p in self.directory.rglob("*.ndjson.gz"))

    def read(self, name: str) -> list[dict[str, Any]]:
        try:
            data = Path(name).read_bytes()
        except OSError as exc:
            raise DeadLetterUnreadable(f"cannot read {name}: {exc}") from exc
        return decode(data, name)

    def replace(self, name: str, records: list[dict[str, Any]]) -> None:
        """Keep only ``records`` in the file (rewritten atomically); remove it when none are left."""
        if records:
            write_atomically(Path(name), gzipped(records))
        else:
            Path(name).unlink()


def write_atomically(path: Path, data: IO[bytes]) -> None:
    """``data`` in ``path``, or ``path`` as it was: written beside it, synced, then renamed
    over it, so that a write cut short (disk full, Ctrl-C, a crash) leaves the old file whole."""
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        with partial.open("wb") as out:
            while block := data.read(1 << 20):
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
