"""No secret in any output: credentials in ES_HOSTNAME, ES_PASSWORD, ES_API_KEY and AWS keys
appear in no log line, stdout, stderr, exception string or repr, on succeeding and failing runs."""
import gzip
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cloudtrail_es.backfill import cli
from cloudtrail_es.commands import redrive
from cloudtrail_es.commands import retention
from cloudtrail_es.write.cluster import ClusterUnreachable, create_cluster
from cloudtrail_es.core.config import Settings

# The trail is a load here: the shared corpus adds nothing to what these tests check.
pytestmark = [pytest.mark.integration, pytest.mark.generated_trail_only]

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "pw-Secret-7f3a9c"          # percent-encoded in the URL below
URL_PASSWORD = "pw%2DSecret%2D7f3a9c"
API_KEY = "apikey-Secret-2b8e41d0"
AWS_SECRET = "awsSecretKey/Secret+9d4e2f1a0b3c5d7e9f"
AWS_TOKEN = "awsSessionToken-Secret-1122334455667788"
SECRETS = (PASSWORD, URL_PASSWORD, API_KEY, AWS_SECRET, AWS_TOKEN)
CLOSED_PORT_URL = "http://127.0.0.1:9"   # discard: nothing listens there


def assert_no_secret(*texts):
    for text in texts:
        for secret in SECRETS:
            assert secret not in str(text), f"secret {secret!r} leaked in: {str(text)[:300]}"


def all_log_text(caplog):
    return [json.dumps({**vars(r), "message": r.getMessage()}, default=str) for r in caplog.records]


@pytest.fixture()
def secret_env(loader_env, monkeypatch, opensearch_url):
    """The loader's environment with every kind of secret set; OpenSearch ignores the credentials."""
    host = opensearch_url.split("://", 1)[1]
    monkeypatch.setenv("ES_HOSTNAME", f"http://ct-user:{URL_PASSWORD}@{host}")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", AWS_TOKEN)
    return host


@pytest.fixture()
def few_files(corpus_dir, tmp_path):
    """Three corpus files and one corrupt one, in a directory laid out as CloudTrail does."""
    root = tmp_path / "logs"
    files = sorted((corpus_dir / "AWSLogs").rglob("*.json.gz"))[:3]
    for path in files:
        target = root / path.relative_to(corpus_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    bad = root / files[0].relative_to(corpus_dir).parent / \
        "111122223333_CloudTrail_us-east-1_20240101T0000Z_corrupt.json.gz"
    bad.write_bytes(gzip.compress(b"not json"))
    return root


def test_settings_repr_hides_password_and_api_key():
    for env in ({"ES_HOSTNAME": f"https://u:{URL_PASSWORD}@h", "ES_API_KEY": API_KEY,
                 "ES_AUTH": "basic"},
                {"ES_HOSTNAME": "h", "ES_USERNAME": "u", "ES_PASSWORD": PASSWORD}):
        settings = Settings.from_env(env)
        assert settings.password == PASSWORD or settings.api_key == API_KEY
        assert_no_secret(repr(settings), str(settings), settings.es_url)


def test_credentials_in_the_url_are_used_as_basic_auth_and_kept_out_of_the_url():
    settings = Settings.from_env({"ES_HOSTNAME": f"https://ct-user:{URL_PASSWORD}@search.example:9200"})
    assert (settings.auth, settings.username, settings.password) == ("basic", "ct-user", PASSWORD)
    assert settings.es_url == "https://search.example:9200"


def test_a_run_that_loads_and_one_that_fails_files_print_no_secret(
        secret_env, few_files, tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    exit_code = cli.main(["--dir", str(few_files), "--json", "--log-level", "DEBUG",
                          "--dead-letter-dir", str(tmp_path / "dl")])
    out, err = capsys.readouterr()
    assert exit_code == cli.EXIT_FILES_FAILED  # the corrupt file
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["files_loaded"] == 3 and summary["files_failed"] == 1
    assert '"message": "cluster"' in err and "FAILED" in err
    assert_no_secret(out, err, *all_log_text(caplog))


@pytest.mark.parametrize("extra_env", [{}, {"ES_AUTH": "apikey", "ES_API_KEY": API_KEY},
                                       {"ES_USERNAME": "u", "ES_PASSWORD": PASSWORD}])
def test_an_unreachable_cluster_prints_no_secret(secret_env, few_files, monkeypatch, caplog, capsys,
                                                 extra_env):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("ES_HOSTNAME", f"http://ct-user:{URL_PASSWORD}@127.0.0.1:9")
    for name, value in extra_env.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["--dir", str(few_files), "--json"]) == cli.EXIT_USAGE
    assert redrive.main([str(few_files)]) == cli.EXIT_USAGE
    assert retention.main(["--months", "3"]) == cli.EXIT_USAGE
    out, err = capsys.readouterr()
    assert "127.0.0.1:9" in err  # the error names the cluster, without its credentials
    assert_no_secret(out, err, *all_log_text(caplog))


def test_exceptions_from_requests_embed_no_credentials(monkeypatch):
    settings = Settings.from_env({"ES_HOSTNAME": f"http://ct-user:{URL_PASSWORD}@127.0.0.1:9"})
    cluster = create_cluster(settings)
    with pytest.raises(ClusterUnreachable) as raised:
        cluster.request("GET", "/")
    chain = [raised.value, raised.value.__cause__]
    assert_no_secret(*(str(e) for e in chain), *(repr(e) for e in chain), repr(settings))


@pytest.mark.parametrize("reachable", [True, False])
def test_the_cli_as_a_process_prints_no_secret(loader_env, opensearch_url, few_files, tmp_path,
                                               reachable):
    host = opensearch_url.split("://", 1)[1] if reachable else "127.0.0.1:9"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "ES_HOSTNAME":
           f"http://ct-user:{URL_PASSWORD}@{host}", "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
           "AWS_SESSION_TOKEN": AWS_TOKEN, "ES_API_KEY": API_KEY, "ES_AUTH": "basic"}
    done = subprocess.run([sys.executable, "-m", "cloudtrail_es", "--dir", str(few_files),
                           "--log-level", "DEBUG", "--dead-letter-dir", str(tmp_path / "dl")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == (cli.EXIT_FILES_FAILED if reachable else cli.EXIT_USAGE), done.stderr
    assert ("files_loaded: 3" in done.stdout) == reachable
    assert_no_secret(done.stdout, done.stderr)
