"""The backfill and its helpers as a new user meets them, against moto and the real OpenSearch:
wrong input is a usage error with one line, the progress bar on a terminal, the Lambda handler
run locally from an SQS queue (scripts/local_lambda.py)."""
import gzip
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest
import requests

from support import read_terminal
from cloudtrail_es.backfill import cli
from cloudtrail_es.commands import dashboards

ROOT = Path(__file__).resolve().parents[2]

# The trail is a load here: the shared corpus adds nothing to what these tests check.
pytestmark = [pytest.mark.integration, pytest.mark.generated_trail_only]


def one_line(err):
    """The error: one line, besides the structured (JSON) log lines, and no traceback."""
    [line] = [line for line in err.splitlines() if not line.startswith("{")]
    assert "Traceback" not in err
    return line


def put_files(s3, bucket, files):
    for key, data in files:
        s3.put_object(Bucket=bucket, Key=key, Body=data)


def test_a_missing_bucket_is_one_line_and_exit_2(loader_env, capsys):
    name = f"missing-{uuid.uuid4().hex[:12]}"

    assert cli.main([name, "AWSLogs/"]) == cli.EXIT_USAGE

    line = one_line(capsys.readouterr().err)
    assert f"bucket {name}" in line and "NoSuchBucket" in line


def test_a_prefix_without_cloudtrail_files_names_what_was_searched(loader_env, s3, bucket, corpus_files,
                                                                  capsys):
    put_files(s3, bucket, corpus_files[:2])

    assert cli.main([bucket, "CloudTrail/"]) == cli.EXIT_USAGE

    assert f"no CloudTrail log file in s3://{bucket}/CloudTrail/" in one_line(capsys.readouterr().err)


def test_a_missing_queue_is_one_line_and_exit_2(loader_env, s3, bucket, corpus_files, moto_url, capsys):
    put_files(s3, bucket, corpus_files[:1])
    queue_url = f"{moto_url}/123456789012/missing-{uuid.uuid4().hex[:8]}"

    assert cli.main([bucket, "AWSLogs/", "--via-queue", queue_url]) == cli.EXIT_USAGE

    line = one_line(capsys.readouterr().err)
    assert f"--via-queue {queue_url}" in line and "NonExistentQueue" in line


@pytest.mark.parametrize("variable, value", [("INDEX_SHARDS", "0"), ("INDEX_REPLICAS", "-1"),
                                             ("INDEX_PREFIX", "")])
def test_a_setting_the_cluster_would_refuse_stops_the_run_before_any_index(
        loader_env, monkeypatch, corpus_dir, opensearch_url, capsys, variable, value):
    monkeypatch.setenv(variable, value)

    assert cli.main(["--dir", str(corpus_dir), "--regions", "eu-west-1"]) == cli.EXIT_USAGE

    assert variable in one_line(capsys.readouterr().err)
    assert requests.get(f"{opensearch_url}/_cat/indices/{loader_env}-*?format=json", timeout=30).json() == []


def test_dashboards_says_plainly_that_opensearch_is_not_dashboards(loader_env, opensearch_url, capsys):
    assert dashboards.main(["--url", opensearch_url]) == 2

    line = one_line(capsys.readouterr().err)
    assert f"no OpenSearch Dashboards saved objects API answers at {opensearch_url}" in line


@pytest.fixture()
def mirror(tmp_path, corpus_dir):
    """Thirty corpus files and a file that is not a log, as `aws s3 sync` would leave them."""
    paths = sorted((corpus_dir / "AWSLogs").rglob("*.json.gz"))[:30]
    for path in paths:
        target = tmp_path / "mirror" / path.relative_to(corpus_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    (tmp_path / "mirror" / "AWSLogs" / "notes.txt").write_text("not a log")
    return tmp_path / "mirror", len(paths)


def terminal_env():
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("LOG_LEVEL", None)
    return env


def test_a_terminal_shows_the_bar_to_its_end_and_no_per_file_lines(loader_env, mirror, tmp_path):
    directory, files = mirror

    code, screen = read_terminal(["--dir", str(directory), "--dead-letter-dir", str(tmp_path / "dl")],
                                 terminal_env(), tmp_path)

    assert code == cli.EXIT_OK, screen
    frames = [f for f in screen.split("\r") if f.startswith("[")]
    assert frames and f"files {files}/{files}" in frames[-1] and "[" + "#" * 30 + "]" in frames[-1]
    assert '"file loaded"' not in screen and "files_skipped: 1" in screen


def test_per_file_lines_on_a_terminal_when_asked(loader_env, mirror, tmp_path):
    directory, files = mirror

    code, screen = read_terminal(["--dir", str(directory), "--log-level", "info", "--dead-letter-dir",
                                  str(tmp_path / "dl")], terminal_env(), tmp_path)

    assert code == cli.EXIT_OK, screen
    assert screen.count('"file loaded"') == files


def test_the_lambda_handler_runs_locally_from_the_queue(loader_env, s3, bucket, corpus_files, opensearch_url,
                                                        moto_url):
    files = corpus_files[:12]
    put_files(s3, bucket, files)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}

    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "local_lambda.py"), bucket, "AWSLogs/"],
                          env=env, capture_output=True, text=True, timeout=600)

    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    # The handler's CloudWatch EMF records (metrics.emit) share stdout, as in Lambda's log.
    [sent, *results] = [line for line in lines if "_aws" not in line]
    assert any("_aws" in line for line in lines)
    assert sent["messages_sent"] == len(files)
    assert results and all(r == {"batchItemFailures": []} for r in results)
    requests.post(f"{opensearch_url}/{loader_env}-*/_refresh", timeout=60)
    events = sum(len(json.loads(gzip.decompress(data))["Records"]) for _, data in files)
    assert requests.get(f"{opensearch_url}/{loader_env}-*/_count", timeout=30).json()["count"] == events
    sqs = boto3.client("sqs")
    queue_url = sqs.get_queue_url(QueueName=f"{bucket}-local-lambda")["QueueUrl"]
    assert sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=0).get("Messages", []) == []
