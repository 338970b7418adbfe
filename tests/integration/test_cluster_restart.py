"""The real OpenSearch killed in the middle of a backfill, then restarted: nothing is lost."""
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import requests
from support import assert_corpus_indexed, indexed_count, services, upload

from cloudtrail_es.backfill import cli

# The trail is a load here: the shared corpus adds nothing to what these tests check.
pytestmark = pytest.mark.generated_trail_only

ROOT = Path(__file__).resolve().parents[2]
PORT = int(os.environ.get("RESTART_TEST_PORT", "9260"))


def own_services(action):
    services(action, PORT, timeout=300)


@pytest.fixture()
def own_opensearch():
    """An OpenSearch of this test's own, so that killing it disturbs no other test."""
    own_services("start")
    url = f"http://127.0.0.1:{PORT}"
    yield url
    requests.delete(f"{url}/test-*", timeout=60)
    own_services("stop")




def test_backfill_survives_a_killed_cluster_on_rerun(
        own_opensearch, loader_env, monkeypatch, s3, bucket, corpus_files, corpus_expectations,
        tmp_path, capsys):
    monkeypatch.setenv("ES_HOSTNAME", own_opensearch)
    monkeypatch.setenv("RETRY_LIMIT_SECONDS", "2")
    upload(s3, bucket, corpus_files)
    exit_codes = []
    first = threading.Thread(target=lambda: exit_codes.append(
        cli.main([bucket, "AWSLogs/", "--json", "--dead-letter-dir", str(tmp_path)])))
    first.start()
    deadline = time.monotonic() + 300
    while indexed_count(own_opensearch, loader_env) < 2000:
        assert time.monotonic() < deadline and first.is_alive(), "the backfill made no progress"
        time.sleep(0.5)

    engine = os.environ.get("ENGINE", "opensearch-2.19.6")
    pid = int((ROOT / ".services" / f"{engine}-{PORT}.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    time.sleep(5)
    own_services("start")
    first.join(900)

    assert exit_codes == [cli.EXIT_FILES_FAILED]
    first_summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first_summary["files_failed"] > 0
    assert first_summary["files_loaded"] + first_summary["files_failed"] == len(corpus_files)

    assert cli.main([bucket, "AWSLogs/", "--json", "--dead-letter-dir", str(tmp_path)]) == cli.EXIT_OK
    assert_corpus_indexed(own_opensearch, loader_env, corpus_expectations)
    assert not list(tmp_path.rglob("*.ndjson.gz"))
