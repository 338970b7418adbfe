"""A real three-node OpenSearch cluster loses a node in the middle of a load.

The cluster is this module's own (``scripts/services.sh`` with NODES=3 on NODE_LOSS_TEST_PORT
and the next two ports), so that killing one of its nodes disturbs no other test. The loader
talks to the first node only; the node killed is always another one (``kill -9`` of the pid
in its pid file), restarted later with the same script.

* Yellow: with one replica per shard, losing a node promotes the replicas of its primaries;
  writes go on while the node is away, and the corpus lands whole, each eventID once.
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
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import requests
from support import assert_corpus_indexed, ids_by_index, moto_source, services, upload

from cloudtrail_es.backfill import cli
from cloudtrail_es.read import keys
from cloudtrail_es.write.cluster import create_cluster
from cloudtrail_es.core.config import Settings
from cloudtrail_es.write.deadletter import LocalDeadLetters
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
        assert while_alive is None or while_alive.is_alive(), f"the load ended before {what}"
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

    dead_letters = tmp_path / "dead"
    argv = [bucket, "AWSLogs/", "--json", "--quiet", "--workers", "2",
            "--dead-letter-dir", str(dead_letters), "--state", str(tmp_path / "state")]
    exit_codes: list[int] = []
    load = threading.Thread(target=lambda: exit_codes.append(cli.main(argv)))
    load.start()
    try:
        wait_until(lambda: cluster.count(prefix) >= 2000, "2,000 events are indexed",
                   while_alive=load)
        held = cluster.primaries_on(prefix)
        victim = max(cluster.names[1:], key=held.__getitem__)   # never the loader's entry node
        assert held[victim] > 0
        cluster.kill(victim)
        at_kill = cluster.count(prefix)

        # Yellow: every primary is active again (the replicas of the victim's were promoted),
        # and the loader keeps writing while the node is away.
        health = wait_until(lambda: (h := cluster.health(f"{prefix}-*"))["status"] == "yellow"
                            and h["initializing_shards"] == 0 and h, "the indexes are yellow")
        assert health["number_of_nodes"] == NODES - 1 and health["unassigned_shards"] > 0
        assert cluster.primaries_on(prefix)[victim] == 0
        wait_until(lambda: cluster.count(prefix) >= min(at_kill + 2000, len(corpus_expectations))
                   or not load.is_alive(), "2,000 more events are indexed")
        after = cluster.count(prefix)
        assert after > at_kill, "no event was written while the node was away"
        assert cluster.health()["number_of_nodes"] == NODES - 1
    finally:
        cluster.restart_missing()
        load.join(1200)
    assert not load.is_alive()

    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["files_loaded"] + first["files_failed"] == len(corpus_files)
    assert first["dead_lettered"] == 0   # (some events may be degraded: their mapping races)
    if exit_codes != [cli.EXIT_OK]:   # a failure is allowed, if a rerun completes the load
        assert exit_codes == [cli.EXIT_FILES_FAILED] and first["files_failed"] > 0
        assert cli.main(argv) == cli.EXIT_OK
        rerun = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert rerun["files_loaded"] == first["files_failed"]
        assert rerun["files_done_before"] == first["files_loaded"]
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
