"""Test fakes, typed and imported as ``import fakes``: an in-memory source, a scripted cluster,
a Lambda context, and builders of trail files. One of each, for every test.

``ScriptedCluster`` answers what the loader asks of a cluster (``GET /``, index creation,
health and settings) as a healthy OpenSearch would, and each ``_bulk`` request with the
next entry of its script:

- ``"ok"`` (or nothing left): every item 201;
- an ``int``: the whole request answered with that status (429, 413, 502...);
- a ``list`` of statuses: item by item (missing ones 201);
- a ``dict`` doc id -> status: those items, the others 201;
- in both, a status may be a ``(status, error)`` pair: that item answered with that error;
- an ``Exception``: raised, as ``ClusterUnreachable`` for a reset connection.

``reject`` (doc id, document) -> status or None rejects items whatever the script says
(a mapping conflict that the degraded form avoids, say). Documents answered 2xx are kept
in ``documents`` ((index, id) -> source), so a test sees what landed.
"""
from __future__ import annotations

import gzip
import json
from typing import Any, Callable, Iterable, Iterator

from cloudtrail_es.core import deepjson
from cloudtrail_es.core.config import Settings
from cloudtrail_es.core.errors import SourceError
from cloudtrail_es.write.processor import Processor, create_processor
from cloudtrail_es.core.retry import Backoff

DAY = "AWSLogs/111122223333/CloudTrail/eu-west-1/2024/01/15/"


def log_key(name: str) -> str:
    """A CloudTrail log file key (index ``<prefix>-2024-01``); ``name`` is its unique suffix."""
    return f"{DAY}111122223333_CloudTrail_eu-west-1_20240115T0910Z_{name}.json.gz"


def event(event_id: str, **fields: Any) -> dict[str, Any]:
    return {"eventVersion": "1.08", "eventID": event_id, "eventName": "GetObject",
            "eventTime": "2024-01-15T09:10:00Z", "eventSource": "s3.amazonaws.com", **fields}


def trail_file(events: Iterable[Any]) -> bytes:
    """A gzipped log file of ``events``, at any depth (``json.dumps`` escapes lone surrogates)."""
    def text(event: Any) -> str:
        try:
            return json.dumps(event)
        except RecursionError:
            return deepjson.dumps(event)
    return gzip.compress(('{"Records":[' + ",".join(map(text, events)) + "]}").encode())


def copies(event: dict[str, Any], count: int, tag: str) -> list[dict[str, Any]]:
    """``count`` deep copies of ``event`` with eventIDs ``TAG-000``, ``TAG-001``..."""
    return [{**json.loads(json.dumps(event)), "eventID": f"{tag}-{n:03d}"} for n in range(count)]


class Response:
    def __init__(self, status_code: int, body: Any = None) -> None:
        self.status_code = status_code
        self._body = {} if body is None else body
        self.text = json.dumps(self._body)

    def json(self) -> Any:
        return self._body

    @property
    def content(self) -> bytes:
        return json.dumps(self._body).encode()


class MemorySource:
    """Files served from memory by key; an unknown key fails as S3's NoSuchKey would."""

    def __init__(self, files: dict[str, bytes] | Iterable[tuple[str, bytes]] = ()) -> None:
        self.files = dict(files)
        self.reads: list[str] = []

    def read(self, bucket: str, key: str) -> bytes:
        self.reads.append(key)
        if key not in self.files:
            raise SourceError("cannot read object (NoSuchKey: not found)")
        return self.files[key]


class MemoryDeadLetters:
    """Dead-letter files in a dict: ``put`` as the processor writes them, read back by redrive."""

    def __init__(self) -> None:
        self.stored: dict[str, list[dict[str, Any]]] = {}

    def put(self, source_key: str, records: Iterable[dict[str, Any]]) -> str:
        name = f"mem://{len(self.stored)}/{source_key.rsplit('/', 1)[-1]}"
        self.stored[name] = list(records)
        return name

    def files(self) -> Iterator[str]:
        return iter(list(self.stored))

    def read(self, name: str) -> list[dict[str, Any]]:
        return list(self.stored[name])

    def replace(self, name: str, records: list[dict[str, Any]]) -> None:
        if records:
            self.stored[name] = list(records)
        else:
            del self.stored[name]

    @property
    def records(self) -> list[dict[str, Any]]:
        return [record for records in self.stored.values() for record in records]


class ScriptedCluster:
    base_url = "http://scripted.invalid"

    def __init__(self, *script: Any, version: str = "2.19.6",
                 reject: Callable[[str, dict[str, Any]], int | None] | None = None) -> None:
        self.script = list(script)
        self.version = version
        self.reject = reject
        self.requests: list[tuple[str, str]] = []
        #: The doc ids of each _bulk request, in order.
        self.bulk: list[list[str]] = []
        self.headers: dict[str, str] = {}
        self.documents: dict[tuple[str, str], dict[str, Any]] = {}
        self.indexes: set[str] = set()
        self.refreshed: list[str] = []
        #: (path, body) of each index creation and mapping update, in order.
        self.mappings: list[tuple[str, Any]] = []

    def request(self, method: str, path: str, body: Any = None, *, data: bytes | None = None,
                headers: dict[str, str] | None = None) -> Response:
        self.requests.append((method, path))
        if path.split("?")[0] == "/_bulk":
            self.headers = dict(headers or {})
            if self.headers.get("Content-Encoding") == "gzip":
                data = gzip.decompress(data or b"")
            return self._bulk(data or b"")
        if method == "PUT" and (path.count("/") == 1 or path.endswith("/_mapping")):
            self.mappings.append((path, body))
        return self._admin(method, path)

    def _admin(self, method: str, path: str) -> Response:
        if method == "PUT" and path.endswith("/_mapping"):
            return Response(200, {"acknowledged": True})
        if method == "GET" and path == "/":
            return Response(200, {"version": {"distribution": "opensearch", "number": self.version}})
        if method == "PUT" and path.count("/") == 1:
            self.indexes.add(path[1:])
            return Response(200, {"acknowledged": True})
        if method == "GET" and path.startswith("/_cluster/health/"):
            return Response(200, {"status": "green"})
        if method == "GET" and "_settings" in path:
            return Response(200, {})
        if method == "GET" and path.startswith("/_cat/indices/"):
            return Response(200, [{"index": name, "status": "open"} for name in sorted(self.indexes)])
        if method == "POST" and path.endswith("/_refresh"):
            self.refreshed.append(path.split("/")[1])
            return Response(200, {"_shards": {"failed": 0}})
        if method == "DELETE":
            self.indexes.discard(path[1:])
            return Response(200, {"acknowledged": True})
        return Response(404, {"error": f"not scripted: {method} {path}"})

    def _bulk(self, data: bytes) -> Response:
        lines = data.splitlines()
        actions = [json.loads(line)["index"] for line in lines[::2]]
        sources = [json.loads(line) for line in lines[1::2]]
        ids = [a.get("_id", "") for a in actions]
        self.bulk.append(ids)
        outcome = self.script.pop(0) if self.script else "ok"
        if isinstance(outcome, Exception):
            raise outcome
        if isinstance(outcome, int):
            return Response(outcome, {"error": "scripted"})
        statuses = self._statuses(outcome, ids, sources)
        items = []
        for action, source, answered in zip(actions, sources, statuses):
            status, error = answered if isinstance(answered, tuple) else (answered, None)
            answer: dict[str, Any] = {"_index": action["_index"], "_id": action.get("_id"),
                                      "status": status}
            if 200 <= status < 300:
                self.documents[(action["_index"], action.get("_id", ""))] = source
            else:
                answer["error"] = error or error_for(status)
            items.append({"index": answer})
        errors = any(item["index"]["status"] >= 300 for item in items)
        return Response(200, {"errors": errors, "items": items})

    def _statuses(self, outcome: Any, ids: list[str], sources: list[dict[str, Any]]) -> list[Any]:
        if isinstance(outcome, list):
            statuses = outcome + [201] * (len(ids) - len(outcome))
        elif isinstance(outcome, dict):
            statuses = [outcome.get(i, 201) for i in ids]
        else:
            statuses = [201] * len(ids)
        if self.reject:
            statuses = [self.reject(i, s) or status for i, s, status in zip(ids, sources, statuses)]
        return statuses


def error_for(status: int) -> dict[str, str]:
    if status == 403:
        return {"type": "cluster_block_exception", "reason": "index read-only"}
    if status == 400:
        return {"type": "mapper_parsing_exception", "reason": "scripted rejection"}
    return {"type": "x_exception", "reason": "why"}


def quick_backoff() -> Backoff:
    """Backoff that never sleeps and never runs out of time (the clock stands still)."""
    return Backoff(sleep=lambda seconds: None, clock=lambda: 0.0, jitter=lambda: 1.0)


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"es_url": ScriptedCluster.base_url, "auth": "none",
                              "index_prefix": "ct", "index_replicas": 0}
    return Settings(**{**values, **overrides})


def processor_for(source: MemorySource, cluster: ScriptedCluster,
                  dead_letters: MemoryDeadLetters | None = None, **overrides: Any) -> Processor:
    return create_processor(settings(**overrides), cluster=cluster,  # type: ignore[arg-type]
                            source=source, dead_letters=dead_letters, backoff=quick_backoff())


class LambdaContext:
    """What the handler reads of Lambda's context object: the time left and the function's name
    (the metrics' FunctionName dimension; without one, no metric is printed)."""

    def __init__(self, function_name: str | None = None, remaining_ms: int = 300_000) -> None:
        self.function_name = function_name
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms
