"""A real three-node OpenSearch cluster loses a node in the middle of a load.

The cluster is this module's own (``scripts/services.sh`` with NODES=3 on NODE_LOSS_TEST_PORT
and the next two ports), so that killing one of its nodes disturbs no other test. The loader
talks to the first node only; the node killed is always another one (``kill -9`` of the pid
in its pid file), restarted later with the same script.

* Yellow: with one replica per shard, losing a node promotes the replicas of its primaries
  (the node killed holds one, and is the elected cluster manager); writes go on while the
  node is away, and the first run loads the trail whole: exit 0, no file failed, no event
  degraded or dead-lettered, each eventID once. The kill is placed by the documents the
  loader has sent, not by the clock.
* Red: an index whose only copy was on the lost node refuses writes. A file for it fails,
  naming the object, whether the write gate sees the red index first or a bulk request
  waits for the primary until the cluster gives up; no event is counted indexed that is not,
  and a rerun once the node is back completes.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import pytest
import requests
from support import assert_corpus_indexed, ids_by_index, moto_source, services, upload

from cloudtrail_es.backfill import cli
from cloudtrail_es.read import keys
from cloudtrail_es.write.bulk import BulkItem, BulkWriter
from cloudtrail_es.write.cluster import create_cluster
from cloudtrail_es.core.config import Settings
from cloudtrail_es.write import processor as processor_module
from cloudtrail_es.write.deadletter import LocalDeadLetters
from cloudtrail_es.write.health import WriteGate
from cloudtrail_es.write.indexes import IndexCreator, index_body
from cloudtrail_es.write.processor import ObjectRef, create_processor, process_objects
from cloudtrail_es.core.retry import Backoff
from cloudtrail_es.read.decoder import events_in

# The trail is a load here: the shared corpus adds nothing to what these tests check.
pytestmark = [pytest.mark.integration, pytest.mark.generated_trail_only]

ROOT = Path(__file__).resolve().parents[2]
PORT = int(os.environ.get("NODE_LOSS_TEST_PORT", "9301"))
NODES = 3
ENGINE = os.environ.get("ENGINE", "opensearch-2.19.6")
RUN_DIR = ROOT / ".services"


def own_services(action: str) -> None:
    services(action, PORT, NODES=str(NODES), ENGINE=ENGINE, RUN_DIR=str(RUN_DIR),
             START_TIMEOUT="600")


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 600,
               while_alive: threading.Thread | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        if while_alive is not None and not while_alive.is_alive():
            value = condition()   # the load may have ended since the check above
            assert value, f"the load ended before {what}"
            return value
        time.sleep(0.2)
    return value


class ThreeNodes:
    """The module's cluster: HTTP on PORT (the loader's entry point), PORT + 1, PORT + 2."""

    def __init__(self) -> None:
        self.url = f"http://127.0.0.1:{PORT}"
        self.names = [f"{ENGINE}-{PORT + n}" for n in range(NODES)]

    def get(self, path: str, **params: Any) -> Any:
        response = requests.get(f"{self.url}{path}", params=params, timeout=200)
        response.raise_for_status()
        return response.json()

    def health(self, index: str = "") -> dict[str, Any]:
        return requests.get(f"{self.url}/_cluster/health/{index}", timeout=90).json()

    def count(self, prefix: str) -> int:
        try:
            requests.post(f"{self.url}/{prefix}-*/_refresh", timeout=30)
            answer = requests.get(f"{self.url}/{prefix}-*/_count", timeout=30).json()
        except (requests.RequestException, ValueError):
            return 0
        return int(answer.get("count", 0))

    def primaries_on(self, prefix: str) -> dict[str, int]:
        """Node name -> primaries of the prefix's indexes it holds."""
        shards = self.get(f"/_cat/shards/{prefix}-*", format="json", h="prirep,node")
        held = {name: 0 for name in self.names}
        for shard in shards:
            if shard["prirep"] == "p" and shard.get("node") in held:
                held[shard["node"]] += 1
        return held

    def victim(self, prefix: str) -> str:
        """A node other than the loader's entry node that holds a primary of the prefix's indexes
        (all green). When the entry node holds them all, one fails over to its replica first."""
        held = self.primaries_on(prefix)
        if not any(held[name] for name in self.names[1:]):
            copies = self.get(f"/_cat/shards/{prefix}-*", format="json", h="index,shard,prirep,node")
            primary = next(copy for copy in copies if copy["prirep"] == "p")
            requests.post(f"{self.url}/_cluster/reroute", timeout=120, json={"commands": [{"cancel": {
                "index": primary["index"], "shard": int(primary["shard"]), "node": primary["node"],
                "allow_primary": True}}]}).raise_for_status()
            assert self.get(f"/_cluster/health/{prefix}-*", wait_for_status="green",
                            timeout="120s")["status"] == "green"
            held = self.primaries_on(prefix)
        victim = max(self.names[1:], key=held.__getitem__)
        assert held[victim] > 0, held
        return victim

    def cluster_manager(self) -> str | None:
        """The elected cluster manager's name (None while there is none)."""
        try:
            return str(self.get("/_cat/master", format="json")[0]["node"])
        except (requests.RequestException, ValueError, LookupError):
            return None

    def hand_cluster_manager_to(self, name: str) -> None:
        """``name`` elected cluster manager: the others leave the voting configuration until it
        is, then come back, so that the two left after its loss are a quorum again."""
        others = ",".join(n for n in self.names if n != name)
        requests.post(f"{self.url}/_cluster/voting_config_exclusions", timeout=120,
                      params={"node_names": others, "timeout": "60s"}).raise_for_status()
        wait_until(lambda: self.cluster_manager() == name, f"{name} is the cluster manager")
        requests.delete(f"{self.url}/_cluster/voting_config_exclusions", timeout=120,
                        params={"wait_for_removal": "false"}).raise_for_status()
        wait_until(lambda: len(self.get("/_cluster/state/metadata")["metadata"]
                               ["cluster_coordination"]["last_committed_config"]) == NODES,
                   "every node votes again")
        assert self.cluster_manager() == name

    def kill(self, name: str) -> None:
        """``kill -9`` of the node's process, found through the services script's pid file."""
        pid = int((RUN_DIR / f"{name}.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: self.health().get("number_of_nodes") == NODES - 1,
                   f"the cluster noticed that {name} is gone")

    def restart_missing(self) -> None:
        own_services("start")   # starts the node(s) not running, waits until all have joined
        answer = requests.get(f"{self.url}/_cluster/health", timeout=200, params={
            "wait_for_status": "green", "wait_for_nodes": NODES, "timeout": "180s"}).json()
        assert answer["status"] == "green" and not answer["timed_out"], answer

    def delete(self, prefix: str) -> None:
        requests.delete(f"{self.url}/{prefix}-*", timeout=120)


@pytest.fixture(scope="module")
def cluster() -> Iterator[ThreeNodes]:
    nodes = ThreeNodes()
    own_services("stop")   # a cluster left by an interrupted run, and its data: start clean
    for name in nodes.names:
        shutil.rmtree(RUN_DIR / name / "data", ignore_errors=True)
    own_services("start")
    try:
        listed = sorted(node["name"] for node in nodes.get("/_nodes")["nodes"].values())
        assert listed == nodes.names
        yield nodes
    finally:
        own_services("stop")


def events_of(files: list[tuple[str, bytes]]) -> dict[str, str]:
    """eventID -> key of the file it comes from."""
    return {event["eventID"]: key for key, data in files for event in events_in(data)}


def degraded_reasons(url: str, prefix: str) -> dict[str, int]:
    """``degraded_reason`` -> how many documents of the prefix's indexes were degraded for it."""
    requests.post(f"{url}/{prefix}-*/_refresh", timeout=60)
    answer = requests.post(f"{url}/{prefix}-*/_search", timeout=60, json={
        "size": 0, "aggs": {"reasons": {"terms": {"field": "degraded_reason", "size": 20}}}})
    answer.raise_for_status()
    return {bucket["key"]: bucket["doc_count"]
            for bucket in answer.json()["aggregations"]["reasons"]["buckets"]}


class Pacer:
    """Paces the load by the documents its ``_bulk`` requests carry (``BulkWriter._post``,
    retries included): ``reached`` is set once ``kill_at`` were sent, and a request starting
    once ``hold_at`` were sent waits until ``release()``. However fast the load runs, it is
    still going when the node is killed, and still has documents to write once the cluster
    is seen yellow (all but fewer than ``hold_at`` + one request's)."""

    def __init__(self, kill_at: int, hold_at: int) -> None:
        self.kill_at, self.hold_at = kill_at, hold_at
        self.sent = 0
        self.reached = threading.Event()
        self.released = threading.Event()
        self._lock = threading.Lock()

    def release(self) -> None:
        self.released.set()

    def paced(self, post: Callable[[BulkWriter, Sequence[BulkItem]], Any]
              ) -> Callable[[BulkWriter, Sequence[BulkItem]], Any]:
        def paced_post(writer: BulkWriter, pending: Sequence[BulkItem]) -> Any:
            with self._lock:
                held = self.sent >= self.hold_at
                self.sent += len(pending)
                if self.sent >= self.kill_at:
                    self.reached.set()
            if held:
                self.released.wait()
            return post(writer, pending)
        return paced_post


# --------------------------------------------------------------------------- yellow


def test_a_node_killed_mid_load_with_replicas_loses_nothing(
        cluster, loader_env, monkeypatch, s3, bucket, corpus_files, corpus_expectations,
        tmp_path, capsys):
    prefix = loader_env
    for name, value in {"ES_HOSTNAME": cluster.url, "INDEX_REPLICAS": "1",
                        "BULK_MAX_DOCS": "500", "RETRY_LIMIT_SECONDS": "300"}.items():
        monkeypatch.setenv(name, value)
    upload(s3, bucket, corpus_files)
    # The monthly indexes are made first, by the loader's own IndexCreator with the loader's
    # settings, and are green (every replica in sync) before the kill: an index made at the
    # moment its primary's node dies, its replica still initialising, goes red (the next
    # test's subject) rather than yellow.
    creator = IndexCreator(create_cluster(Settings.from_env()), replicas=1, backoff=Backoff())
    months = sorted(set(corpus_expectations.values()))
    for month in months:
        creator.ensure(f"{prefix}-{month}", time.monotonic() + 60)
    assert cluster.get(f"/_cluster/health/{prefix}-*", wait_for_status="green",
                       timeout="120s")["status"] == "green"
    # The node killed holds a primary and is the elected cluster manager: its loss promotes a
    # replica and elects a new manager (which every mapping update waits for) in the same load.
    victim = cluster.victim(prefix)
    cluster.hand_cluster_manager_to(victim)

    dead_letters = tmp_path / "dead"
    argv = [bucket, "AWSLogs/", "--json", "--quiet", "--workers", "2",
            "--dead-letter-dir", str(dead_letters), "--state", str(tmp_path / "state")]
    pacer = Pacer(kill_at=2000, hold_at=4000)
    assert len(corpus_expectations) >= pacer.hold_at + 500 + 2000   # 8,000: the generated trail
    monkeypatch.setattr(BulkWriter, "_post", pacer.paced(BulkWriter._post))
    # The write gate looks at the index's health before every chunk (not once in 30 s): however
    # fast the load, it sees the indexes yellow while the node is away, and must let writes on.
    monkeypatch.setattr(processor_module, "WriteGate", partial(WriteGate, ttl=0))
    exit_codes: list[int] = []
    load = threading.Thread(target=lambda: exit_codes.append(cli.main(argv)))
    load.start()
    try:
        wait_until(pacer.reached.is_set, "2,000 documents are sent", while_alive=load)
        cluster.kill(victim)

        # Yellow: every primary is active again (the replicas of the victim's were promoted),
        # and the loader keeps writing while the node is away.
        health = wait_until(lambda: (h := cluster.health(f"{prefix}-*"))["status"] == "yellow"
                            and h["initializing_shards"] == 0 and h, "the indexes are yellow")
        assert health["number_of_nodes"] == NODES - 1 and health["unassigned_shards"] > 0
        assert cluster.primaries_on(prefix)[victim] == 0
        assert cluster.cluster_manager() not in (None, victim)
        at_yellow = cluster.count(prefix)
        pacer.release()
        wait_until(lambda: cluster.count(prefix) >= at_yellow + 2000,
                   "2,000 more events are indexed while the node is away", while_alive=load)
        assert cluster.health()["number_of_nodes"] == NODES - 1
    finally:
        pacer.release()
        cluster.restart_missing()
        load.join(1200)
    assert not load.is_alive()

    # Strict: one replica per shard and a 300 s retry limit ride out the loss of one node.
    # Nothing failed, degraded or dead-lettered, on the first run.
    out, err = capsys.readouterr()
    summary = json.loads(out.strip().splitlines()[-1])
    assert (exit_codes, summary["files_failed"], summary["failed"]) == ([cli.EXIT_OK], 0, []), err[-5000:]
    assert (summary["degraded"], degraded_reasons(cluster.url, prefix)) == (0, {})
    assert (summary["dead_lettered"], summary["files_dead_lettered"]) == (0, 0)
    assert summary["files_loaded"] == len(corpus_files)
    assert cluster.count(prefix) == len(corpus_expectations)
    assert_corpus_indexed(cluster.url, prefix, corpus_expectations)   # each eventID once
    assert not list(dead_letters.rglob("*.ndjson.gz"))
    cluster.delete(prefix)


# --------------------------------------------------------------------------- red


def test_a_lost_primary_fails_its_files_by_name_and_counts_nothing_unwritten(
        cluster, index_prefix, corpus_files, trail_manifest, five_month_files, tmp_path, moto_url):
    prefix = index_prefix
    victim = cluster.names[-1]
    by_month: dict[str, list[tuple[str, bytes]]] = {}
    # Four monthly indexes: the generated test trail has two, so a generated trail of five.
    for key, data in corpus_files if trail_manifest is None else five_month_files:
        by_month.setdefault(keys.index_name_for(key, "")[1:], []).append((key, data))
    red_a, red_b, green_a, green_b = ("2014-09", "2017-06", "2018-02", "2018-03") \
        if trail_manifest is None else sorted(by_month)[:4]
    red_a_before, red_a_after = by_month[red_a][:3], by_month[red_a][3:4]
    red_b_after = by_month[red_b][:2]
    before = by_month[green_a][:10] + red_a_before
    after = red_b_after + red_a_after + by_month[green_b][:10]
    files = before + after
    source, bucket = moto_source(moto_url, files)

    # No replicas; the two "red" months live on the victim only, the others never on it.
    for month, rule in ((red_a, "require"), (red_b, "require"), (green_a, "exclude"),
                        (green_b, "exclude")):
        body = index_body(1, 0)
        body["settings"]["index"]["routing"] = {"allocation": {rule: {"_name": victim}}}
        requests.put(f"{cluster.url}/{prefix}-{month}", json=body, timeout=120).raise_for_status()
    assert cluster.get(f"/_cluster/health/{prefix}-*", wait_for_status="green",
                       timeout="120s")["status"] == "green"

    def processor():
        loader = create_processor(
            Settings(es_url=cluster.url, auth="none", index_prefix=prefix, index_replicas=0),
            source=source, dead_letters=LocalDeadLetters(tmp_path), backoff=Backoff(0.05, 0.5))
        return loader

    def objects() -> Iterator[ObjectRef]:
        yield from (ObjectRef(bucket, key) for key, _ in before)
        cluster.kill(victim)   # mid-run: the same processor, its gate's answers still cached
        wait_until(lambda: cluster.health(f"{prefix}-{red_a}")["status"] == "red",
                   f"{prefix}-{red_a} is red")
        yield from (ObjectRef(bucket, key) for key, _ in after)

    try:
        run = process_objects(processor(), objects(), lambda: time.monotonic() + 5)
        failed = {failure.key: failure for failure in run.failed}
        loaded = {result.key: result for result in run.loaded}

        assert set(failed) == {key for key, _ in red_b_after + red_a_after}
        for key, _ in red_b_after:   # never written before: the write gate sees it red
            assert f"s3://{bucket}/{key}: index {prefix}-{red_b} is red" in str(failed[key])
        [(key, data)] = red_a_after   # written a moment ago: the gate's answer is still fresh,
        assert str(failed[key]).startswith(f"s3://{bucket}/{key}: gave up retrying")   # the bulk
        assert "unavailable" in str(failed[key])   # request waited for the primary, in vain
        assert set(loaded) == {key for key, _ in before + after} - set(failed)
        for result in loaded.values():
            assert result.indexed == result.events_read > 0 and result.dead_lettered == 0
    finally:
        cluster.restart_missing()

    # Exactly the events counted indexed are in the cluster: none of the failed files'.
    counted = events_of([(key, data) for key, data in files if key in loaded])
    assert set(ids_by_index(cluster.url, prefix)) == set(counted)
    assert sum(result.indexed for result in loaded.values()) == len(counted)

    # The node is back, its indexes green again: the failed files load on a rerun.
    rerun = process_objects(processor(), [ObjectRef(bucket, key) for key in failed],
                            lambda: time.monotonic() + 60)
    assert not rerun.failed and len(rerun.loaded) == len(failed)
    everything = events_of(files)
    found = ids_by_index(cluster.url, prefix)
    assert set(found) == set(everything) and len(found) == len(everything)
    assert cluster.count(prefix) == len(everything)
    cluster.delete(prefix)
