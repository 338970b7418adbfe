"""The deploy path against moto server: `make deploy` replaces a function's code; the README's
commands create the stack (existing-cluster mode: moto cannot create an OpenSearch domain),
`make deploy` uploads the package, and a file goes through the stack's queue to the loader."""
from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import boto3
import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
FUNCTION = "ct2es-deploy-test"
ROLE = "ct2es-deploy-test-role"
TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
                   "Action": "sts:AssumeRole"}],
}


def run_make(*args: str) -> None:
    """make in the repo root, with this venv and none of an outer make's flags."""
    if shutil.which("make") is None:
        pytest.fail("`make` is not on PATH", pytrace=False)
    leaked = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "VIRTUAL_ENV")
    env = {key: value for key, value in os.environ.items() if key not in leaked}
    if sys.prefix != sys.base_prefix:
        args += (f"VENV={sys.prefix}",)
    result = subprocess.run(["make", *args], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=900)
    if result.returncode != 0:
        pytest.fail(f"make {' '.join(args)} exited {result.returncode}:\n"
                    f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}", pytrace=False)


def code_sha256(data: bytes) -> str:
    """What Lambda reports as CodeSha256: base64 of the zip's SHA-256 digest."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def placeholder_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("lambda_function.py", "def lambda_handler(event, context):\n"
                                               "    raise RuntimeError('placeholder')\n")
    return buffer.getvalue()


@pytest.fixture()
def placeholder_function(aws_env):
    """A Lambda function with placeholder code, as the CloudFormation stack creates it."""
    iam, lambda_ = boto3.client("iam"), boto3.client("lambda")
    try:
        role_arn = iam.get_role(RoleName=ROLE)["Role"]["Arn"]
    except iam.exceptions.NoSuchEntityException:
        role_arn = iam.create_role(RoleName=ROLE, AssumeRolePolicyDocument=json.dumps(
            TRUST_POLICY))["Role"]["Arn"]
    try:
        lambda_.delete_function(FunctionName=FUNCTION)  # left over from an earlier run
    except lambda_.exceptions.ResourceNotFoundException:
        pass
    code = placeholder_zip()
    lambda_.create_function(FunctionName=FUNCTION, Runtime="python3.12", Role=role_arn,
                            Handler="lambda_function.lambda_handler", Code={"ZipFile": code})
    yield code_sha256(code)
    lambda_.delete_function(FunctionName=FUNCTION)


def test_deploy_replaces_the_function_code(placeholder_function, tmp_path):
    artifact = tmp_path / "a.zip"

    run_make("-f", "Makefile.pip", "deploy", f"LAMBDA_NAME={FUNCTION}", f"ARTIFACT={artifact}")

    deployed = boto3.client("lambda").get_function(FunctionName=FUNCTION)["Configuration"]
    assert deployed["CodeSha256"] == code_sha256(artifact.read_bytes())
    assert deployed["CodeSha256"] != placeholder_function


# ---------------------------------------------------------------------------
# The README's deploy path, against moto server's CloudFormation (existing-cluster mode)
# ---------------------------------------------------------------------------
README = ROOT / "README.md"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
SAMPLE = ROOT / "tests" / "events" / "transform" / "run_instances.input.json"


def sh_blocks(text: str, after: str) -> list[list[str]]:
    """The one-line commands of each ```sh block following the heading ``after``."""
    section = text.split(f"\n{after}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^ *```sh\n(.*?)^ *```$", section, re.MULTILINE | re.DOTALL)
    return [[line.strip() for line in block.splitlines() if line.strip()] for block in blocks]


def moto_localhost(moto_url: str) -> str:
    """moto reads a change set's TemplateURL from its own S3 only when the host says localhost."""
    return moto_url.replace("127.0.0.1", "localhost")


def run_shell(script: str, env: dict[str, str]) -> str:
    result = subprocess.run(["bash", "-c", "set -euo pipefail\n" + script], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        pytest.fail(f"exited {result.returncode}:\n{script}\n{result.stdout[-3000:]}\n"
                    f"{result.stderr[-3000:]}", pytrace=False)
    return result.stdout


@pytest.fixture()
def deployment(aws_env, moto_url, monkeypatch, tmp_path):
    """Names unique to this run, a trail bucket with one file, the cluster's secret; cleanup."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_localhost(moto_url))
    run = uuid.uuid4().hex[:10]
    names = {"stack": f"ct2es-{run}", "function": f"ct2es-{run}", "bucket": f"trail-{run}",
             "prefix": f"test-{run}"}
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=names["bucket"])
    event = json.loads(SAMPLE.read_text())
    key = ("org-trail/AWSLogs/123456789012/CloudTrail/us-east-1/2024/03/05/"
           "123456789012_CloudTrail_us-east-1_20240305T0000Z_deploytest.json.gz")
    s3.put_object(Bucket=names["bucket"], Key=key, Body=gzip.compress(json.dumps({"Records": [event]}).encode()))
    names["event_id"] = event["eventID"]
    names["secret"] = boto3.client("secretsmanager").create_secret(
        Name=f"cloudtrail-loader-{run}",
        SecretString=json.dumps({"username": "loader", "password": f"pw-{run}"}))["ARN"]
    env = {key: value for key, value in os.environ.items()
           if key not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "VIRTUAL_ENV")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    names["env"] = env
    yield names
    cloudformation = boto3.client("cloudformation")
    cloudformation.delete_stack(StackName=names["stack"])
    boto3.client("secretsmanager").delete_secret(SecretId=names["secret"], ForceDeleteWithoutRecovery=True)


def as_in_this_run(command: str, names: dict[str, str]) -> str:
    """A documented command with this run's names (and the local secret) in place of the examples."""
    replaced = (command.replace("--stack-name cloudtrail-es ", f"--stack-name {names['stack']} ")
                .replace("CloudTrailBucket=my-trail-bucket", f"CloudTrailBucket={names['bucket']}")
                .replace("my-trail-bucket org-trail/AWSLogs/", f"{names['bucket']} org-trail/AWSLogs/"))
    replaced = re.sub(r"ClusterSecretArn=\S+", f"ClusterSecretArn={names['secret']}", replaced)
    if "--parameter-overrides" in replaced:  # a function and indexes of this run's own
        replaced += f" LambdaName={names['function']} IndexPrefix={names['prefix']}"
    return replaced


def test_readme_deploy_commands_then_make_deploy_in_existing_cluster_mode(
        deployment, tmp_path, monkeypatch, opensearch_url):
    """README's commands as written (moto cannot create a domain, so the deploy command is
    docs/deploy.md's existing-cluster one), `make deploy`, then a file through the queue."""
    (readme_block,) = sh_blocks(README.read_text(), "## Deploy")
    existing_cluster = next(c for block in sh_blocks(DEPLOY_DOC.read_text(), "## An existing cluster instead of a new domain")
                            for c in block if "ClusterEndpoint=" in c)
    deploy_index = next(i for i, c in enumerate(readme_block) if c.startswith("aws cloudformation deploy"))
    before, after = readme_block[:deploy_index], readme_block[deploy_index + 1:]
    assert after[0] == "make -f Makefile.pip deploy", after
    # The README's deploy and the documented existing-cluster one differ only in the cluster.
    assert existing_cluster.split("--parameter-overrides")[0] == \
        readme_block[deploy_index].split("--parameter-overrides")[0]
    assert "--s3-bucket" in existing_cluster

    deploy = "\n".join([*before, as_in_this_run(existing_cluster, deployment)])
    run_shell(deploy, deployment["env"])
    # (Running it again is not tried: moto executes an empty change set as an update, and its
    # update of an EventBridge rule whose Condition is false fails.)

    cloudformation, lambda_ = boto3.client("cloudformation"), boto3.client("lambda")
    assert cloudformation.describe_stacks(StackName=deployment["stack"])["Stacks"][0]["StackStatus"] \
        in ("CREATE_COMPLETE", "UPDATE_COMPLETE")
    created = {r["LogicalResourceId"] for r in cloudformation.describe_stack_resources(
        StackName=deployment["stack"])["StackResources"] if r.get("LogicalResourceId")}
    assert {"LambdaFunction", "LambdaRole", "LambdaLogGroup", "EventQueue", "EventDeadLetterQueue",
            "AsyncFailureQueue", "EventQueueMapping", "NotificationFunction",
            "TrailBucketNotification"} <= created
    assert not created & {"Domain", "MasterUserSecret", "SetupFunction", "SharedLogsResourcePolicy",
                          "LambdaRoleMapping", "DomainApplicationLogGroup"}
    function = lambda_.get_function_configuration(FunctionName=deployment["function"])
    env = function["Environment"]["Variables"]
    assert env["ES_HOSTNAME"] == "https://opensearch.example.com:9200"
    assert env["ES_AUTH"] == "basic" and env["ES_SECRET_ARN"] == deployment["secret"]
    assert not {"ES_PASSWORD", "ES_USERNAME", "ES_API_KEY"} & env.keys()
    (group,) = [g for g in boto3.client("logs").describe_log_groups(
        logGroupNamePrefix=f"/aws/lambda/{deployment['function']}")["logGroups"]
        if g["logGroupName"] == f"/aws/lambda/{deployment['function']}"]
    assert group["retentionInDays"] == 365

    artifact = tmp_path / "a.zip"
    run_make("-f", "Makefile.pip", "deploy", f"LAMBDA_NAME={deployment['function']}", f"ARTIFACT={artifact}")
    deployed = lambda_.get_function_configuration(FunctionName=deployment["function"])
    assert deployed["CodeSha256"] == code_sha256(artifact.read_bytes())

    queue_url = run_shell("\n".join([as_in_this_run(after[1], deployment), 'echo "$QUEUE_URL"']),
                          deployment["env"]).strip().splitlines()[-1]
    (mapping,) = lambda_.list_event_source_mappings(FunctionName=deployment["function"])["EventSourceMappings"]
    sqs = boto3.client("sqs")
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    assert mapping["EventSourceArn"] == queue_arn["QueueArn"]
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert json.loads(queue_arn["RedrivePolicy"])["maxReceiveCount"] == 5
    assert queue_arn["VisibilityTimeout"] == "1800"

    backfill = as_in_this_run(after[2], deployment).replace('"$QUEUE_URL"', queue_url)
    run_shell(backfill, deployment["env"])
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    assert len(messages) == 1

    # The loader with the deployed function's environment (its cluster: the local OpenSearch,
    # since the documented endpoint is an example) takes the message from the queue.
    for name in [k for k in os.environ if k.startswith(("ES_", "INDEX_"))]:
        monkeypatch.delenv(name)
    for name, value in {**env, "ES_HOSTNAME": opensearch_url}.items():
        monkeypatch.setenv(name, str(value))
    from cloudtrail_es.aws import handler

    handler.processor.cache_clear()
    records = [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                "eventSource": "aws:sqs", "eventSourceARN": queue_arn["QueueArn"]} for m in messages]
    try:
        answer = handler.lambda_handler({"Records": records}, LambdaContext(deployment["function"]))
    finally:
        handler.processor.cache_clear()
    assert answer == {"batchItemFailures": []}
    # ES_AUTH=basic: the Settings refuse to start without the secret's user and password.
    found = requests.get(f"{opensearch_url}/{deployment['prefix']}-2024-03/_doc/{deployment['event_id']}",
                         timeout=30)
    requests.delete(f"{opensearch_url}/{deployment['prefix']}-*", timeout=60)
    assert found.status_code == 200 and found.json()["found"], found.text


class LambdaContext:
    def __init__(self, function_name: str) -> None:
        self.function_name = function_name

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 300_000


def test_the_companion_template_deploys_as_documented(deployment):
    """docs/deploy.md's command for the trail bucket's account (sent inline: it is small)."""
    command = next(c for block in sh_blocks(DEPLOY_DOC.read_text(), "## Organization trails: the bucket in another account")
                   for c in block if "cloudformation-trail-bucket.yml" in c)
    assert "--s3-bucket" not in command
    queue = boto3.client("sqs").create_queue(QueueName=f"{deployment['stack']}-queue")["QueueUrl"]
    queue_arn = boto3.client("sqs").get_queue_attributes(
        QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    command = (command.replace("--stack-name cloudtrail-es-bucket ", f"--stack-name {deployment['stack']} ")
               .replace("TrailBucket=my-trail-bucket", f"TrailBucket={deployment['bucket']}"))
    command = re.sub(r"EventQueueArn=\S+", f"EventQueueArn={queue_arn}", command)
    run_shell(command, deployment["env"])
    created = {r["LogicalResourceId"] for r in boto3.client("cloudformation").describe_stack_resources(
        StackName=deployment["stack"])["StackResources"] if r.get("LogicalResourceId")}
    assert created == {"NotificationLogGroup", "NotificationRole", "NotificationFunction",
                       "TrailBucketNotification"}
    function = boto3.client("lambda").get_function_configuration(
        FunctionName=next(r["PhysicalResourceId"] for r in boto3.client("cloudformation").describe_stack_resources(
            StackName=deployment["stack"])["StackResources"] if r.get("LogicalResourceId") == "NotificationFunction"))
    assert function["Handler"] == "index.handler" and function["Runtime"] == "python3.12"
