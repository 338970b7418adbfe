"""FaultProxy against the real OpenSearch: every rule does what it says, and what is
forwarded is really written (checked on the cluster directly, not through the proxy)."""
from __future__ import annotations

import gzip
import json
import threading
import time
import uuid

import pytest
import requests

from faultproxy import FaultProxy, parse_bulk

NDJSON = {"Content-Type": "application/x-ndjson"}
TIMEOUT = 60


@pytest.fixture()
def index(opensearch_url):
    name = f"faultproxy-test-{uuid.uuid4().hex[:10]}"
    requests.put(f"{opensearch_url}/{name}", json={"settings": {"number_of_replicas": 0}},
                 timeout=TIMEOUT).raise_for_status()
    yield name
    requests.delete(f"{opensearch_url}/{name}", timeout=TIMEOUT)


@pytest.fixture()
def proxy(opensearch_url):
    with FaultProxy(opensearch_url, seed=7) as p:
        yield p


def bulk_body(index: str, ids, op: str = "index") -> bytes:
    lines = []
    for doc_id in ids:
        lines.append(json.dumps({op: {"_index": index, "_id": doc_id}}))
        if op != "delete":
            lines.append(json.dumps({"doc": doc_id, "n": len(lines)}))
    return ("\n".join(lines) + "\n").encode()


def post_bulk(url: str, body: bytes, headers=None, path: str = "/_bulk") -> requests.Response:
    return requests.post(url + path, data=body, headers={**NDJSON, **(headers or {})},
                         timeout=TIMEOUT)


def present_ids(opensearch_url: str, index: str) -> set[str]:
    """The ids in the index, asked of the cluster itself after a refresh."""
    requests.post(f"{opensearch_url}/{index}/_refresh", timeout=TIMEOUT).raise_for_status()
    response = requests.post(f"{opensearch_url}/{index}/_search", timeout=TIMEOUT,
                             json={"size": 10000, "_source": False, "query": {"match_all": {}}})
    response.raise_for_status()
    return {hit["_id"] for hit in response.json()["hits"]["hits"]}


def item_statuses(response: requests.Response) -> list[tuple[str, str, int]]:
    return [(op, outcome["_id"], outcome["status"])
            for item in response.json()["items"] for op, outcome in item.items()]


# -- plain forwarding ----------------------------------------------------------------------

def test_forwards_methods_paths_queries_and_bodies(proxy, opensearch_url, index):
    direct = requests.get(opensearch_url, timeout=TIMEOUT).json()
    assert requests.get(proxy.url, timeout=TIMEOUT).json()["cluster_uuid"] == direct["cluster_uuid"]

    doc = f"{proxy.url}/{index}/_doc/a"
    put = requests.put(doc + "?refresh=true", json={"x": 1}, timeout=TIMEOUT)
    assert put.status_code == 201 and put.json()["forced_refresh"] is True  # query passed on
    assert put.headers["Content-Type"].startswith("application/json")
    assert requests.get(doc, timeout=TIMEOUT).json()["_source"] == {"x": 1}

    head = requests.head(f"{proxy.url}/{index}", timeout=TIMEOUT)
    assert head.status_code == 200 and head.content == b""
    assert requests.head(f"{proxy.url}/{index}-missing", timeout=TIMEOUT).status_code == 404

    search = requests.get(f"{proxy.url}/{index}/_search", json={"query": {"term": {"x": 1}}},
                          timeout=TIMEOUT)  # a GET with a body
    assert search.json()["hits"]["total"]["value"] == 1

    assert requests.delete(doc, timeout=TIMEOUT).json()["result"] == "deleted"
    assert requests.get(doc, timeout=TIMEOUT).status_code == 404

    bad = requests.post(f"{proxy.url}/{index}/_doc", data=b"{not json",
                        headers={"Content-Type": "application/json"}, timeout=TIMEOUT)
    assert bad.status_code == 400 and bad.json()["error"]["type"]  # upstream's own error

    outcomes = [r.outcome for r in proxy.requests]
    assert set(outcomes) == {"forwarded"} and proxy.counts["forwarded"] == len(outcomes) == 9
    assert proxy.requests[1][:3] == ("PUT", f"/{index}/_doc/a?refresh=true", len(b'{"x": 1}'))


def test_bulk_without_rules_is_forwarded_untouched(proxy, opensearch_url, index):
    ids = [f"d{i}" for i in range(5)]
    response = post_bulk(proxy.url, bulk_body(index, ids), path="/_bulk?refresh=true")
    assert response.status_code == 200 and response.json()["errors"] is False
    assert present_ids(opensearch_url, index) == set(ids)
    assert proxy.counts == {"forwarded": 1}


# -- whole-request faults -------------------------------------------------------------------

def test_scripted_429_answers_429_and_indexes_nothing(proxy, opensearch_url, index):
    proxy.script = ["429", "429", "pass"]
    body = bulk_body(index, ["a", "b", "c"])
    for _ in range(2):
        response = post_bulk(proxy.url, body)
        assert response.status_code == 429
        error = response.json()
        assert error["status"] == 429
        assert error["error"]["type"] == "es_rejected_execution_exception"
        assert present_ids(opensearch_url, index) == set()
    assert proxy.script == ["pass"]

    response = post_bulk(proxy.url, body)  # the script's "pass"
    assert response.status_code == 200 and response.json()["errors"] is False
    assert present_ids(opensearch_url, index) == {"a", "b", "c"}
    assert proxy.script == []
    assert [r.outcome for r in proxy.requests] == ["429", "429", "forwarded"]
    assert proxy.counts["429"] == 2 and proxy.counts["forwarded"] == 1


@pytest.mark.parametrize("status", ["502", "503", "504"])
def test_scripted_5xx(proxy, opensearch_url, index, status):
    proxy.script = [status]
    response = post_bulk(proxy.url, bulk_body(index, ["a"]), path=f"/{index}/_bulk?refresh=true")
    assert response.status_code == int(status)
    assert response.json()["status"] == int(status)
    assert present_ids(opensearch_url, index) == set()
    assert proxy.counts == {status: 1}


def test_script_is_only_consumed_by_bulk_requests(proxy, index):
    proxy.script = ["503"]
    assert requests.get(f"{proxy.url}/_cluster/health", timeout=TIMEOUT).status_code == 200
    assert requests.get(f"{proxy.url}/{index}/_bulk_not", timeout=TIMEOUT).status_code != 503
    assert proxy.script == ["503"]
    assert post_bulk(proxy.url, bulk_body(index, ["a"]), path=f"/{index}/_bulk").status_code == 503
    assert proxy.script == []


def test_script_rejects_unknown_outcomes(proxy):
    with pytest.raises(ValueError):
        proxy.script = ["429", "418"]
    with pytest.raises(ValueError):
        proxy.bulk_request_faults = (0.5, ["boom"])
    with pytest.raises(ValueError):
        proxy.bulk_item_429 = 1.5
    assert proxy.script == []


@pytest.mark.parametrize("kind", ["reset", "reset_partial", "reset_full"])
@pytest.mark.parametrize("docs", [3, 20_000], ids=["small", "large"])
def test_reset_raises_connection_error(proxy, opensearch_url, index, kind, docs):
    proxy.script = [kind]
    body = bulk_body(index, [f"d{i}" for i in range(docs)])
    with pytest.raises(requests.exceptions.ConnectionError) as raised:
        post_bulk(proxy.url, body)
    # Surfaces as ProtocolError('Connection aborted.', ConnectionResetError(104, ...)), or,
    # when the reset hits while requests is still sending, RemoteDisconnected.
    assert "Connection aborted" in str(raised.value)
    assert not isinstance(raised.value, requests.exceptions.Timeout)
    assert present_ids(opensearch_url, index) == set()
    assert proxy.counts == {"reset": 1}
    assert proxy.requests[0].body_size <= len(body)
    # the proxy itself lives on
    assert post_bulk(proxy.url, body).json()["errors"] is False


def test_reset_on_a_kept_alive_connection(proxy, opensearch_url, index):
    with requests.Session() as session:
        assert session.get(proxy.url, timeout=TIMEOUT).status_code == 200
        proxy.script = ["reset_full"]
        with pytest.raises(requests.exceptions.ConnectionError):
            session.post(proxy.url + "/_bulk", data=bulk_body(index, ["a"]), headers=NDJSON,
                         timeout=TIMEOUT)
        # the session opens a new connection for the next request
        assert session.post(proxy.url + "/_bulk?refresh=true", data=bulk_body(index, ["a"]),
                            headers=NDJSON, timeout=TIMEOUT).status_code == 200
    assert present_ids(opensearch_url, index) == {"a"}


def test_random_request_faults_follow_the_seed(opensearch_url, index):
    def run(seed):
        with FaultProxy(opensearch_url, seed=seed) as p:
            p.bulk_request_faults = (0.5, ["429", "503", "reset"])
            seen = []
            for i in range(30):
                try:
                    seen.append(post_bulk(p.url, bulk_body(index, [f"s{seed}-{i}"])).status_code)
                except requests.exceptions.ConnectionError:
                    seen.append("reset")
            return seen, [r.outcome for r in p.requests], p.counts

    seen, outcomes, counts = run(11)
    assert [str(s) if s != 200 else "forwarded" for s in seen] == outcomes
    assert {"forwarded", "429", "503", "reset"} <= set(outcomes)
    assert sum(counts.values()) == 30
    assert run(11)[0] == seen  # same seed, same faults
    written = {f"s11-{i}" for i, s in enumerate(seen) if s == 200}
    assert present_ids(opensearch_url, index) == written


def test_probability_one_always_faults(proxy, opensearch_url, index):
    proxy.set_bulk_request_faults(1.0, ["503"])
    assert all(post_bulk(proxy.url, bulk_body(index, ["a"])).status_code == 503 for _ in range(5))
    proxy.bulk_request_faults = None
    assert post_bulk(proxy.url, bulk_body(index, ["a"])).status_code == 200
    assert proxy.counts == {"503": 5, "forwarded": 1}


# -- item-level 429s ------------------------------------------------------------------------

def test_item_429_with_q_1_rejects_every_item(proxy, opensearch_url, index):
    requests.put(f"{opensearch_url}/{index}/_doc/keep?refresh=true", json={"k": 1},
                 timeout=TIMEOUT).raise_for_status()
    proxy.bulk_item_429 = 1.0
    body = (bulk_body(index, ["a"]) + bulk_body(index, ["b"], op="create")
            + bulk_body(index, ["keep"], op="delete") + bulk_body(index, ["c"]))
    response = post_bulk(proxy.url, body)
    assert response.status_code == 200
    answer = response.json()
    assert answer["errors"] is True
    assert item_statuses(response) == [("index", "a", 429), ("create", "b", 429),
                                       ("delete", "keep", 429), ("index", "c", 429)]
    for item in answer["items"]:
        outcome = next(iter(item.values()))
        assert outcome["_index"] == index
        assert outcome["error"]["type"] == "es_rejected_execution_exception"
    assert present_ids(opensearch_url, index) == {"keep"}  # the delete never reached it
    assert proxy.counts == {"item_429": 4, "all_items_429": 1}


def test_item_429_default_index_comes_from_the_path(proxy, index):
    proxy.script = ["item_429"]
    body = b'{"index":{"_id":"x"}}\n{"a":1}\n{"delete":{"_id":"y"}}\n'
    answer = post_bulk(proxy.url, body, path=f"/{index}/_bulk").json()
    assert [next(iter(i.values()))["_index"] for i in answer["items"]] == [index, index]


def check_mixed(response, ids, opensearch_url, index, proxy, extra=frozenset()):
    assert response.status_code == 200
    statuses = item_statuses(response)
    assert [doc_id for _, doc_id, _ in statuses] == ids  # spliced back at their positions
    assert {s for _, _, s in statuses} == {201, 429}  # a real mix
    assert response.json()["errors"] is True
    created = {doc_id for _, doc_id, s in statuses if s == 201}
    assert present_ids(opensearch_url, index) & set(ids) == created
    assert present_ids(opensearch_url, index) <= set(ids) | extra
    assert proxy.counts["item_429"] == len(ids) - len(created)
    assert proxy.counts["forwarded"] == 1
    return statuses


def test_item_429_with_q_half_gives_a_seeded_mix(opensearch_url, index):
    runs, sent = [], set()
    for run in range(2):
        ids = [f"r{run}-{i:02d}" for i in range(40)]
        with FaultProxy(opensearch_url, seed=1234) as proxy:
            proxy.bulk_item_429 = 0.5
            response = post_bulk(proxy.url, bulk_body(index, ids))
            statuses = check_mixed(response, ids, opensearch_url, index, proxy, extra=sent)
        runs.append([(op, status) for op, _, status in statuses])
        sent |= set(ids)
    assert runs[0] == runs[1]  # the seed fixes which items are rejected


def test_item_429_edits_a_gzip_body_and_forwards_it_plain(proxy, opensearch_url, index):
    ids = [f"g{i:02d}" for i in range(40)]
    raw = bulk_body(index, ids)
    proxy.bulk_item_429 = 0.5
    response = post_bulk(proxy.url, gzip.compress(raw), headers={"Content-Encoding": "gzip"})
    check_mixed(response, ids, opensearch_url, index, proxy)
    assert proxy.requests[0].body_size == len(gzip.compress(raw))


def test_item_429_leaves_an_unparseable_body_to_the_cluster(proxy, index):
    proxy.bulk_item_429 = 1.0
    response = post_bulk(proxy.url, b'not-json\n{"a":1}\n', path=f"/{index}/_bulk")
    assert response.status_code == 400  # OpenSearch's own answer, not ours
    assert "FaultProxy" not in response.text
    assert proxy.counts == {"forwarded": 1}


def test_parse_bulk():
    body = b'{"index":{"_id":"1"}}\n{"a":1}\n\n{"delete":{"_id":"2"}}\r\n{"create":{}}\n{}\n'
    assert [(a.op, a.meta) for a in parse_bulk(body)] == [
        ("index", {"_id": "1"}), ("delete", {"_id": "2"}), ("create", {})]
    assert parse_bulk(b'{"bogus":{}}\n') is None
    assert parse_bulk(b'{"index":{}}\n') is None  # a source line is missing


# -- 413 and gzip -----------------------------------------------------------------------------

def test_body_above_max_body_bytes_answers_413(proxy, opensearch_url, index):
    proxy.max_body_bytes = 1000
    big = bulk_body(index, [f"d{i}" for i in range(40)])
    small = bulk_body(index, ["s"])
    assert len(big) > 1000 > len(small)

    response = post_bulk(proxy.url, big)
    assert response.status_code == 413 and response.json()["status"] == 413
    assert present_ids(opensearch_url, index) == set()

    put = requests.put(f"{proxy.url}/{index}/_doc/big", json={"x": "y" * 2000}, timeout=TIMEOUT)
    assert put.status_code == 413  # not only _bulk

    # the size is the size received: a compressed body under the limit passes
    packed = gzip.compress(big)
    assert len(packed) <= 1000
    assert post_bulk(proxy.url, packed, {"Content-Encoding": "gzip"}).status_code == 200
    assert post_bulk(proxy.url, small).status_code == 200
    assert present_ids(opensearch_url, index) == {f"d{i}" for i in range(40)} | {"s"}
    assert proxy.counts == {"413": 2, "forwarded": 2}
    assert [r.body_size for r in proxy.requests][:1] == [len(big)]


def test_413_comes_before_the_script(proxy, index):
    proxy.max_body_bytes = 10
    proxy.script = ["429"]
    assert post_bulk(proxy.url, bulk_body(index, ["a"])).status_code == 413
    assert proxy.script == ["429"]


def test_opensearch_itself_accepts_gzip_requests(opensearch_url, index):
    response = post_bulk(opensearch_url, gzip.compress(bulk_body(index, ["z"])),
                         {"Content-Encoding": "gzip"}, path="/_bulk?refresh=true")
    assert response.status_code == 200 and response.json()["errors"] is False
    assert present_ids(opensearch_url, index) == {"z"}


def test_gzip_bulk_forwarded_untouched(proxy, opensearch_url, index):
    ids = [f"z{i}" for i in range(10)]
    packed = gzip.compress(bulk_body(index, ids))
    response = post_bulk(proxy.url, packed, {"Content-Encoding": "gzip"})
    assert response.status_code == 200 and response.json()["errors"] is False
    assert present_ids(opensearch_url, index) == set(ids)
    source = requests.get(f"{opensearch_url}/{index}/_doc/z3", timeout=TIMEOUT).json()["_source"]
    assert source == {"doc": "z3", "n": 7}
    assert proxy.requests[0].body_size == len(packed)


def test_chunked_request_body(proxy, opensearch_url, index):
    body = bulk_body(index, ["c1", "c2"])
    response = requests.post(proxy.url + "/_bulk", data=iter([body[:10], body[10:]]),
                             headers=NDJSON, timeout=TIMEOUT)  # a generator: chunked encoding
    assert response.status_code == 200
    assert present_ids(opensearch_url, index) == {"c1", "c2"}


# -- lifecycle, concurrency, upstream trouble -------------------------------------------------

def test_stop_does_not_wait_for_idle_keep_alive_clients(opensearch_url):
    proxy = FaultProxy(opensearch_url).start()
    session = requests.Session()
    assert session.get(proxy.url, timeout=TIMEOUT).status_code == 200
    started = time.monotonic()
    proxy.stop()
    assert time.monotonic() - started < 5
    with pytest.raises(RuntimeError):
        proxy.url  # noqa: B018 - the property raises once stopped
    session.close()


def test_concurrent_bulk_requests_are_all_accounted_for(proxy, opensearch_url, index):
    proxy.bulk_request_faults = (0.3, ["429", "503"])
    proxy.bulk_item_429 = 0.3
    statuses: list[int] = []
    lock = threading.Lock()

    def worker(w):
        for i in range(10):
            code = post_bulk(proxy.url, bulk_body(index, [f"w{w}-{i}-{k}" for k in range(3)]))
            with lock:
                statuses.append(code.status_code)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = proxy.counts
    assert len(statuses) == 80 == len(proxy.requests)
    assert counts["429"] == statuses.count(429) and counts["503"] == statuses.count(503)
    assert counts["forwarded"] + counts["all_items_429"] == statuses.count(200)
    assert len(present_ids(opensearch_url, index)) == 3 * statuses.count(200) - counts["item_429"]


def test_upstream_down_answers_502():
    with FaultProxy("http://127.0.0.1:9", seed=0, timeout=5) as proxy:
        response = requests.get(proxy.url + "/", timeout=TIMEOUT)
        assert response.status_code == 502
        assert response.json()["error"]["type"] == "faultproxy_upstream_error"
        assert proxy.counts == {"upstream_error": 1}
