"""Helpers for integration tests: upload files, look into the real cluster."""
from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
from collections import Counter
from pathlib import Path

import requests

from fakes import MemorySource

__all__ = ["MemorySource", "assert_corpus_indexed", "ids_by_index", "refresh", "search", "services",
           "read_terminal", "upload"]

ROOT = Path(__file__).resolve().parents[2]


def services(action: str, port: int, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    """``scripts/services.sh ACTION opensearch`` for a search engine of the test's own on ``port``
    (``ENGINE``, ``NODES``... in ``env``); fails the test with the script's error output."""
    done = subprocess.run(["bash", str(ROOT / "scripts" / "services.sh"), action, "opensearch"],
                          env={**os.environ, "OPENSEARCH_PORT": str(port), **env},
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


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


def read_terminal(argv, env, cwd):
    """What a person would see on a terminal, and the exit code."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "cloudtrail_es", *argv], cwd=cwd, stdin=terminal,
                               stdout=terminal, stderr=terminal, close_fds=True, env=env)
    os.close(terminal)
    screen = b""
    while True:
        ready, _, _ = select.select([controller], [], [], 120)
        if not ready:
            break
        try:
            chunk = os.read(controller, 65536)
        except OSError:
            break
        if not chunk:
            break
        screen += chunk
    os.close(controller)
    return process.wait(60), screen.decode()
