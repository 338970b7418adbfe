"""A small fault-injecting HTTP proxy to put in front of a real OpenSearch in tests.

Some failures cannot be produced on demand by a real cluster: a ``_bulk`` answered
429 or 503 as a whole, a connection reset mid-request, a mixed bulk answer where
only some items were throttled, a 413 for a body above a limit. ``FaultProxy``
forwards everything else to the real server, so what does get through is really
indexed and can be checked there.

    with FaultProxy(opensearch_url, seed=1) as proxy:
        proxy.script = ["429", "reset", "pass"]   # the next three _bulk requests
        proxy.bulk_item_429 = 0.2                  # then: each item throttled with p=0.2
        ... point the code under test at proxy.url ...
        assert proxy.counts["429"] == 1

Outcomes of a ``_bulk`` request (script entries and request-fault kinds):

``"pass"``
    forward it untouched (in a script: no random rule applies to it).
``"429"``, ``"502"``, ``"503"``, ``"504"``
    answer that status with an OpenSearch-like JSON error, without forwarding.
``"reset"``
    read part or all of the body (chosen at random) and reset the connection
    without any answer; ``"reset_partial"`` / ``"reset_full"`` choose explicitly.
    Nothing is forwarded. The client sees ``requests.exceptions.ConnectionError``.
``"item_429"`` (script only)
    forward nothing; answer 200 with every item rejected 429.
``"item_mapping_timeout"`` (script only)
    forward nothing; answer 200 with every item failed 500 ``mapper_exception`` "timed out
    while waiting for a dynamic mapping update" (what a cluster under load answers).

Only the standard library and ``requests`` are used.
"""
from __future__ import annotations

import gzip
import json
import random
import socket
import struct
import threading
import time
import zlib
from collections import Counter, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterable, NamedTuple
from urllib.parse import unquote, urlsplit

import requests as _requests

REQUEST_FAULTS = ("429", "502", "503", "504", "reset", "reset_partial", "reset_full")
SCRIPT_OUTCOMES = REQUEST_FAULTS + ("pass", "item_429", "item_mapping_timeout")
#: Item faults: outcome -> (status, error type, reason).
ITEM_FAULTS = {
    "item_429": (429, "es_rejected_execution_exception",
                 "rejected execution of bulk item (injected by FaultProxy)"),
    "item_mapping_timeout": (500, "mapper_exception", "timed out while waiting for a dynamic "
                             "mapping update (injected by FaultProxy)"),
}
RESET_KINDS = ("reset", "reset_partial", "reset_full")
JSON = "application/json; charset=UTF-8"

# Request headers worth passing on; x-amz-* are matched by prefix.
FORWARDED_HEADERS = ("content-type", "content-encoding", "authorization")

_ERRORS = {
    429: ("es_rejected_execution_exception",
          "rejected execution of coordinating operation (injected by FaultProxy)"),
    502: ("bad_gateway_exception", "bad gateway (injected by FaultProxy)"),
    503: ("unavailable_shards_exception",
          "primary shard is not active (injected by FaultProxy)"),
    504: ("gateway_timeout_exception", "gateway timeout (injected by FaultProxy)"),
    413: ("content_too_long_exception", "request body is too large (injected by FaultProxy)"),
}


class Record(NamedTuple):
    """One request the proxy received, as ``(method, path, body_size, outcome)``."""

    method: str
    path: str
    body_size: int
    outcome: str


def error_body(status: int, error_type: str | None = None, reason: str | None = None) -> bytes:
    """An error document shaped like OpenSearch's."""
    default_type, default_reason = _ERRORS.get(status, ("exception", "injected by FaultProxy"))
    error = {"type": error_type or default_type, "reason": reason or default_reason}
    return json.dumps(
        {"error": {"root_cause": [dict(error)], **error}, "status": status},
        separators=(",", ":"),
    ).encode()


def is_bulk_path(path: str) -> bool:
    """``/_bulk`` or ``/<index>/_bulk``, with or without a query string."""
    return urlsplit(path).path.rstrip("/").endswith("/_bulk")


class _BulkAction(NamedTuple):
    op: str  # index, create, update or delete
    meta: dict
    lines: tuple[bytes, ...]  # the action line, and the source line if the op has one


def parse_bulk(body: bytes) -> list[_BulkAction] | None:
    """The actions of an NDJSON bulk body, or None if it is not one this proxy can edit."""
    lines = body.split(b"\n")
    actions: list[_BulkAction] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        try:
            action = json.loads(line)
        except ValueError:
            return None
        if not isinstance(action, dict) or len(action) != 1:
            return None
        ((op, meta),) = action.items()
        if not isinstance(meta, dict):
            return None
        if op in ("index", "create", "update"):
            if i + 1 >= len(lines) or not lines[i + 1].strip():
                return None  # the source line is missing: leave the error to the cluster
            actions.append(_BulkAction(op, meta, (line, lines[i + 1])))
            i += 2
        elif op == "delete":
            actions.append(_BulkAction(op, meta, (line,)))
            i += 1
        else:
            return None
    return actions


def _rejected_item(action: _BulkAction, default_index: str | None, kind: str = "item_429") -> dict:
    status, error_type, reason = ITEM_FAULTS[kind]
    error = {"type": error_type, "reason": reason}
    return {action.op: {
        "_index": action.meta.get("_index", default_index),
        "_id": action.meta.get("_id"),
        "status": status,
        "error": error,
    }}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() must not wait for clients' idle keep-alive connections
    request_queue_size = 128

    def __init__(self, proxy: "FaultProxy") -> None:
        self.proxy = proxy
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request, client_address):
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self.connections_lock:
            connections, self.connections = list(self.connections), set()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Reset(Exception):
    """Raised inside the handler to drop the connection without an answer."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like OpenSearch
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        pass

    def do_GET(self) -> None:
        self._handle()

    do_PUT = do_POST = do_HEAD = do_DELETE = do_GET

    # -- request body ------------------------------------------------------------------

    def _declared_length(self) -> int | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return None
        try:
            return max(0, int(self.headers.get("Content-Length", "0")))
        except ValueError:
            return 0

    def _read_body(self, declared: int | None) -> bytes:
        if declared is not None:
            return self.rfile.read(declared) if declared else b""
        chunks = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline()

    # -- answers -----------------------------------------------------------------------

    def _answer(self, status: int, body: bytes, content_type: str = JSON,
                content_length: int | None = None) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        length = len(body) if content_length is None else content_length
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)
        self.wfile.flush()

    def _reset(self) -> None:
        """Close the socket at once with an RST: no status line, no FIN first."""
        self.close_connection = True
        conn = self.connection
        try:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        # socket.close() only releases the descriptor once the makefile() reader is closed
        # too (the writer holds no reference; it must stay open for the base class' flush).
        self.rfile.close()
        conn.close()

    # -- the request -------------------------------------------------------------------

    def _handle(self) -> None:
        proxy = self.server.proxy
        declared = self._declared_length()
        try:
            body = self._body_within_limit(declared)
            if body is False:
                return
            bulk = is_bulk_path(self.path)
            if bulk and proxy.bulk_delay_seconds > 0:
                time.sleep(proxy.bulk_delay_seconds)
            outcome = proxy._next_bulk_outcome() if bulk else "pass"
            if outcome == "reset":
                outcome = proxy._choose(("reset_partial", "reset_full"))
            if outcome == "reset_partial" and body is None:
                self.rfile.read(declared // 2)
                proxy._record(self.command, self.path, declared, "reset")
                return self._reset()
            if body is None:
                body = self._read_body(declared)
            self._answer_with(outcome, body, bulk)
        except (ConnectionError, TimeoutError):
            self.close_connection = True  # the client went away

    def _body_within_limit(self, declared: int | None) -> bytes | None | bool:
        """The body when it had to be read to know its size; None when not read yet; False
        when it was too large and answered 413."""
        limit = self.server.proxy.max_body_bytes
        if declared is None:  # chunked: the size is only known once read
            body = self._read_body(None)
            if limit is not None and len(body) > limit:
                self._too_large(len(body))
                return False
            return body
        if limit is not None and declared > limit:
            self._read_body(declared)  # drained, so the connection stays usable
            self._too_large(declared)
            return False
        return None

    def _answer_with(self, outcome: str, body: bytes, bulk: bool) -> None:
        proxy = self.server.proxy
        if outcome in RESET_KINDS:
            proxy._record(self.command, self.path, len(body), "reset")
            return self._reset()
        if outcome in ("429", "502", "503", "504"):
            proxy._record(self.command, self.path, len(body), outcome)
            return self._answer(int(outcome), error_body(int(outcome)))
        if bulk and outcome != "pass":  # "random" (item rules apply) or an item fault
            q = 1.0 if outcome in ITEM_FAULTS else proxy.bulk_item_429
            if q > 0:
                return self._bulk_with_item_faults(body, q, outcome if outcome in ITEM_FAULTS
                                                   else "item_429")
        return self._forward(body, outcome="forwarded")

    def _too_large(self, size: int) -> None:
        self.server.proxy._record(self.command, self.path, size, "413")
        self._answer(413, error_body(413, reason=(
            f"request body of {size} bytes is larger than max_body_bytes="
            f"{self.server.proxy.max_body_bytes} (injected by FaultProxy)")))

    def _forward_headers(self) -> dict[str, str]:
        headers = {"Accept-Encoding": "identity"}
        for name, value in self.headers.items():
            lower = name.lower()
            if lower in FORWARDED_HEADERS or lower.startswith("x-amz-"):
                headers[name] = value
        return headers

    def _upstream(self, body: bytes, headers: dict[str, str]) -> _requests.Response | None:
        proxy = self.server.proxy
        try:
            with _requests.Session() as session:
                session.trust_env = False  # never route through an HTTP(S)_PROXY from the env
                return session.request(
                    self.command, proxy.upstream_url + self.path, data=body or None,
                    headers=headers, timeout=proxy.timeout, allow_redirects=False,
                )
        except _requests.RequestException as exc:
            proxy._record(self.command, self.path, len(body), "upstream_error")
            self._answer(502, error_body(502, "faultproxy_upstream_error",
                                         f"{type(exc).__name__}: {exc}"))
            return None

    def _relay(self, response: _requests.Response) -> None:
        length = None
        if self.command == "HEAD":
            length = int(response.headers.get("Content-Length", "0"))
        self._answer(response.status_code, response.content,
                     response.headers.get("Content-Type", ""), content_length=length)

    def _forward(self, body: bytes, outcome: str, size: int | None = None) -> None:
        response = self._upstream(body, self._forward_headers())
        if response is not None:
            self.server.proxy._record(self.command, self.path,
                                      len(body) if size is None else size, outcome)
            self._relay(response)

    @staticmethod
    def _plain_body(received: bytes, headers: dict[str, str]) -> bytes | None:
        """The NDJSON of a bulk body, gunzipped if need be; None if it cannot be edited."""
        encoding = next((v for k, v in headers.items() if k.lower() == "content-encoding"), "")
        if not encoding:
            return received
        if encoding.strip().lower() not in ("gzip", "x-gzip"):
            return None  # deflate etc.: leave alone
        try:
            return gzip.decompress(received)
        except (OSError, EOFError, zlib.error):
            return None

    def _bulk_with_item_faults(self, received: bytes, q: float, kind: str = "item_429") -> None:
        proxy = self.server.proxy
        headers = self._forward_headers()
        body = self._plain_body(received, headers)
        actions = parse_bulk(body) if body is not None else []
        if not actions:
            return self._forward(received, outcome="forwarded")
        rejected = proxy._draw_items(len(actions), q)
        if not rejected:
            return self._forward(received, outcome="forwarded")

        parts = [p for p in urlsplit(self.path).path.split("/") if p]
        default_index = unquote(parts[0]) if len(parts) == 2 else None
        injected = {i: _rejected_item(actions[i], default_index, kind) for i in rejected}
        proxy._count_items(len(injected), kind)
        kept = [a for i, a in enumerate(actions) if i not in injected]
        if not kept:  # nothing left to send: answer like the cluster would
            proxy._record(self.command, self.path, len(received), "all_items_429")
            items = [injected[i] for i in range(len(actions))]
            answer = {"took": 0, "errors": True, "items": items}
            return self._answer(200, json.dumps(answer, separators=(",", ":")).encode())

        for name in [k for k in headers if k.lower() == "content-encoding"]:
            del headers[name]  # the edited body goes uncompressed
        forwarded = b"".join(line + b"\n" for a in kept for line in a.lines)
        response = self._upstream(forwarded, headers)
        if response is None:
            return
        proxy._record(self.command, self.path, len(received), "forwarded")
        if response.status_code != 200:
            return self._relay(response)  # the whole request failed: nothing to splice into
        try:
            answer = response.json()
            items = answer["items"]
            if not isinstance(items, list) or len(items) != len(kept):
                raise ValueError(f"{len(items)} items answered for {len(kept)} sent")
        except (ValueError, KeyError, TypeError) as exc:
            return self._answer(500, error_body(500, "faultproxy_splice_error", (
                f"cannot splice injected items into the upstream answer: {exc}")))
        upstream_items = iter(items)
        answer["items"] = [injected[i] if i in injected else next(upstream_items)
                           for i in range(len(actions))]
        answer["errors"] = True
        self._answer(200, json.dumps(answer, separators=(",", ":")).encode(),
                     response.headers.get("Content-Type", JSON))


class FaultProxy:
    """An HTTP proxy on ``127.0.0.1:<ephemeral port>`` that injects faults into ``_bulk``.

    All rule attributes may be changed at any time, from any thread.

    ``bulk_request_faults``  ``(p, kinds)``: each ``_bulk`` request not decided by the
        script gets, with probability ``p``, one of ``kinds`` (chosen uniformly) from
        ``"429"``, ``"502"``, ``"503"``, ``"504"``, ``"reset"``, ``"reset_partial"``,
        ``"reset_full"``. Default ``(0.0, ())``.
    ``bulk_item_429``  ``q``: in a ``_bulk`` request that is forwarded (and not scripted
        ``"pass"``), each action is removed with probability ``q`` and answered as an
        item with status 429, spliced at its position. Default ``0.0``.
    ``max_body_bytes``  any request with a larger body (as received, so compressed size
        if compressed) is answered 413 without forwarding. Default ``None``.
    ``script``  outcomes consumed in order by the next ``_bulk`` requests, before any
        random rule: ``"pass"``, ``"item_429"`` or any request-fault kind.
    ``bulk_delay_seconds``  each ``_bulk`` request waits this long before its outcome (a
        slow cluster, on demand). Default ``0.0``.
    """

    def __init__(self, upstream_url: str, seed: int | None = 0, *, timeout: float = 120.0) -> None:
        self.upstream_url = upstream_url.rstrip("/")
        self.timeout = timeout
        self.bulk_delay_seconds = 0.0
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._request_faults: tuple[float, tuple[str, ...]] = (0.0, ())
        self._item_429 = 0.0
        self._max_body_bytes: int | None = None
        self._script: deque[str] = deque()
        self._records: list[Record] = []
        self._counts: Counter[str] = Counter()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> "FaultProxy":
        if self._server is not None:
            raise RuntimeError("FaultProxy already started")
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name=f"FaultProxy{self.url}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        server.shutdown()
        server.server_close()
        server.close_connections()
        if thread is not None:
            thread.join(timeout=10)

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FaultProxy not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- rules -------------------------------------------------------------------------

    @property
    def bulk_request_faults(self) -> tuple[float, tuple[str, ...]]:
        with self._lock:
            return self._request_faults

    @bulk_request_faults.setter
    def bulk_request_faults(self, value: tuple[float, Iterable[str]] | None) -> None:
        p, kinds = value if value is not None else (0.0, ())
        self.set_bulk_request_faults(p, kinds)

    def set_bulk_request_faults(self, p: float,
                                kinds: Iterable[str] = ("429", "503", "reset")) -> None:
        kinds = tuple(kinds)
        _check_probability(p, "bulk_request_faults probability")
        unknown = [k for k in kinds if k not in REQUEST_FAULTS]
        if unknown:
            raise ValueError(f"unknown fault kinds {unknown}; known: {list(REQUEST_FAULTS)}")
        if p > 0 and not kinds:
            raise ValueError("a fault probability above 0 needs at least one kind")
        with self._lock:
            self._request_faults = (float(p), kinds)

    @property
    def bulk_item_429(self) -> float:
        with self._lock:
            return self._item_429

    @bulk_item_429.setter
    def bulk_item_429(self, q: float) -> None:
        _check_probability(q, "bulk_item_429")
        with self._lock:
            self._item_429 = float(q)

    @property
    def max_body_bytes(self) -> int | None:
        with self._lock:
            return self._max_body_bytes

    @max_body_bytes.setter
    def max_body_bytes(self, limit: int | None) -> None:
        if limit is not None and limit < 0:
            raise ValueError("max_body_bytes must be None or >= 0")
        with self._lock:
            self._max_body_bytes = limit

    @property
    def script(self) -> list[str]:
        """The scripted outcomes not consumed yet."""
        with self._lock:
            return list(self._script)

    @script.setter
    def script(self, outcomes: Iterable[str] | None) -> None:
        outcomes = _check_script(outcomes or ())
        with self._lock:
            self._script = deque(outcomes)

    def add_script(self, *outcomes: str) -> None:
        """Append outcomes to the script."""
        outcomes = _check_script(outcomes)
        with self._lock:
            self._script.extend(outcomes)

    def reseed(self, seed: int | None) -> None:
        """Restart the random draws from ``seed``."""
        with self._lock:
            self._rng.seed(seed)

    def clear_rules(self) -> None:
        """No faults any more: every request is forwarded untouched."""
        with self._lock:
            self._request_faults = (0.0, ())
            self._item_429 = 0.0
            self._max_body_bytes = None
            self._script.clear()

    # -- what happened -----------------------------------------------------------------

    @property
    def requests(self) -> list[Record]:
        """Every request received, in the order they were decided."""
        with self._lock:
            return list(self._records)

    @property
    def counts(self) -> Counter[str]:
        """Requests per outcome (``forwarded``, ``429``, ``502``, ``503``, ``504``, ``reset``,
        ``413``, ``all_items_429``, ``upstream_error``) and ``item_429``: items answered 429."""
        with self._lock:
            return Counter(self._counts)

    def clear(self) -> None:
        """Forget the recorded requests and counts (the rules stay)."""
        with self._lock:
            self._records.clear()
            self._counts.clear()

    # -- used by the handler -----------------------------------------------------------

    def _next_bulk_outcome(self) -> str:
        """A scripted outcome, else a random request fault, else ``"random"`` (item rules)."""
        with self._lock:
            if self._script:
                return self._script.popleft()
            p, kinds = self._request_faults
            if p > 0 and kinds and self._rng.random() < p:
                return self._rng.choice(kinds)
            return "random"

    def _choose(self, options: tuple[str, ...]) -> str:
        with self._lock:
            return self._rng.choice(options)

    def _draw_items(self, n: int, q: float) -> set[int]:
        with self._lock:
            return {i for i in range(n) if self._rng.random() < q}

    def _count_items(self, n: int, kind: str = "item_429") -> None:
        with self._lock:
            self._counts[kind] += n

    def _record(self, method: str, path: str, size: int, outcome: str) -> None:
        with self._lock:
            self._records.append(Record(method, path, size, outcome))
            self._counts[outcome] += 1


def _check_probability(value: float, what: str) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{what} must be in [0, 1], not {value!r}")


def _check_script(outcomes: Iterable[str]) -> list[str]:
    outcomes = [str(o) for o in outcomes]
    unknown = [o for o in outcomes if o not in SCRIPT_OUTCOMES]
    if unknown:
        raise ValueError(f"unknown script outcomes {unknown}; known: {list(SCRIPT_OUTCOMES)}")
    return outcomes
