"""Helpers for integration tests: upload files, look into the real cluster."""
from __future__ import annotations

from collections import Counter

import requests


class MemorySource:
    """A source serving in-memory files by key (the S3 and local sources are tested elsewhere)."""

    def __init__(self, files):
        self.files = dict(files)

    def read(self, bucket, key):
        return self.files[key]


def upload(s3, bucket, files):
    for key, data in files:
        s3.put_object(Bucket=bucket, Key=key, Body=data)


def refresh(opensearch_url, prefix):
    requests.post(f"{opensearch_url}/{prefix}-*/_refresh", timeout=60).raise_for_status()


def ids_by_index(opensearch_url, prefix) -> dict[str, str]:
    """eventID -> index, for every document under the prefix (a scroll in index order)."""
    refresh(opensearch_url, prefix)
    found: dict[str, str] = {}
    page = requests.post(f"{opensearch_url}/{prefix}-*/_search?scroll=2m", timeout=60, json={
        "size": 5000, "_source": False, "sort": ["_doc"], "query": {"match_all": {}}}).json()
    while page["hits"]["hits"]:
        for hit in page["hits"]["hits"]:
            assert hit["_id"] not in found, f"{hit['_id']} indexed twice"
            found[hit["_id"]] = hit["_index"]
        page = requests.post(f"{opensearch_url}/_search/scroll", timeout=60, json={
            "scroll": "2m", "scroll_id": page["_scroll_id"]}).json()
    requests.delete(f"{opensearch_url}/_search/scroll", json={"scroll_id": page["_scroll_id"]},
                    timeout=60)
    return found


def assert_corpus_indexed(opensearch_url, prefix, expected):
    found = ids_by_index(opensearch_url, prefix)
    wanted = {event_id: f"{prefix}-{month}" for event_id, month in expected.items()}
    missing = sorted(set(wanted) - set(found))
    assert not missing, f"{len(missing)} events not indexed, e.g. {missing[:5]}"
    misplaced = {i: (found[i], wanted[i]) for i in wanted if found[i] != wanted[i]}
    assert not misplaced, f"{len(misplaced)} in the wrong index, e.g. {list(misplaced.items())[:3]}"
    assert len(found) == len(wanted)
    return Counter(found.values())


def search(opensearch_url, prefix, query):
    refresh(opensearch_url, prefix)
    response = requests.post(f"{opensearch_url}/{prefix}-*/_search",
                             json={"query": query, "size": 100}, timeout=60)
    response.raise_for_status()
    return response.json()["hits"]["hits"]
