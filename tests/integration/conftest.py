"""Fixtures over the real OpenSearch and moto server."""
from __future__ import annotations

import uuid
from pathlib import Path

import boto3
import pytest
import requests

import lambda_function
from support import months_by_event, trail_files
from cloudtrail_es.aws import handler as routes

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    """Every test under tests/integration needs the services: ``-m "not integration"`` skips them."""
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture()
def index_prefix(opensearch_url):
    """A fresh index prefix: the test starts with no index of its own; they are deleted after."""
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    yield prefix
    requests.delete(f"{opensearch_url}/{prefix}-*", timeout=60)


@pytest.fixture()
def loader_env(monkeypatch, opensearch_url, aws_env, index_prefix):
    """The environment the Lambda and the CLI read, aimed at the local services."""
    monkeypatch.setenv("ES_HOSTNAME", opensearch_url)
    monkeypatch.setenv("ES_AUTH", "none")
    monkeypatch.setenv("INDEX_PREFIX", index_prefix)
    monkeypatch.setenv("INDEX_REPLICAS", "0")
    return index_prefix


@pytest.fixture()
def handler(loader_env):
    """The Lambda's entry point with a processor built afresh from this test's environment."""
    routes.processor.cache_clear()
    yield lambda_function.lambda_handler
    routes.processor.cache_clear()


@pytest.fixture()
def s3(aws_env):
    return boto3.client("s3")


@pytest.fixture()
def bucket(s3):
    name = f"trail-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def corpus_files(corpus_dir):
    """(key, bytes) of every file of the trail, keyed as CloudTrail delivers them."""
    return trail_files(corpus_dir)


@pytest.fixture(scope="session")
def corpus_expectations(corpus_files):
    """eventID -> index suffix (YYYY-MM from the file name) for every event of the trail."""
    return months_by_event(corpus_files)
