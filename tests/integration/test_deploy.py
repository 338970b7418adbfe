"""`make deploy` uploads the built package as the code of an existing Lambda (moto server)."""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import boto3
import pytest

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
