"""Shared fixtures: where the real services are, and the shared corpus."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[1]
EVENTS_DIR = Path(__file__).resolve().parent / "events"
CORPUS_DIR = ROOT.parent / "shared" / "corpus"

OPENSEARCH_URL = os.environ.get(
    "OPENSEARCH_URL", f"http://127.0.0.1:{os.environ.get('OPENSEARCH_PORT', '9200')}"
)
MOTO_URL = os.environ.get("MOTO_URL", f"http://127.0.0.1:{os.environ.get('MOTO_PORT', '5000')}")


def _require(url: str, what: str) -> str:
    try:
        requests.get(url, timeout=5)
        return url
    except requests.RequestException as exc:
        problem = f"{type(exc).__name__}: {exc}"
    pytest.fail(f"{what} is not reachable at {url} ({problem}); start it with "
                "`make -f Makefile.pip services`", pytrace=False)


@pytest.fixture(scope="session")
def opensearch_url() -> str:
    """The real OpenSearch started by scripts/services.sh."""
    return _require(OPENSEARCH_URL, "OpenSearch")


@pytest.fixture(scope="session")
def moto_url() -> str:
    """The moto server started by scripts/services.sh."""
    return _require(MOTO_URL, "moto server")


@pytest.fixture()
def aws_env(moto_url, monkeypatch):
    """Point boto3 (and the aws CLI) at moto server with dummy credentials."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    return moto_url


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """../shared/corpus: real CloudTrail files; absent outside this workspace."""
    if not (CORPUS_DIR / "AWSLogs").is_dir():
        pytest.skip(f"shared corpus not found at {CORPUS_DIR} (it lives beside the repo)")
    return CORPUS_DIR
