"""The backfill at scale: filters, parallel workers, resume, dry run, export, queue, progress."""
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import boto3
import pytest
import requests
from faultproxy import FaultProxy
from support import assert_corpus_indexed, ids_by_index, read_terminal, refresh, upload

import lambda_function

from cloudtrail_es.aws import handler as routes
from cloudtrail_es.backfill import cli
from cloudtrail_es.backfill.selection import Filters, S3Listing
from cloudtrail_es.read.keys import parse_log_file_key

# The trail is a load here: the shared corpus adds nothing to what these tests check.
pytestmark = pytest.mark.generated_trail_only

ROOT = Path(__file__).resolve().parents[2]


def components(key):
    name = parse_log_file_key(key)
    return {"account": name.account, "region": name.region, "day": name.day}


def filter_case(trail_manifest):
    """(accounts, regions, start, end, prefixes the plan must hold) that select a part of the trail."""
    if trail_manifest is None:  # the shared corpus
        return ({"309303190113", "974349055189", "123456789012"}, {"us-east-1", "eu-west-1"},
                date(2016, 2, 14), date(2024, 3, 31),
                ["AWSLogs/974349055189/CloudTrail/us-east-1/2016/02/14/",
                 "AWSLogs/974349055189/CloudTrail/us-east-1/2016/03/"])
    org, accounts = trail_manifest["organisation"], sorted(trail_manifest["accounts"])
    return ({accounts[0], accounts[2]}, {"us-east-1"}, date(2025, 3, 28), date(2025, 4, 3),
            [f"AWSLogs/{org}/{accounts[0]}/CloudTrail/us-east-1/2025/03/28/",
             f"AWSLogs/{org}/{accounts[2]}/CloudTrail/us-east-1/2025/04/03/"])


def run_cli(args, env=None, **kwargs):
    return subprocess.run([sys.executable, "-m", "cloudtrail_es", *args], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src"), **(env or {})},
                          capture_output=True, text=True, timeout=600, **kwargs)


@pytest.fixture()
def loaded_bucket(s3, bucket, corpus_files):
    upload(s3, bucket, corpus_files)
    return bucket


def test_filters_select_exactly_the_expected_files_and_list_only_their_prefixes(
        loader_env, loaded_bucket, s3, corpus_files, trail_manifest, capsys):
    accounts, regions, start, end, prefixes = filter_case(trail_manifest)
    expected = sorted(k for k, _ in corpus_files
                      if components(k)["account"] in accounts and components(k)["region"] in regions
                      and start <= components(k)["day"] <= end)
    assert 20 < len(expected) < len(corpus_files) / 2

    assert cli.main([loaded_bucket, "AWSLogs/", "--dry-run", "--json", "--dates", str(start),
                     str(end), "--accounts", *accounts, "--regions", *regions]) == cli.EXIT_OK

    summary = json.loads(capsys.readouterr().out)
    assert sorted(summary["keys"]) == expected
    assert summary["files"] == len(expected)
    assert summary["bytes"] == sum(len(d) for k, d in corpus_files if k in set(expected))
    planned = S3Listing(s3).plan(loaded_bucket, "AWSLogs/", Filters(
        start, end, frozenset(accounts), frozenset(regions)))
    layout = [p.split("/")[2:5] if trail_manifest else p.split("/")[1:4] for p in planned]
    assert all(account in accounts and region in regions for account, _, region in layout)
    assert set(prefixes) <= set(planned)
    # A dry run writes nothing.
    assert requests.get(f"{os.environ['ES_HOSTNAME']}/{loader_env}-*", timeout=30).json() == {}


def test_an_interrupted_run_resumes_without_reprocessing(
        loader_env, loaded_bucket, corpus_files, corpus_expectations, opensearch_url, tmp_path):
    state = tmp_path / "state"
    with FaultProxy(opensearch_url) as proxy:
        env = {"ES_HOSTNAME": proxy.url}
        first = subprocess.Popen(
            [sys.executable, "-m", "cloudtrail_es", loaded_bucket, "AWSLogs/", "--workers", "2",
             "--state", str(state), "--json", "--quiet"], cwd=ROOT, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src"), **env})
        deadline = time.monotonic() + 300
        while not state.exists() or len(state.read_text().splitlines()) < 100:
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.1)
        first.send_signal(signal.SIGINT)
        out, err = first.communicate(timeout=120)
        assert first.returncode == cli.EXIT_INTERRUPTED, err
        done_first = [json.loads(line) for line in state.read_text().splitlines()]  # "bucket/key"
        assert 100 <= len(done_first) < len(corpus_files)
        assert json.loads(out)["files_loaded"] == len(done_first)
        second = run_cli([loaded_bucket, "AWSLogs/", "--state", str(state), "--json", "--quiet"],
                         env=env)

    assert second.returncode == cli.EXIT_OK, second.stderr
    summary = json.loads(second.stdout)
    assert summary["files_done_before"] == len(done_first)
    assert summary["files_loaded"] == len(corpus_files) - len(done_first)
    remaining = {k for k, _ in corpus_files} - {line.split("/", 1)[1] for line in done_first}
    assert summary["events_read"] == sum(
        len(json.loads(gzip.decompress(d))["Records"]) for k, d in corpus_files if k in remaining)
    assert len(set(state.read_text().splitlines())) == len(corpus_files)
    assert_corpus_indexed(opensearch_url, loader_env, corpus_expectations)
    # Nothing was sent twice: every index took exactly one index operation per document.
    for index in {n for n in ids_by_index(opensearch_url, loader_env).values()}:
        stats = requests.get(f"{opensearch_url}/{index}/_stats/indexing,docs", timeout=30).json()
        primaries = stats["_all"]["primaries"]
        assert primaries["indexing"]["index_total"] == primaries["docs"]["count"], index


def test_export_files_load_with_plain_curl_into_the_same_result(
        loader_env, loaded_bucket, corpus_files, opensearch_url, tmp_path, monkeypatch):
    sample = dict(corpus_files[:40])
    # The account is the folder above CloudTrail/ (an organisation trail has o-ORG/ before it).
    accounts = sorted({parts[parts.index(next(p for p in parts if p.startswith("CloudTrail"))) - 1]
                       for parts in (k.split("/") for k in sample)})
    out_dir = tmp_path / "bulk"
    exported = run_cli([loaded_bucket, "AWSLogs/", "--output", str(out_dir), "--json",
                        "--accounts", *accounts])
    assert exported.returncode == 0, exported.stderr
    assert cli.main([loaded_bucket, "AWSLogs/", "--json", "--quiet", "--accounts", *accounts]) == 0

    curl_prefix = f"curl-{loader_env}"
    for body in sorted(out_dir.glob("*.index.json")):
        index = body.name.removesuffix(".index.json").replace(loader_env, curl_prefix, 1)
        subprocess.run(["curl", "-sf", "-XPUT", f"{opensearch_url}/{index}", "-H",
                        "Content-Type: application/json", "--data-binary", f"@{body}"], check=True)
    for ndjson in sorted(out_dir.rglob("*.ndjson")):
        data = ndjson.read_text().replace(f'"_index":"{loader_env}-', f'"_index":"{curl_prefix}-')
        assert f'"_index":"{curl_prefix}-' in data
        rewritten = tmp_path / "one.ndjson"
        rewritten.write_text(data)
        answer = subprocess.run(["curl", "-sf", "-XPOST", f"{opensearch_url}/_bulk", "-H",
                                 "Content-Type: application/x-ndjson", "--data-binary",
                                 f"@{rewritten}"], check=True, capture_output=True, text=True)
        assert json.loads(answer.stdout)["errors"] is False

    loaded = ids_by_index(opensearch_url, loader_env)
    curled = ids_by_index(opensearch_url, curl_prefix)
    assert {i: n.replace(loader_env, "", 1) for i, n in loaded.items()} == {
        i: n.replace(curl_prefix, "", 1) for i, n in curled.items()}
    some_id = sorted(loaded)[len(loaded) // 2]
    docs = [requests.get(f"{opensearch_url}/{index}/_doc/{some_id}", timeout=30).json()["_source"]
            for index in (loaded[some_id], curled[some_id])]
    for doc in docs:  # event.ingested: when each was built, the export's or the load's
        assert doc["event"].pop("ingested")
    assert docs[0] == docs[1]
    requests.delete(f"{opensearch_url}/{curl_prefix}-*", timeout=30)


def test_via_queue_lands_every_event_through_the_handler(
        loader_env, loaded_bucket, corpus_files, corpus_expectations, opensearch_url, capsys):
    sqs = boto3.client("sqs")
    queue_url = sqs.create_queue(QueueName=f"{loaded_bucket}-backfill")["QueueUrl"]

    assert cli.main([loaded_bucket, "AWSLogs/", "--via-queue", queue_url, "--json"]) == 0

    summary = json.loads(capsys.readouterr().out)
    assert summary["files_enqueued"] == len(corpus_files) and summary["failed"] == []
    assert summary["batches"] == -(-len(corpus_files) // 10)
    routes.processor.cache_clear()
    failures = []
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            break
        event = {"Records": [{"messageId": m["MessageId"], "body": m["Body"],
                              "eventSource": "aws:sqs"} for m in messages]}
        failures += lambda_function.lambda_handler(event, None)["batchItemFailures"]
        for m in messages:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
    routes.processor.cache_clear()
    assert failures == []
    assert_corpus_indexed(opensearch_url, loader_env, corpus_expectations)


def test_local_directory_with_workers_and_filters(loader_env, corpus_dir, opensearch_url, capsys):
    assert cli.main(["--dir", str(corpus_dir), "--workers", "3", "--json", "--quiet",
                     "--regions", "sa-east-1", "eu-west-1"]) == cli.EXIT_OK
    summary = json.loads(capsys.readouterr().out)
    expected = [p for p in (corpus_dir / "AWSLogs").rglob("*.json.gz")
                if parse_log_file_key(p.name).region in ("sa-east-1", "eu-west-1")]
    assert summary["files_loaded"] == len(expected) > 10
    events = sum(len(json.loads(gzip.decompress(p.read_bytes()))["Records"]) for p in expected)
    refresh(opensearch_url, loader_env)
    assert requests.get(f"{opensearch_url}/{loader_env}-*/_count", timeout=30).json()["count"] == events


def test_progress_is_drawn_on_a_terminal(loader_env, loaded_bucket, corpus_files):
    code, text = read_terminal([loaded_bucket, "AWSLogs/", "--workers", "4"],
                               {**os.environ, "PYTHONPATH": str(ROOT / "src"), "LOG_LEVEL": "WARNING"}, ROOT)
    assert code == 0
    frames = [f for f in text.split("\r") if f.startswith("[")]
    assert len(frames) > 10
    assert f"files {len(corpus_files)}/{len(corpus_files)}" in frames[-1]
    for part in ("events/s", "MB", "ETA", "failed 0", "#"):
        assert part in frames[-1]
    assert f"files_loaded: {len(corpus_files)}" in text
