"""The circuit breaker on a real OpenSearch of this test's own, stopped in the middle of a backfill:
for good (the run stops, exit 1, state written, cause named: the breaker, not the retry limit),
or for a while shorter than the breaker's time (ridden out: exit 0, every event indexed once).

The tests wait on conditions, never on the clock: a gate lets the first groups of files load and
holds the others until the cluster is down, so the run can neither finish before the outage nor
miss it, and the outage ends only once the loader has seen it."""
import gzip
import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
import requests
from support import assert_corpus_indexed, gated_loads, indexed_count, services

from cloudtrail_es.backfill import run as backfill
from cloudtrail_es.backfill import cli
from cloudtrail_es.core.breaker import CircuitBreaker
from cloudtrail_es.read.keys import index_name_for

# The trail is a load here: the shared corpus adds nothing to what these tests check.
pytestmark = [pytest.mark.integration, pytest.mark.generated_trail_only]

ROOT = Path(__file__).resolve().parents[2]
PORT = int(os.environ.get("BREAKER_TEST_PORT", "9320"))
#: Far beyond the breaker's time: a run that waited it out would fail the bound below.
RETRY_LIMIT = 900
#: A month of the corpus: 227 files, 4,440 events, one index to create (of the generated trail:
#: its first month, 4,773 events); in groups of GROUP_FILES files, so that a run has many groups
#: and files complete early.
MONTHS = ("2014/09",)
GROUP_FILES = 10


def own_services(action):
    services(action, PORT, timeout=300)


@pytest.fixture(scope="module", autouse=True)
def own_opensearch_stopped_at_the_end():
    """The tests share this module's OpenSearch; nothing of it outlives the module."""
    yield
    own_services("stop")


@pytest.fixture()
def own_opensearch(loader_env, monkeypatch):
    """An OpenSearch of this test's own (killing it disturbs no other test), running at the end too."""
    own_services("start")
    monkeypatch.setattr(backfill, "GROUP_FILES", GROUP_FILES)
    url = f"http://127.0.0.1:{PORT}"
    monkeypatch.setenv("ES_HOSTNAME", url)
    monkeypatch.setenv("RETRY_LIMIT_SECONDS", str(RETRY_LIMIT))
    yield url
    own_services("start")
    requests.delete(f"{url}/{loader_env}-*", timeout=60)


#: How long a condition may take before the test gives up (a safety net, not a measurement).
PATIENCE = 300


@pytest.fixture()
def gate(monkeypatch):
    with gated_loads(monkeypatch, open_for=2) as gate:
        yield gate


@pytest.fixture()
def outage_seen(monkeypatch):
    """Set once the loader's breaker has recorded a failed request (the loader saw the outage)."""
    seen = threading.Event()
    failed = CircuitBreaker.failed

    def record_failure(breaker, why):
        failed(breaker, why)
        seen.set()

    monkeypatch.setattr(CircuitBreaker, "failed", record_failure)
    return seen


@pytest.fixture()
def two_months(corpus_dir, trail_manifest, tmp_path):
    """(directory, eventID -> YYYY-MM) for the corpus files of MONTHS, laid out as CloudTrail does."""
    root, expected = tmp_path / "logs", {}
    months = MONTHS if trail_manifest is None else (
        next(iter(trail_manifest["events_by_month"])).replace("-", "/"),)
    for path in sorted((corpus_dir / "AWSLogs").rglob("*.json.gz")):
        key = str(path.relative_to(corpus_dir))
        if any(f"/{month}/" in key for month in months):
            (root / key).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, root / key)
            for event in json.loads(gzip.decompress(path.read_bytes()))["Records"]:
                expected[event["eventID"]] = index_name_for(key, "")[1:]
    assert len(expected) > 4000
    return root, expected




def start_backfill(args):
    exit_codes = []
    run = threading.Thread(target=lambda: exit_codes.append(cli.main(args)))
    run.start()
    return run, exit_codes


def wait_for_progress(url, prefix, run, gate, state=None):
    """Until the gate's first groups are loaded, their events searchable (and, with a state file,
    written to it); the run is then held at the gate."""
    assert gate.first_groups_done.wait(PATIENCE), "the backfill made no progress"
    deadline = time.monotonic() + PATIENCE
    while indexed_count(url, prefix) == 0 or (
            state is not None and not (state.exists() and state.read_text())):
        assert time.monotonic() < deadline and run.is_alive(), "the first files never showed"
        time.sleep(0.3)


def test_a_cluster_gone_for_good_stops_the_run_by_its_breaker(
        own_opensearch, loader_env, two_months, gate, tmp_path, capsys):
    (root, expected), state = two_months, tmp_path / "state"
    args = ["--dir", str(root), "--json", "--workers", "2", "--state", str(state),
            "--breaker-seconds", "8", "--dead-letter-dir", str(tmp_path / "dl")]
    run, exit_codes = start_backfill(args)
    wait_for_progress(own_opensearch, loader_env, run, gate, state=state)

    own_services("stop")
    gate.released.set()
    run.join(RETRY_LIMIT)

    # Stopped by the breaker (its cause in the summary), not by each file's retry limit.
    assert not run.is_alive() and exit_codes == [cli.EXIT_FILES_FAILED]
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert "has not answered" in summary["stopped"] and "breaker limit 8 s" in summary["stopped"]
    assert "bulk_upload: stopped: the cluster has not answered" in captured.err
    assert summary["files_not_attempted"] > 0 and summary["files_loaded"] > 0
    done = [json.loads(line) for line in state.read_text().splitlines()]
    assert len(done) == len(set(done)) == summary["files_loaded"]

    # Once the cluster is back, a rerun with the same state loads the rest: nothing is lost.
    own_services("start")
    capsys.readouterr()
    assert cli.main(args) == cli.EXIT_OK
    rerun = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rerun["files_done_before"] == summary["files_loaded"]
    assert_corpus_indexed(own_opensearch, loader_env, expected)


def test_an_outage_shorter_than_the_breaker_time_is_ridden_out(
        own_opensearch, loader_env, two_months, gate, outage_seen, tmp_path, capsys):
    root, expected = two_months
    args = ["--dir", str(root), "--json", "--workers", "2", "--breaker-seconds", "400",
            "--dead-letter-dir", str(tmp_path / "dl")]
    run, exit_codes = start_backfill(args)
    wait_for_progress(own_opensearch, loader_env, run, gate)

    own_services("stop")
    gate.released.set()
    assert outage_seen.wait(PATIENCE), "the loader never met the outage"
    assert run.is_alive()
    own_services("start")
    run.join(RETRY_LIMIT)

    assert exit_codes == [cli.EXIT_OK]
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["files_failed"] == 0 and "stopped" not in summary
    # The outage was met (outage_seen) and ridden out: whether by a _bulk request (counted in
    # "retried", per event) or by the index's preparation before it (not an event's retry).
    assert_corpus_indexed(own_opensearch, loader_env, expected)


def test_a_cluster_answering_only_5xx_stops_backfill_and_redrive(
        loader_env, opensearch_url, monkeypatch, tmp_path, capsys):
    """Every ``_bulk`` answered 503 (a fault the real server cannot make on demand): an outage too."""
    from faultproxy import FaultProxy

    from cloudtrail_es.write import deadletter
    from cloudtrail_es.commands import redrive

    event = json.loads((Path(__file__).resolve().parents[1] / "events" / "transform"
                        / "run_instances.input.json").read_text())
    root = tmp_path / "logs" / "AWSLogs/111122223333/CloudTrail/eu-west-1/2024/01/15"
    root.mkdir(parents=True)
    for n in range(40):
        records = [{**event, "eventID": f"5xx-{n}-{m}"} for m in range(3)]
        (root / f"111122223333_CloudTrail_eu-west-1_20240115T0910Z_Fivexx{n:04d}.json.gz").write_bytes(
            gzip.compress(json.dumps({"Records": records}).encode()))
    dead = tmp_path / "dead"
    for n in range(3):
        (dead / f"f{n}.ndjson.gz").parent.mkdir(exist_ok=True)
        (dead / f"f{n}.ndjson.gz").write_bytes(deadletter.encode([deadletter.record(
            reason="test", status=400, error={}, bucket="b", key=str(next(root.iterdir())),
            index=f"{loader_env}-2024-01", doc_id=f"dead-{n}", event={**event, "eventID": f"dead-{n}"})]))

    with FaultProxy(opensearch_url) as proxy:
        proxy.bulk_request_faults = (1.0, ("503",))
        monkeypatch.setenv("ES_HOSTNAME", proxy.url)
        monkeypatch.setenv("RETRY_LIMIT_SECONDS", str(RETRY_LIMIT))
        exit_code = cli.main(["--dir", str(tmp_path / "logs"), "--json", "--workers", "1",
                              "--breaker-seconds", "3", "--state", str(tmp_path / "state")])
        captured = capsys.readouterr()
        assert exit_code == cli.EXIT_FILES_FAILED
        summary = json.loads(captured.out.strip().splitlines()[-1])
        assert "HTTP 503" in summary["stopped"] and summary["files_loaded"] == 0
        assert summary["files_failed"] + summary["files_not_attempted"] == 40

        assert redrive.main([str(dead), "--breaker-seconds", "3"]) == cli.EXIT_FILES_FAILED
        captured = capsys.readouterr()
        assert "redrive: stopped: the cluster has not answered" in captured.err
        assert captured.err.count("FAILED ") == 1  # stopped at the first file, by the breaker
    assert len(list(dead.iterdir())) == 3
