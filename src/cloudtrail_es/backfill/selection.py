"""Which files a backfill loads: filters on the CloudTrail key layout, and listing by it.

CloudTrail writes ``[PREFIX/]AWSLogs/[o-ORG/]ACCOUNT/CloudTrail/REGION/YYYY/MM/DD/FILE``, and
Insights files under ``ACCOUNT/CloudTrail-Insight/`` the same way.
With filters, listing descends that layout and lists only the account, region and
day (or whole-month) prefixes the filters leave, in parallel, instead of the bucket.
Whatever the listing, every file name is checked against the filters again.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Iterable, Iterator

from cloudtrail_es.read.keys import is_log_file_key, parse_log_file_key
from cloudtrail_es.core.errors import SourceError
from cloudtrail_es.core.refs import ObjectRef

LISTING_THREADS = 8
#: The folders under an account that hold events (``CloudTrail-Digest/`` holds none).
EVENT_FOLDERS = ("CloudTrail/", "CloudTrail-Insight/")


@dataclass(frozen=True)
class Filters:
    start: date | None = None
    end: date | None = None
    accounts: frozenset[str] | None = None
    regions: frozenset[str] | None = None

    def accepts(self, key: str) -> bool:
        name = parse_log_file_key(key)
        if name is None:
            return False
        return (
            (self.start is None or name.day >= self.start)
            and (self.end is None or name.day <= self.end)
            and (self.accounts is None or name.account in self.accounts)
            and (self.regions is None or name.region in self.regions)
        )

    def wants(self, key: str) -> bool:
        """Log files the filters accept, and any other object (the run reports it as skipped)."""
        return self.accepts(key) or not is_log_file_key(key)

    @property
    def narrows(self) -> bool:
        return any(v is not None for v in (self.start, self.end, self.accounts, self.regions))

    def date_prefixes(self) -> list[str]:
        """``YYYY/MM/`` for months wholly inside the range, ``YYYY/MM/DD/`` for the other days."""
        if self.start is None or self.end is None:
            return [""]
        prefixes, day = [], self.start
        while day <= self.end:
            month_end = (day.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
            if day.day == 1 and month_end <= self.end:
                prefixes.append(f"{day:%Y/%m}/")
                day = month_end + timedelta(days=1)
            else:
                prefixes.append(f"{day:%Y/%m/%d}/")
                day += timedelta(days=1)
        return prefixes


class S3Listing:
    """Lists CloudTrail log files under an S3 prefix, narrowed by the filters."""

    def __init__(self, s3_client: Any) -> None:
        self._s3 = s3_client

    def objects(self, bucket: str, prefix: str, filters: Filters) -> Iterator[ObjectRef]:
        prefixes = self.plan(bucket, prefix, filters)
        with ThreadPoolExecutor(LISTING_THREADS) as pool:
            for listed in pool.map(lambda p: list(self._list(bucket, p)), prefixes):
                for key, size in listed:
                    if filters.wants(key):
                        yield ObjectRef(bucket, key, size)

    def plan(self, bucket: str, prefix: str, filters: Filters) -> list[str]:
        """The prefixes to list in full: as deep in the layout as the filters allow."""
        head, found, tail = prefix.partition("AWSLogs/")
        if not filters.narrows or (found and tail) or (not found and prefix and not prefix.endswith("/")):
            return [prefix]
        root = prefix if found else prefix + "AWSLogs/"
        children = self._children(bucket, root)
        if not children:
            return [prefix]
        accounts = []
        for child in children:
            name = child[len(root):-1]
            if name.startswith("o-"):
                accounts += [c for c in self._children(bucket, child)]
            else:
                accounts.append(child)
        accounts = [a for a in accounts
                    if filters.accounts is None or a.rstrip("/").rsplit("/", 1)[-1] in filters.accounts]
        folders = [account + folder for account in accounts for folder in EVENT_FOLDERS]
        with ThreadPoolExecutor(LISTING_THREADS) as pool:
            regions = [r for found_regions in pool.map(
                lambda f: self._children(bucket, f), folders) for r in found_regions
                if filters.regions is None or r.rstrip("/").rsplit("/", 1)[-1] in filters.regions]
        return [region + day for region in regions for day in filters.date_prefixes()]

    def _children(self, bucket: str, prefix: str) -> list[str]:
        paginator = self._s3.get_paginator("list_objects_v2")
        return [c["Prefix"] for page in paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/")
                for c in page.get("CommonPrefixes", [])]

    def _list(self, bucket: str, prefix: str) -> Iterator[tuple[str, int]]:
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for entry in page.get("Contents", []):
                yield entry["Key"], entry.get("Size", 0)


class LocalSource:
    """A directory of CloudTrail files, as ``aws s3 sync`` leaves them. ``bucket`` is the root."""

    def read(self, bucket: str, key: str) -> bytes:
        try:
            return (Path(bucket) / key).read_bytes()
        except OSError as exc:
            raise SourceError(f"cannot read file ({exc})") from exc

    @staticmethod
    def objects(root: str, filters: Filters) -> Iterable[ObjectRef]:
        found = []
        for directory, subdirectories, files in os.walk(root):
            subdirectories.sort()
            for name in sorted(files):
                path = os.path.join(directory, name)
                key = os.path.relpath(path, root).replace(os.sep, "/")
                if filters.wants(key):
                    found.append(ObjectRef(root, key, os.path.getsize(path)))
        return found
