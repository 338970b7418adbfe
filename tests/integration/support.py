"""Helpers for integration tests: upload files, look into the real cluster."""
from __future__ import annotations

import contextlib
import gzip
import json
import os
import pty
import select
import subprocess
import sys
import threading
import uuid
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import boto3
import requests

from fakes import MemorySource
from cloudtrail_es.read.keys import index_name_for
from cloudtrail_es.read.sources import S3Source

__all__ = ["Gate", "MemorySource", "assert_corpus_indexed", "gated_loads", "ids_by_index", "months_by_event",
           "moto_source", "read_terminal", "refresh", "search", "services", "trail_files", "upload",
           "count", "indexed_count", "leaves", "value_at"]

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


def trail_files(trail: Path) -> list[tuple[str, bytes]]:
    """(key, bytes) of every log file of a trail directory, keyed as CloudTrail delivers them."""
    files = sorted((trail / "AWSLogs").rglob("*.json.gz"))
    return [(str(path.relative_to(trail)), path.read_bytes()) for path in files]


def months_by_event(files: Iterable[tuple[str, bytes]]) -> dict[str, str]:
    """eventID -> index suffix (YYYY-MM from the file name) for every event of ``files``."""
    return {event["eventID"]: index_name_for(key, "")[1:]
            for key, data in files for event in json.loads(gzip.decompress(data))["Records"]}


def moto_source(moto_url: str, files: Mapping[str, bytes] | Iterable[tuple[str, bytes]]
                ) -> tuple[S3Source, str]:
    """A bucket of its own on moto server holding ``files`` (key -> bytes), and the S3 source
    that reads it: the loader reads the files as it reads them in AWS."""
    s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    bucket = f"trail-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    upload(s3, bucket, files.items() if isinstance(files, Mapping) else files)
    return S3Source(s3), bucket


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


class Gate:
    """Lets the first ``open_for`` groups of files load; holds every later group until released."""

    def __init__(self, open_for: int, hold_at_most: float) -> None:
        self.open_for = open_for
        self.hold_at_most = hold_at_most
        self.lock = threading.Lock()
        self.started = self.finished = 0
        self.first_groups_done = threading.Event()
        self.released = threading.Event()

    def around(self, process_files):
        def gated(processor, refs, deadline):
            with self.lock:
                self.started += 1
                held = self.started > self.open_for
            if held:
                assert self.released.wait(self.hold_at_most), "the test never released the gate"
            try:
                return process_files(processor, refs, deadline)
            finally:
                with self.lock:
                    self.finished += 1
                    if self.finished >= self.open_for:
                        self.first_groups_done.set()
        return gated


@contextlib.contextmanager
def gated_loads(monkeypatch, open_for: int, hold_at_most: float = 1800) -> Iterator[Gate]:
    """Every ``Processor.process_files`` (a backfill group, or a batch) behind a ``Gate``: a test
    waits for ``gate.first_groups_done``, does what must happen mid-load (a node killed, the
    cluster stopped), then sets ``gate.released``: the load can neither end before that nor
    skip it. Released at the end whatever happens, so no worker is left waiting."""
    from cloudtrail_es.write.processor import Processor

    gate = Gate(open_for, hold_at_most)
    monkeypatch.setattr(Processor, "process_files", gate.around(Processor.process_files))
    try:
        yield gate
    finally:
        gate.released.set()


def count(cluster, query) -> int:
    """How many documents of ``cluster`` ((url, index pattern)) the query matches."""
    url, pattern = cluster
    response = requests.post(f"{url}/{pattern}/_count", json={"query": query}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["count"]


def indexed_count(url, prefix) -> int:
    """The documents under ``prefix`` now (0 while the cluster does not answer)."""
    try:
        requests.post(f"{url}/{prefix}-*/_refresh", timeout=10)
        return requests.get(f"{url}/{prefix}-*/_count", timeout=10).json().get("count", 0)
    except (requests.RequestException, ValueError):
        return 0


def leaves(value, key=""):
    """(key, scalar) at any depth; a list's elements belong to the key holding the list."""
    if isinstance(value, dict):
        for child_key, child in value.items():
            yield from leaves(child, child_key)
    elif isinstance(value, list):
        for child in value:
            yield from leaves(child, key)
    elif value is not None:
        yield key, value


def value_at(event, path: str):
    """The value at a dotted ``path`` of an event (None where the path leaves its objects)."""
    value = event
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value
