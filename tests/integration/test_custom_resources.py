"""The stack's custom resources (src/cloudtrail_es/aws/rolemapping.py), end to end on this machine.

- CloudFormation's side is a local HTTP server standing in for the pre-signed ResponseURL: it
  records every PUT, so each test asserts what CloudFormation would have been told.
- The master user's secret and the logs resource policy live in the real moto server.
- Faults the real security plugin cannot produce on demand (429, 503, a hang, a count of the
  requests) come from a small recording server that keeps roles and mappings the way the
  plugin's REST API does; a refusal is also taken from the real OpenSearch 2.19 (which answers
  400 to the security API paths it does not have). The real plugin is in test_security_plugin.py.
"""
from __future__ import annotations

import base64
import json
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import boto3
import pytest

from cloudtrail_es.aws import rolemapping
from cloudtrail_es.aws.rolemapping import SECURITY_API, SECURITY_API_PATHS, Services, handle, loader_role

pytestmark = pytest.mark.integration

LAMBDA_ROLE = "arn:aws:iam::123456789012:role/cloudtrail-es-LambdaRole-ABC"
NEW_LAMBDA_ROLE = "arn:aws:iam::123456789012:role/cloudtrail-es-LambdaRole-XYZ"
PASSWORD = "Pw-1234567890-abcdefghij+ABCDEFG"
# More than REPORT_RESERVE_SECONDS, so that some time is left for the work itself.
REMAINING = rolemapping.REPORT_RESERVE_SECONDS + 5.0


class Recorder(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.requests: list[dict[str, Any]] = []
        self.roles: dict[str, dict] = {}
        self.mappings: dict[str, dict] = {}
        self.faults: list[int] = []  # statuses to answer next, before behaving
        self.hang = threading.Event()  # set: requests hang until it is cleared
        self.release = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class CloudFormationEndpoint(BaseHTTPRequestHandler):
    """The ResponseURL: records each PUT (body parsed) and answers 200 as S3 does."""

    server: Recorder

    def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append({"path": self.path, "body": json.loads(body),
                                     "content_type": self.headers.get("Content-Type")})
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


class SecurityPlugin(BaseHTTPRequestHandler):
    """PUT/DELETE of roles and rolesmapping, as the security plugin's REST API answers them."""

    server: Recorder

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.server.requests.append({"method": self.command, "path": self.path, "body": body,
                                     "authorization": self.headers.get("Authorization")})
        if self.server.hang.is_set():
            self.server.release.wait(60)
        if self.server.faults:
            status = self.server.faults.pop(0)
            return self._answer(status, {"status": "ERROR", "message": f"injected {status}"})
        expected = "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
        if self.headers.get("Authorization") != expected:
            return self._answer(401, {"status": "UNAUTHORIZED", "message": "Unauthorized"})
        prefix = next((f"{p}/" for p in SECURITY_API_PATHS if self.path.startswith(f"{p}/")), "")
        kind, _, name = self.path[len(prefix):].partition("/")
        store = {"roles": self.server.roles, "rolesmapping": self.server.mappings}.get(kind)
        if not prefix or store is None or not name:
            return self._answer(400, {"error": f"no handler found for uri [{self.path}]"})
        if self.command == "GET":
            if name not in store:
                return self._answer(404, {"status": "NOT_FOUND", "message": f"'{name}' not found."})
            return self._answer(200, {name: {**store[name], "reserved": False, "hidden": False,
                                             "static": False}})
        if self.command == "PUT":
            created = name not in store
            store[name] = body
            return self._answer(201 if created else 200,
                                {"status": "CREATED" if created else "OK", "message": f"'{name}' saved."})
        if name not in store:
            return self._answer(404, {"status": "NOT_FOUND", "message": f"'{name}' not found."})
        del store[name]
        return self._answer(200, {"status": "OK", "message": f"'{name}' deleted."})

    do_GET = do_PUT = do_DELETE = _handle  # noqa: N815

    def log_message(self, *args: Any) -> None:
        pass


def _serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[Recorder]:
    server = Recorder(handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture()
def cloudformation() -> Iterator[Recorder]:
    yield from _serve(CloudFormationEndpoint)


@pytest.fixture()
def plugin() -> Iterator[Recorder]:
    yield from _serve(SecurityPlugin)


@pytest.fixture()
def secret_arn(aws_env) -> Iterator[str]:
    client = boto3.client("secretsmanager")
    arn = client.create_secret(Name=f"ct2es-master-{uuid.uuid4().hex[:8]}", SecretString=json.dumps(
        {"username": "admin", "password": PASSWORD}))["ARN"]
    yield arn
    client.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)


def _event(request_type: str, endpoint: str, secret: str, response_url: str, *,
           physical_id: str | None = None, **properties: Any) -> dict:
    props = {"ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:setup",
             "Endpoint": endpoint, "MasterUserSecretArn": secret, "OpenSearchRole": "cloudtrail_loader",
             "BackendRoles": [LAMBDA_ROLE], "IndexPrefix": "cloudtrail", "DeleteIndices": "false"}
    props.update(properties)
    event = {
        "RequestType": request_type, "ResponseURL": f"{response_url}/signed?X-Amz-Signature=abc",
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/cloudtrail-es/5f3e-11ef",
        "RequestId": str(uuid.uuid4()), "ResourceType": "Custom::RoleMapping",
        "LogicalResourceId": "LambdaRoleMapping", "ResourceProperties": props,
    }
    if physical_id is not None:
        event["PhysicalResourceId"] = physical_id
    return event


def _answer(cloudformation: Recorder, event: dict) -> dict:
    """The one response CloudFormation got for ``event``, checked for the fields it requires."""
    (response,) = [r for r in cloudformation.requests if r["body"]["RequestId"] == event["RequestId"]]
    assert response["path"] == "/signed?X-Amz-Signature=abc"  # the pre-signed URL, unchanged
    assert response["content_type"] == ""  # what the pre-signed URL was signed for
    body = response["body"]
    for field in ("StackId", "RequestId", "LogicalResourceId"):
        assert body[field] == event[field], field
    assert body["Status"] in ("SUCCESS", "FAILED") and body["PhysicalResourceId"]
    return body


def _mapping_id(plugin: Recorder) -> str:
    return f"{plugin.url}{SECURITY_API}/rolesmapping/cloudtrail_loader"


def test_create_update_delete(plugin, cloudformation, secret_arn):
    create = _event("Create", plugin.url, secret_arn, cloudformation.url)
    assert handle(create, REMAINING, Services()).status == "SUCCESS"
    answer = _answer(cloudformation, create)
    assert answer["Status"] == "SUCCESS", answer["Reason"]
    assert answer["PhysicalResourceId"] == _mapping_id(plugin)
    assert answer["Data"] == {"Role": "cloudtrail_loader"}
    expected_auth = "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    assert [(r["method"], r["path"], r["authorization"]) for r in plugin.requests] == [
        ("GET", f"{SECURITY_API}/roles/cloudtrail_loader", expected_auth),
        ("PUT", f"{SECURITY_API}/roles/cloudtrail_loader", expected_auth),
        ("GET", f"{SECURITY_API}/rolesmapping/cloudtrail_loader", expected_auth),
        ("PUT", f"{SECURITY_API}/rolesmapping/cloudtrail_loader", expected_auth),
    ]
    assert plugin.roles == {"cloudtrail_loader": loader_role("cloudtrail", False)}
    assert plugin.mappings == {"cloudtrail_loader": {"backend_roles": [LAMBDA_ROLE]}}
    assert "indices:admin/delete" not in json.dumps(plugin.roles)

    # Retention turned on, the Lambda role replaced (the old one taken out): same physical id.
    update = _event("Update", plugin.url, secret_arn, cloudformation.url, physical_id=answer[
        "PhysicalResourceId"], BackendRoles=[NEW_LAMBDA_ROLE], DeleteIndices="true")
    update["OldResourceProperties"] = create["ResourceProperties"]
    assert handle(update, REMAINING, Services()).status == "SUCCESS"
    answer = _answer(cloudformation, update)
    assert answer["Status"] == "SUCCESS" and answer["PhysicalResourceId"] == _mapping_id(plugin)
    assert plugin.mappings == {"cloudtrail_loader": {"backend_roles": [NEW_LAMBDA_ROLE]}}
    (index_permission,) = plugin.roles["cloudtrail_loader"]["index_permissions"]
    assert "indices:admin/delete" in index_permission["allowed_actions"]

    delete = _event("Delete", plugin.url, secret_arn, cloudformation.url,
                    physical_id=answer["PhysicalResourceId"], **update["ResourceProperties"])
    assert handle(delete, REMAINING, Services()).status == "SUCCESS"
    assert _answer(cloudformation, delete)["PhysicalResourceId"] == _mapping_id(plugin)
    assert plugin.roles == {} and plugin.mappings == {}
    assert [(r["method"], r["path"]) for r in plugin.requests[-4:]] == [
        ("GET", f"{SECURITY_API}/rolesmapping/cloudtrail_loader"),
        ("DELETE", f"{SECURITY_API}/rolesmapping/cloudtrail_loader"),
        ("GET", f"{SECURITY_API}/roles/cloudtrail_loader"),
        ("DELETE", f"{SECURITY_API}/roles/cloudtrail_loader"),
    ]
    # A second Delete (CloudFormation retries) finds nothing and still succeeds.
    again = dict(delete, RequestId=str(uuid.uuid4()))
    assert handle(again, REMAINING, Services()).status == "SUCCESS"
    assert _answer(cloudformation, again)["Status"] == "SUCCESS"


def test_a_new_role_name_gets_a_new_physical_id(plugin, cloudformation, secret_arn):
    """CloudFormation then deletes the old one: the id must name what was created."""
    update = _event("Update", plugin.url, secret_arn, cloudformation.url,
                    physical_id=_mapping_id(plugin), OpenSearchRole="cloudtrail_writer")
    assert handle(update, REMAINING, Services()).status == "SUCCESS"
    assert _answer(cloudformation, update)["PhysicalResourceId"] == (
        f"{plugin.url}{SECURITY_API}/rolesmapping/cloudtrail_writer")
    assert set(plugin.roles) == set(plugin.mappings) == {"cloudtrail_writer"}


def test_elasticsearch_engines_use_the_open_distro_path(plugin, cloudformation, secret_arn):
    legacy = "/_opendistro/_security/api"
    create = _event("Create", plugin.url, secret_arn, cloudformation.url, SecurityApiPath=legacy)
    assert handle(create, REMAINING, Services()).status == "SUCCESS"
    assert _answer(cloudformation, create)["PhysicalResourceId"] == (
        f"{plugin.url}{legacy}/rolesmapping/cloudtrail_loader")
    assert [r["path"] for r in plugin.requests] == [f"{legacy}/roles/cloudtrail_loader"] * 2 + [
        f"{legacy}/rolesmapping/cloudtrail_loader"] * 2


def test_a_refusal_of_the_real_cluster_is_reported(opensearch_url, cloudformation, secret_arn):
    """The real OpenSearch (no security plugin) refuses the call: FAILED, with its answer."""
    create = _event("Create", opensearch_url, secret_arn, cloudformation.url)
    outcome = handle(create, REMAINING, Services())
    answer = _answer(cloudformation, create)
    assert outcome.status == answer["Status"] == "FAILED"
    assert "HTTP 400" in answer["Reason"] and "no handler found" in answer["Reason"]
    assert f"{SECURITY_API}/roles/cloudtrail_loader" in answer["Reason"]
    # The rollback's Delete of that failed Create must not fail in turn.
    rollback = _event("Delete", opensearch_url, secret_arn, cloudformation.url,
                      physical_id=answer["PhysicalResourceId"])
    assert handle(rollback, REMAINING, Services()).status == "SUCCESS"
    assert _answer(cloudformation, rollback)["Status"] == "SUCCESS"


def test_a_wrong_password_is_reported(plugin, cloudformation, aws_env):
    client = boto3.client("secretsmanager")
    arn = client.create_secret(Name=f"ct2es-master-{uuid.uuid4().hex[:8]}", SecretString=json.dumps(
        {"username": "admin", "password": "not-it"}))["ARN"]
    try:
        create = _event("Create", plugin.url, arn, cloudformation.url)
        handle(create, REMAINING, Services())
    finally:
        client.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
    answer = _answer(cloudformation, create)
    # Retried for a while (a new domain may refuse its master user for a moment), then reported.
    assert answer["Status"] == "FAILED" and "HTTP 401" in answer["Reason"]
    assert len(plugin.requests) > 1 and {r["path"] for r in plugin.requests} == {
        f"{SECURITY_API}/roles/cloudtrail_loader"}
    assert plugin.roles == {} and plugin.mappings == {}


def test_after_the_grace_period_a_refused_login_is_final(plugin, cloudformation, secret_arn, monkeypatch):
    monkeypatch.setattr(rolemapping, "AUTH_GRACE_SECONDS", 0.0)
    plugin.faults = [403]
    create = _event("Create", plugin.url, secret_arn, cloudformation.url)
    handle(create, REMAINING, Services())
    answer = _answer(cloudformation, create)
    assert answer["Status"] == "FAILED" and "refused: HTTP 403" in answer["Reason"]
    assert len(plugin.requests) == 1


def test_transient_errors_are_retried(plugin, cloudformation, secret_arn):
    plugin.faults = [503, 429]
    create = _event("Create", plugin.url, secret_arn, cloudformation.url)
    assert handle(create, REMAINING + 5, Services()).status == "SUCCESS"
    assert _answer(cloudformation, create)["Status"] == "SUCCESS"
    assert len(plugin.requests) == 6  # two refused, then the role and the mapping, each read first
    assert plugin.mappings == {"cloudtrail_loader": {"backend_roles": [LAMBDA_ROLE]}}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_domain_is_reported_before_the_time_runs_out(cloudformation, secret_arn):
    create = _event("Create", f"http://127.0.0.1:{_closed_port()}", secret_arn, cloudformation.url)
    start = time.monotonic()
    outcome = handle(create, REMAINING, Services())
    elapsed = time.monotonic() - start
    answer = _answer(cloudformation, create)
    assert outcome.status == answer["Status"] == "FAILED"
    assert "gave no answer in time" in answer["Reason"] and "refused" in answer["Reason"].lower()
    assert answer["PhysicalResourceId"] == f"failed-{create['RequestId']}"
    assert elapsed < REMAINING  # reported while the Lambda still ran


def test_a_hanging_domain_is_given_up_and_reported(plugin, cloudformation, secret_arn):
    plugin.hang.set()
    create = _event("Create", plugin.url, secret_arn, cloudformation.url)
    start = time.monotonic()
    outcome = handle(create, REMAINING, Services())
    elapsed = time.monotonic() - start
    answer = _answer(cloudformation, create)
    assert outcome.status == answer["Status"] == "FAILED"
    assert "gave no answer in time" in answer["Reason"] and "timed out" in answer["Reason"]
    assert elapsed < REMAINING
    assert len(plugin.requests) == 1  # it was waiting on the first call


class _StuckSecrets:
    def __init__(self) -> None:
        self.release = threading.Event()

    def get_secret_value(self, **_: Any) -> dict:
        self.release.wait(60)
        raise RuntimeError("released")


def test_work_that_never_returns_is_given_up_and_reported(plugin, cloudformation, secret_arn):
    """Whatever blocks (here the secret's read), CloudFormation hears FAILED in time."""
    stuck = _StuckSecrets()
    create = _event("Create", plugin.url, secret_arn, cloudformation.url)
    start = time.monotonic()
    try:
        outcome = handle(create, REMAINING, Services(secrets=stuck))
        elapsed = time.monotonic() - start
    finally:
        stuck.release.set()
    answer = _answer(cloudformation, create)
    assert outcome.status == answer["Status"] == "FAILED"
    assert answer["Reason"].startswith("no result after 5 s"), answer["Reason"]
    assert answer["PhysicalResourceId"] == f"failed-{create['RequestId']}"
    assert elapsed < REMAINING
    assert plugin.requests == []


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"Endpoint": ""}, "missing properties: Endpoint"),
        ({"BackendRoles": "arn:aws:iam::123456789012:role/x"}, "BackendRoles must be a list"),
        ({"OpenSearchRole": "../all_access"}, "OpenSearchRole"),
        ({"DeleteIndices": "maybe"}, "DeleteIndices must be true or false"),
        ({"SecurityApiPath": "/_cluster/settings"}, "SecurityApiPath must be one of"),
    ],
)
def test_bad_properties_fail_create_and_never_block_delete(plugin, cloudformation, secret_arn, change,
                                                          reason):
    create = _event("Create", plugin.url, secret_arn, cloudformation.url, **change)
    handle(create, REMAINING, Services())
    answer = _answer(cloudformation, create)
    assert answer["Status"] == "FAILED" and reason in answer["Reason"]
    delete = _event("Delete", plugin.url, secret_arn, cloudformation.url,
                    physical_id=answer["PhysicalResourceId"], **change)
    handle(delete, REMAINING, Services())
    assert _answer(cloudformation, delete)["Status"] == "SUCCESS"
    assert plugin.requests == []


def test_unknown_request_and_resource_types_fail(plugin, cloudformation, secret_arn):
    odd = _event("Replace", plugin.url, secret_arn, cloudformation.url)
    handle(odd, REMAINING, Services())
    assert "unknown RequestType 'Replace'" in _answer(cloudformation, odd)["Reason"]
    other = dict(_event("Create", plugin.url, secret_arn, cloudformation.url), ResourceType="Custom::X")
    handle(other, REMAINING, Services())
    assert "unknown ResourceType 'Custom::X'" in _answer(cloudformation, other)["Reason"]
    assert plugin.requests == []


def test_an_unreachable_response_url_does_not_hang_the_function(plugin, secret_arn):
    create = _event("Create", plugin.url, secret_arn, f"http://127.0.0.1:{_closed_port()}")
    start = time.monotonic()
    outcome = handle(create, REMAINING, Services())
    assert outcome.status == "SUCCESS"  # the work was done; reporting gave up in time
    assert time.monotonic() - start < REMAINING


class _Context:
    def __init__(self, seconds: float) -> None:
        self._until = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return int((self._until - time.monotonic()) * 1000)


def test_lambda_entry_point(plugin, cloudformation, secret_arn):
    """``index.handler`` as Lambda calls it: real boto3 clients (moto), its own HTTP."""
    create = _event("Create", plugin.url, secret_arn, cloudformation.url)
    assert rolemapping.handler(create, _Context(REMAINING)) is None
    assert _answer(cloudformation, create)["Status"] == "SUCCESS"
    assert plugin.mappings == {"cloudtrail_loader": {"backend_roles": [LAMBDA_ROLE]}}


def test_logs_resource_policy_is_upserted_and_kept(cloudformation, aws_env):
    logs = boto3.client("logs")
    name = f"ct2es-test-{uuid.uuid4().hex[:8]}"
    document = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "es.amazonaws.com"},
        "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
        "Resource": "arn:aws:logs:us-east-1:123456789012:log-group:/aws/opensearch/cloudtrail-es/*"}]})

    def event(request_type: str, **extra: Any) -> dict:
        return {"RequestType": request_type, "ResponseURL": f"{cloudformation.url}/signed?X-Amz-Signature=abc",
                "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/s/1",
                "RequestId": str(uuid.uuid4()), "ResourceType": "Custom::LogsResourcePolicy",
                "LogicalResourceId": "SharedLogsResourcePolicy",
                "ResourceProperties": {"PolicyName": name, "PolicyDocument": document}, **extra}

    def stored() -> list[dict]:
        return [p for p in logs.describe_resource_policies()["resourcePolicies"] if p["policyName"] == name]

    try:
        for request_type in ("Create", "Create", "Update"):  # a second stack puts the same policy
            request = event(request_type, PhysicalResourceId=name) if request_type == "Update" else event(
                request_type)
            handle(request, REMAINING, Services())
            answer = _answer(cloudformation, request)
            assert answer["Status"] == "SUCCESS" and answer["PhysicalResourceId"] == name
            assert [json.loads(p["policyDocument"]) for p in stored()] == [json.loads(document)]
        delete = event("Delete", PhysicalResourceId=name)
        handle(delete, REMAINING, Services())
        assert _answer(cloudformation, delete)["Status"] == "SUCCESS"
        assert len(stored()) == 1  # kept: other stacks and retained domains publish through it
        missing = event("Create")
        del missing["ResourceProperties"]["PolicyDocument"]
        handle(missing, REMAINING, Services())
        assert "PolicyDocument" in _answer(cloudformation, missing)["Reason"]
    finally:
        logs.delete_resource_policy(policyName=name)


def test_a_404_from_the_puts_is_a_failure(plugin, cloudformation, secret_arn):
    """No security API at that path (a 404 to the PUT): FAILED, never a SUCCESS that mapped nothing."""
    plugin.faults = [404, 404]  # the role's GET (no role yet), then its PUT
    create = _event("Create", plugin.url, secret_arn, cloudformation.url)
    handle(create, REMAINING, Services())
    answer = _answer(cloudformation, create)
    assert answer["Status"] == "FAILED" and "answered HTTP 404" in answer["Reason"], answer["Reason"]
    assert [r["method"] for r in plugin.requests] == ["GET", "PUT"]
    assert plugin.roles == {} and plugin.mappings == {}


def test_a_delete_that_cannot_log_in_reports_and_succeeds(plugin, cloudformation, secret_arn, aws_env):
    create = _event("Create", plugin.url, secret_arn, cloudformation.url)
    handle(create, REMAINING, Services())
    client = boto3.client("secretsmanager")
    client.put_secret_value(SecretId=secret_arn, SecretString=json.dumps(
        {"username": "admin", "password": "changed-since"}))
    delete = _event("Delete", plugin.url, secret_arn, cloudformation.url,
                    physical_id=_answer(cloudformation, create)["PhysicalResourceId"])
    handle(delete, REMAINING, Services())
    answer = _answer(cloudformation, delete)
    assert answer["Status"] == "SUCCESS"
    assert "not removed" in answer["Reason"] and "HTTP 401" in answer["Reason"], answer["Reason"]
    assert plugin.mappings == {"cloudtrail_loader": {"backend_roles": [LAMBDA_ROLE]}}  # left, and said so
    assert len([r for r in plugin.requests if r["method"] == "GET"]) == 3  # no grace on Delete: one try


def test_a_delete_that_gets_no_answer_reports_and_succeeds(plugin, cloudformation, secret_arn):
    plugin.hang.set()
    delete = _event("Delete", plugin.url, secret_arn, cloudformation.url, physical_id=_mapping_id(plugin))
    outcome = handle(delete, REMAINING, Services())
    answer = _answer(cloudformation, delete)
    assert outcome.status == answer["Status"] == "SUCCESS"
    assert answer["Reason"].startswith("not removed ("), answer["Reason"]
