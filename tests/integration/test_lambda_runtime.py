"""The zip that deploy uploads, run by the real Lambda runtime loop: aws-lambda-rie driving
awslambdaric over the unzipped package (scripts/lambda_emulator.py), invoked over HTTP for every
route, against the real OpenSearch and moto server.

The package is built once for the module by scripts/package.py (as `make package` builds it, for
this machine's Python); the emulator and the runtime interface client come from
scripts/lambda_emulator.py's install (`make init`), or are installed here on first use.
"""
from __future__ import annotations

import json
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Callable, Iterator

import boto3
import pytest
import requests
import trails
from faultproxy import FaultProxy
from test_custom_resources import CloudFormationEndpoint, Recorder, _answer, _serve
from test_package import template_function

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import lambda_emulator  # noqa: E402 - a script of the repo, not a package

from cloudtrail_es.aws.handler import SAFETY_MARGIN_SECONDS  # noqa: E402

HANDLER = "lambda_function.lambda_handler"


@pytest.fixture(scope="module")
def runtime(tmp_path_factory) -> Path:
    """The emulator installed, and what the Lambda runtime has besides the code."""
    try:
        lambda_emulator.install_rie()
    except lambda_emulator.EmulatorError as exc:
        pytest.fail(str(exc), pytrace=False)
    return lambda_emulator.runtime_dir(tmp_path_factory.mktemp("runtime") / "runtime")


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Path:
    """The deployment zip, unzipped as Lambda unzips it into /var/task."""
    try:
        _, task = lambda_emulator.build_package(tmp_path_factory.mktemp("lambda"))
    except lambda_emulator.EmulatorError as exc:
        pytest.fail(str(exc), pytrace=False)
    return task


@pytest.fixture()
def function_env(aws_env, index_prefix) -> dict[str, str]:
    """The Lambda's environment (cloudformation.yml's), aimed at the local services."""
    return {"ES_AUTH": "none", "INDEX_PREFIX": index_prefix,
            "INDEX_REPLICAS": "0", "DETECTION_DELAY_MINUTES": "0", "RETENTION_MONTHS": "1",
            "AWS_ENDPOINT_URL": aws_env, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}


Start = Callable[..., lambda_emulator.Emulator]


@pytest.fixture()
def start(task, runtime, function_env, opensearch_url, tmp_path) -> Iterator[Start]:
    """Start the emulator over the package (stopped at the end); keyword arguments override."""
    running: list[lambda_emulator.Emulator] = []

    def started(handler: str = HANDLER, code: Path = task, timeout_seconds: int = 300,
                **environment: str) -> lambda_emulator.Emulator:
        env = {**function_env, "ES_HOSTNAME": opensearch_url, **environment}
        emulator = lambda_emulator.Emulator(code, handler, env, timeout_seconds=timeout_seconds,
                                            runtime=runtime, log_path=tmp_path / f"rie-{len(running)}.log")
        emulator.start()
        running.append(emulator)
        return emulator

    yield started
    for emulator in running:
        emulator.stop()


def _put_files(s3, bucket: str, files: dict[str, tuple[str, list[dict]]]) -> None:
    for key, records in files.values():
        s3.put_object(Bucket=bucket, Key=key, Body=trails.trail_file(records))


def _count(opensearch_url: str, index_pattern: str) -> tuple[int, int]:
    """Documents under the pattern, and distinct _ids among them."""
    requests.post(f"{opensearch_url}/{index_pattern}/_refresh", timeout=60).raise_for_status()
    answer = requests.post(f"{opensearch_url}/{index_pattern}/_search", timeout=60, json={
        "size": 0, "track_total_hits": True, "aggs": {"ids": {"cardinality": {"field": "_id"}}}}).json()
    return answer["hits"]["total"]["value"], answer["aggregations"]["ids"]["value"]


def test_every_route_through_the_runtime_loop(start, s3, bucket, opensearch_url, index_prefix):
    now = trails.recently()
    old = now - timedelta(days=62)
    files = {
        "sqs_old": (trails.log_key(old), trails.events(40, old)),
        "sqs_new": (trails.log_key(now), trails.events(30, now) + trails.events(
            1, now, eventSource="cloudtrail.amazonaws.com", eventName="StopLogging")),
        "s3": (trails.log_key(now), trails.events(20, now)),
        "eventbridge": (trails.log_key(now), trails.events(10, now)),
    }
    _put_files(s3, bucket, files)
    function = start()
    try:
        batch = trails.sqs_batch({"m-old": trails.s3_notification(bucket, files["sqs_old"][0]),
                                  "m-new": trails.s3_notification(bucket, files["sqs_new"][0]),
                                  "poison": {"hello": "world"}})
        assert function.invoke(batch).payload == {"batchItemFailures": [{"itemIdentifier": "poison"}]}
        assert function.invoke(trails.s3_notification(bucket, files["s3"][0])).payload["indexed"] == 20
        assert function.invoke(trails.eventbridge_notification(
            bucket, files["eventbridge"][0])).payload["indexed"] == 10
        unknown = function.invoke({"hello": "world"})
        assert unknown.error == "UnknownEvent"  # raised: Lambda reports the invocation failed
        assert _count(opensearch_url, f"{index_prefix}-*") == (101, 101)

        detection = function.invoke(trails.scheduled("detect")).payload
        assert detection["findings"] == 1 and detection["errors"] == [], detection
        old_index = f"{index_prefix}-{old:%Y-%m}"
        assert function.invoke(trails.scheduled("retention")).payload == {"deleted": [old_index]}
        assert _count(opensearch_url, f"{index_prefix}-*") == (61, 61)
        # One execution environment served them all: one init (the cold start), then warm.
        assert len(function.init_durations_ms()) == 1, function.log()[-3000:]
    finally:
        requests.delete(f"{opensearch_url}/{index_prefix}_findings*", timeout=60)


def _batch_for(bucket: str, files: dict[str, tuple[str, list[dict]]], message_ids: list[str]) -> dict:
    return trails.sqs_batch({m: trails.s3_notification(bucket, files[m][0]) for m in message_ids})


def test_a_timeout_shorter_than_the_work_loses_and_doubles_nothing(start, s3, bucket, opensearch_url,
                                                                   index_prefix):
    """Each _bulk takes 2.5 s (a slow cluster, by a proxy) and the function has the safety margin
    plus 2 s: each invocation loads one message and lists the others, which SQS redelivers."""
    now = trails.recently()
    files = {f"m{number}": (trails.log_key(now), trails.events(25, now)) for number in range(4)}
    _put_files(s3, bucket, files)
    with FaultProxy(opensearch_url) as slow:
        slow.bulk_delay_seconds = 2.5
        function = start(ES_HOSTNAME=slow.url, timeout_seconds=int(SAFETY_MARGIN_SECONDS) + 2)
        pending, rounds = sorted(files), []
        while pending:
            answer = function.invoke(_batch_for(bucket, files, pending))
            failed = [item["itemIdentifier"] for item in answer.payload["batchItemFailures"]]
            rounds.append(failed)
            assert failed == pending[1:], answer.payload  # the first loaded, the rest not started
            pending = failed
    assert rounds == [["m1", "m2", "m3"], ["m2", "m3"], ["m3"], []]
    assert _count(opensearch_url, f"{index_prefix}-*") == (100, 100)


def test_a_function_killed_at_its_timeout_loses_and_doubles_nothing(start, s3, bucket, opensearch_url,
                                                                    index_prefix):
    """Lambda's own timeout cuts the invocation mid-_bulk: SQS redelivers the whole batch, and the
    files indexed before or while it was cut are indexed again under the same _ids."""
    now = trails.recently()
    files = {f"m{number}": (trails.log_key(now), trails.events(30, now)) for number in range(3)}
    _put_files(s3, bucket, files)
    with FaultProxy(opensearch_url) as slow:
        slow.bulk_delay_seconds = 4.0
        function = start(ES_HOSTNAME=slow.url, timeout_seconds=3)
        cut = function.invoke(_batch_for(bucket, files, sorted(files)))
        assert cut.timed_out, cut.payload
        function.stop()
    again = start()  # the redelivery, with time enough
    assert again.invoke(_batch_for(bucket, files, sorted(files))).payload == {"batchItemFailures": []}
    assert _count(opensearch_url, f"{index_prefix}-*") == (90, 90)


# -- the SetupFunction's inline code (CloudFormation stores it as index.py) ---------------------

@pytest.fixture()
def setup_code(tmp_path) -> Path:
    code = tmp_path / "setup"
    code.mkdir()
    (code / "index.py").write_text(template_function("SetupFunction")["Code"]["ZipFile"], encoding="utf-8")
    return code


@pytest.fixture()
def cloudformation() -> Iterator[Recorder]:
    yield from _serve(CloudFormationEndpoint)


def _custom_resource(request_type: str, resource_type: str, response_url: str, properties: dict,
                     physical_id: str | None = None) -> dict:
    event = {"RequestType": request_type, "ResponseURL": f"{response_url}/signed?X-Amz-Signature=abc",
             "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/cloudtrail-es/5f3e",
             "RequestId": str(uuid.uuid4()), "ResourceType": resource_type, "LogicalResourceId": "Resource",
             "ResourceProperties": {"ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:setup",
                                    **properties}}
    if physical_id:
        event["PhysicalResourceId"] = physical_id
    return event


def test_the_setup_functions_custom_resources_through_the_runtime_loop(start, setup_code, cloudformation,
                                                                       opensearch_url, aws_env):
    logs, secrets = boto3.client("logs"), boto3.client("secretsmanager")
    name = f"ct2es-test-{uuid.uuid4().hex[:8]}"
    document = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "es.amazonaws.com"}, "Action": "logs:PutLogEvents",
        "Resource": "arn:aws:logs:us-east-1:123456789012:log-group:/aws/opensearch/x/*"}]})
    secret = secrets.create_secret(Name=name, SecretString=json.dumps(
        {"username": "admin", "password": "Pw-1234567890-abc"}))["ARN"]
    function = start("index.handler", code=setup_code, timeout_seconds=60)
    try:
        policy = _custom_resource("Create", "Custom::LogsResourcePolicy", cloudformation.url,
                                  {"PolicyName": name, "PolicyDocument": document})
        assert function.invoke(policy).payload is None  # the answer goes to the ResponseURL
        assert _answer(cloudformation, policy)["Status"] == "SUCCESS"
        assert name in [p["policyName"] for p in logs.describe_resource_policies()["resourcePolicies"]]

        # A domain without the security API (the local OpenSearch): Create fails, Delete does not.
        mapping = {"Endpoint": opensearch_url, "MasterUserSecretArn": secret, "OpenSearchRole": "loader",
                   "BackendRoles": ["arn:aws:iam::123456789012:role/loader"], "IndexPrefix": "ct"}
        create = _custom_resource("Create", "Custom::RoleMapping", cloudformation.url, mapping)
        function.invoke(create)
        answer = _answer(cloudformation, create)
        assert answer["Status"] == "FAILED" and "HTTP 400" in answer["Reason"], answer["Reason"]
        delete = _custom_resource("Delete", "Custom::RoleMapping", cloudformation.url, mapping,
                                  physical_id=f"{opensearch_url}/_plugins/_security/api/rolesmapping/loader")
        function.invoke(delete)
        answer = _answer(cloudformation, delete)
        assert answer["Status"] == "SUCCESS" and "not removed" in answer["Reason"], answer["Reason"]
    finally:
        logs.delete_resource_policy(policyName=name)
        secrets.delete_secret(SecretId=secret, ForceDeleteWithoutRecovery=True)
