"""bulk_upload.py over the whole shared corpus, from moto S3 into the real OpenSearch."""
import json
import os
import subprocess
import sys
from pathlib import Path

import requests
from support import assert_corpus_indexed, refresh, search, upload

from cloudtrail_es.backfill import cli

ROOT = Path(__file__).resolve().parents[2]


def test_backfill_loads_every_corpus_event_into_its_monthly_index(
        loader_env, s3, bucket, corpus_files, corpus_expectations, opensearch_url, capsys):
    upload(s3, bucket, corpus_files)
    s3.put_object(Bucket=bucket, Key="AWSLogs/111122223333/CloudTrail-Digest/us-east-1/2024/01/01/"
                  "111122223333_CloudTrail-Digest_us-east-1_t_us-east-1_20240101T000000Z.json.gz",
                  Body=b"{}")

    exit_code = cli.main([bucket, "AWSLogs/", "--json"])

    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert exit_code == cli.EXIT_OK
    assert summary["files_loaded"] == len(corpus_files) and summary["files_skipped"] == 1
    assert summary["events_read"] == summary["indexed"] == len(corpus_expectations)
    assert summary["files_failed"] == summary["degraded"] == summary["dead_lettered"] == 0
    per_index = assert_corpus_indexed(opensearch_url, loader_env, corpus_expectations)
    assert len(per_index) == len(set(corpus_expectations.values())) > 1

    hits = search(opensearch_url, loader_env,
                  {"term": {"responseElements_flattened.instanceId": _any_run_instances_id(
                      opensearch_url, loader_env)}})
    assert "RunInstances" in {hit["_source"]["eventName"] for hit in hits}

    # Re-running is idempotent: same documents, no duplicates.
    assert cli.main([bucket, "AWSLogs/", "--json"]) == cli.EXIT_OK
    assert_corpus_indexed(opensearch_url, loader_env, corpus_expectations)


def _any_run_instances_id(opensearch_url, prefix):
    hits = search(opensearch_url, prefix, {"bool": {"filter": [
        {"term": {"eventName": "RunInstances"}},
        {"exists": {"field": "responseElements_flattened.instanceId"}}]}})
    assert hits, "the corpus has RunInstances events with instance ids"
    return hits[0]["_source"]["responseElements_flattened"]["instanceId"][0]


def test_the_seed_command_runs_as_written(loader_env, s3, bucket, corpus_files, opensearch_url):
    upload(s3, bucket, corpus_files[:3])
    for command in ([sys.executable, "src/bulk_upload.py", bucket, "AWSLogs/", "--json"],
                    [sys.executable, "-m", "cloudtrail_es", bucket, "AWSLogs/", "--json"]):
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, timeout=300)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["files_loaded"] == 3
        assert '"message": "file loaded"' in done.stderr


def test_unreachable_cluster_is_a_usage_error(loader_env, monkeypatch, bucket, capsys):
    monkeypatch.setenv("ES_HOSTNAME", "http://127.0.0.1:9")
    assert cli.main([bucket, ""]) == cli.EXIT_USAGE
    assert "127.0.0.1:9" in capsys.readouterr().err


def test_a_bad_file_fails_the_run_and_the_others_still_land(
        loader_env, s3, bucket, corpus_files, opensearch_url, capsys):
    good = corpus_files[:2]
    upload(s3, bucket, good)
    bad_key = good[0][0].replace(".json.gz", "").rsplit("_", 1)[0] + "_BrokenBroken0001.json.gz"
    s3.put_object(Bucket=bucket, Key=bad_key, Body=b"\x1f\x8b\x08\x00 truncated")

    assert cli.main([bucket, "AWSLogs/", "--json"]) == cli.EXIT_FILES_FAILED

    captured = capsys.readouterr()
    assert f"s3://{bucket}/{bad_key}: corrupt gzip" in captured.err
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["files_loaded"] == 2 and summary["files_failed"] == 1
    refresh(opensearch_url, loader_env)
    count = requests.get(f"{opensearch_url}/{loader_env}-*/_count", timeout=30).json()["count"]
    assert count == summary["indexed"] > 0
