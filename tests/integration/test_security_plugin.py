"""The role mapping custom resource, and the loader writing through the role it maps, against a
real OpenSearch 2.19.4 with the opensearch-security plugin (demo TLS, basic auth).

The module starts that node itself on SECURITY_TEST_PORT (scripts/services.sh, OS_SECURITY=true)
and stops it at the end: the last test takes it away to see a Delete survive a domain that is
gone. CloudFormation's side is the recording ResponseURL of test_custom_resources; the master
user's secret lives in moto. The loader's user is an internal user whose backend role is the
Lambda role's ARN, so it gets exactly what the mapping of that ARN gives, as the Lambda would.
"""
from __future__ import annotations

import functools
import json
import os
import ssl
import subprocess
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Iterator

import boto3
import pytest
import requests
import trails
from test_custom_resources import CloudFormationEndpoint, Recorder, _answer, _event, _serve

import lambda_function

from cloudtrail_es.aws import handler as routes
from cloudtrail_es.aws.rolemapping import SECURITY_API, Services, handle, index_patterns, loader_role
from cloudtrail_es.backfill import cli
from cloudtrail_es.core.errors import BatchFailed
from cloudtrail_es.detections import detect, sigma
from cloudtrail_es.write.indexes import added_properties, index_body

ROOT = Path(__file__).resolve().parents[2]
PORT = int(os.environ.get("SECURITY_TEST_PORT", "9345"))
ENGINE = "opensearch-2.19.4"
ADMIN_PASSWORD = "Cloud-Trail-Logs-71"  # services.sh's OS_ADMIN_PASSWORD, given explicitly
RUN_DIR = Path(os.environ.get("RUN_DIR", ROOT / ".services"))
REMAINING = 40.0  # the SetupFunction's time left when the request comes (more than enough here)


def services(command: str) -> None:
    env = {**os.environ, "ENGINE": ENGINE, "OPENSEARCH_PORT": str(PORT), "OS_SECURITY": "true",
           "OS_ADMIN_PASSWORD": ADMIN_PASSWORD, "NODES": "1"}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "services.sh"), command, "opensearch"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"services.sh {command}: {done.stderr[-3000:]}"


@dataclass(frozen=True)
class SecureNode:
    url: str
    ca: str

    def admin(self) -> requests.Session:
        session = requests.Session()
        session.auth = ("admin", ADMIN_PASSWORD)
        session.verify = self.ca
        session.trust_env = False
        return session

    def services(self) -> Services:
        """The custom resource's collaborators, trusting the demo CA (Lambda trusts AWS's)."""
        context = ssl.create_default_context(cafile=self.ca)
        return Services(opener=functools.partial(urllib.request.urlopen, context=context),
                        auth_grace_seconds=0.0)

    def role(self, name: str) -> dict | None:
        return self._security("roles", name)

    def mapping(self, name: str) -> dict | None:
        return self._security("rolesmapping", name)

    def _security(self, kind: str, name: str) -> dict | None:
        response = self.admin().get(f"{self.url}{SECURITY_API}/{kind}/{name}", timeout=30)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json()[name]


@pytest.fixture(scope="module")
def node() -> Iterator[SecureNode]:
    services("start")
    home = RUN_DIR / f"{ENGINE}-{PORT}"
    yield SecureNode(f"https://127.0.0.1:{PORT}", (home / "secure.ca").read_text().strip())
    services("stop")


@pytest.fixture()
def cloudformation() -> Iterator[Recorder]:
    yield from _serve(CloudFormationEndpoint)


def _secret(username: str, password: str) -> str:
    return boto3.client("secretsmanager").create_secret(
        Name=f"ct2es-master-{uuid.uuid4().hex[:8]}",
        SecretString=json.dumps({"username": username, "password": password}))["ARN"]


@pytest.fixture()
def admin_secret(aws_env) -> Iterator[str]:
    arn = _secret("admin", ADMIN_PASSWORD)
    yield arn
    boto3.client("secretsmanager").delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)


@pytest.fixture()
def names() -> dict[str, str]:
    """A role, an index prefix and a Lambda role of this test only (the node's state is kept)."""
    tag = uuid.uuid4().hex[:8]
    return {"role": f"loader_{tag}", "prefix": f"sec-{tag}",
            "arn": f"arn:aws:iam::111122223333:role/cloudtrail-es-LambdaRole-{tag}"}


def _request(kind: str, node: SecureNode, secret: str, cloudformation: Recorder, names: dict, *,
             physical_id: str | None = None, **properties) -> dict:
    props = {"OpenSearchRole": names["role"], "IndexPrefix": names["prefix"],
             "BackendRoles": [names["arn"]], **properties}
    return _event(kind, node.url, secret, cloudformation.url, physical_id=physical_id, **props)


def _run(event: dict, node: SecureNode, cloudformation: Recorder) -> dict:
    handle(event, REMAINING, node.services())
    return _answer(cloudformation, event)


def _actions(role: dict, prefix: str) -> list[str]:
    patterns = sorted(index_patterns(prefix))
    return [action for entry in role["index_permissions"] if sorted(entry["index_patterns"]) == patterns
            for action in entry["allowed_actions"]]


def test_create_update_delete(node, cloudformation, admin_secret, names):
    create = _request("Create", node, admin_secret, cloudformation, names)
    answer = _run(create, node, cloudformation)
    assert answer["Status"] == "SUCCESS", answer["Reason"]
    assert answer["PhysicalResourceId"] == f"{node.url}{SECURITY_API}/rolesmapping/{names['role']}"
    role = node.role(names["role"])
    ours = loader_role(names["prefix"], False)
    assert role["cluster_permissions"] == ours["cluster_permissions"]
    assert _actions(role, names["prefix"]) == ours["index_permissions"][0]["allowed_actions"]
    assert node.mapping(names["role"])["backend_roles"] == [names["arn"]]

    new_arn = names["arn"] + "-new"
    update = _request("Update", node, admin_secret, cloudformation, names, physical_id=answer[
        "PhysicalResourceId"], DeleteIndices="true", BackendRoles=[new_arn])
    update["OldResourceProperties"] = create["ResourceProperties"]
    answer = _run(update, node, cloudformation)
    assert answer["Status"] == "SUCCESS", answer["Reason"]
    assert "indices:admin/delete" in _actions(node.role(names["role"]), names["prefix"])
    assert node.mapping(names["role"])["backend_roles"] == [new_arn]  # the old Lambda role is out

    delete = _request("Delete", node, admin_secret, cloudformation, names,
                      physical_id=answer["PhysicalResourceId"], DeleteIndices="true", BackendRoles=[new_arn])
    answer = _run(delete, node, cloudformation)
    assert answer["Status"] == "SUCCESS", answer["Reason"]
    assert node.role(names["role"]) is None and node.mapping(names["role"]) is None
    again = dict(delete, RequestId=str(uuid.uuid4()))  # CloudFormation may send it twice
    assert _run(again, node, cloudformation)["Status"] == "SUCCESS"


def test_merge_keeps_what_an_operator_made_by_hand(node, cloudformation, admin_secret, names):
    admin, api = node.admin(), f"{node.url}{SECURITY_API}"
    prefix = names["prefix"]
    by_hand = {"description": "made by an operator", "cluster_permissions": ["cluster:monitor/main"],
               "index_permissions": [
                   {"index_patterns": ["ops-*"], "allowed_actions": ["read"]},
                   {"index_patterns": list(reversed(index_patterns(prefix))),
                    "allowed_actions": ["indices:admin/forcemerge"]}]}
    admin.put(f"{api}/roles/{names['role']}", json=by_hand, timeout=30).raise_for_status()
    admin.put(f"{api}/rolesmapping/{names['role']}", timeout=30, json={
        "users": ["alice"], "backend_roles": ["arn:aws:iam::111122223333:role/ops"]}).raise_for_status()

    create = _request("Create", node, admin_secret, cloudformation, names)
    answer = _run(create, node, cloudformation)
    assert answer["Status"] == "SUCCESS", answer["Reason"]
    role, mapping = node.role(names["role"]), node.mapping(names["role"])
    assert role["description"] == "made by an operator"
    assert role["cluster_permissions"] == ["cluster:monitor/main", "cluster_monitor", "cluster_composite_ops"]
    assert {"index_patterns": ["ops-*"], "allowed_actions": ["read"]}.items() <= role["index_permissions"][0].items()
    assert _actions(role, prefix) == ["indices:admin/forcemerge"] + loader_role(prefix, False)[
        "index_permissions"][0]["allowed_actions"]
    assert mapping["users"] == ["alice"]
    assert mapping["backend_roles"] == ["arn:aws:iam::111122223333:role/ops", names["arn"]]

    update = _request("Update", node, admin_secret, cloudformation, names,
                      physical_id=answer["PhysicalResourceId"], DeleteIndices="true")
    update["OldResourceProperties"] = create["ResourceProperties"]
    assert _run(update, node, cloudformation)["Status"] == "SUCCESS"
    assert "indices:admin/delete" in _actions(node.role(names["role"]), prefix)
    assert node.mapping(names["role"])["users"] == ["alice"]

    delete = _request("Delete", node, admin_secret, cloudformation, names,
                      physical_id=_answer(cloudformation, update)["PhysicalResourceId"], DeleteIndices="true")
    assert _run(delete, node, cloudformation)["Status"] == "SUCCESS"
    role, mapping = node.role(names["role"]), node.mapping(names["role"])
    assert role["cluster_permissions"] == ["cluster:monitor/main"]
    assert _actions(role, prefix) == ["indices:admin/forcemerge"]  # the operator's, the stack's gone
    assert mapping["users"] == ["alice"] and mapping["backend_roles"] == ["arn:aws:iam::111122223333:role/ops"]


def test_a_wrong_password_fails_create_and_never_blocks_delete(node, cloudformation, admin_secret, names,
                                                               aws_env):
    wrong = _secret("admin", "Not-The-Password-42")
    try:
        create = _request("Create", node, wrong, cloudformation, names)
        answer = _run(create, node, cloudformation)
        assert answer["Status"] == "FAILED" and "HTTP 401" in answer["Reason"], answer["Reason"]
        assert node.role(names["role"]) is None

        made = _request("Create", node, admin_secret, cloudformation, names)
        physical_id = _run(made, node, cloudformation)["PhysicalResourceId"]
        delete = _request("Delete", node, wrong, cloudformation, names, physical_id=physical_id)
        answer = _run(delete, node, cloudformation)
        assert answer["Status"] == "SUCCESS"  # the stack goes; the reason says what is left
        assert "not removed" in answer["Reason"] and "HTTP 401" in answer["Reason"], answer["Reason"]
        assert ADMIN_PASSWORD not in json.dumps(answer)
        assert node.mapping(names["role"])["backend_roles"] == [names["arn"]]
    finally:
        boto3.client("secretsmanager").delete_secret(SecretId=wrong, ForceDeleteWithoutRecovery=True)


# -- the loader through the role --------------------------------------------------------------

@pytest.fixture()
def loader_user(node, cloudformation, admin_secret, names, aws_env) -> Iterator[dict[str, str]]:
    """The role mapped by the custom resource (retention on), and a user holding the Lambda role."""
    create = _request("Create", node, admin_secret, cloudformation, names, DeleteIndices="true")
    assert _run(create, node, cloudformation)["Status"] == "SUCCESS"
    user = {"name": f"lambda_{names['role']}", "password": f"Ld-{uuid.uuid4().hex}-Q9!"}
    node.admin().put(f"{node.url}{SECURITY_API}/internalusers/{user['name']}", timeout=30, json={
        "password": user["password"], "backend_roles": [names["arn"]]}).raise_for_status()
    yield user
    node.admin().delete(f"{node.url}{SECURITY_API}/internalusers/{user['name']}", timeout=30)
    node.admin().delete(f"{node.url}/{names['prefix']}*", timeout=60)


@pytest.fixture(scope="module")
def rule_bundle(tmp_path_factory) -> Path:
    """The packaged rules, as scripts/package.py converts them."""
    bundle = tmp_path_factory.mktemp("rules") / "rules.json"
    bundle.write_text(json.dumps(sigma.convert_paths([ROOT / "rules"]).bundle()))
    return bundle


@pytest.fixture()
def loader(monkeypatch, node, names, loader_user, rule_bundle):
    """The Lambda's environment: basic auth over HTTPS as the loader's user; the packaged rules."""
    for name, value in {"ES_HOSTNAME": node.url, "ES_AUTH": "basic", "ES_USERNAME": loader_user["name"],
                        "ES_PASSWORD": loader_user["password"], "ES_CA_CERTS": node.ca,
                        "INDEX_PREFIX": names["prefix"], "INDEX_REPLICAS": "0",
                        "DETECTION_DELAY_MINUTES": "0", "RETENTION_MONTHS": "1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(detect, "PACKAGED_RULES", rule_bundle)
    routes.processor.cache_clear()
    yield lambda_function.lambda_handler
    routes.processor.cache_clear()


class Context:
    function_name = "cloudtrail-es-test"

    def get_remaining_time_in_millis(self):
        return 300_000


def test_the_loader_writes_through_the_role_it_maps(node, names, loader, s3, bucket, monkeypatch, rule_bundle):
    prefix, admin = names["prefix"], node.admin()
    now = trails.recently()
    old = now - timedelta(days=62)
    # An index made by an earlier version, without the newer fields: the loader adds them.
    old_index, earlier = f"{prefix}-{old:%Y-%m}", index_body(1, 0)
    earlier["mappings"]["properties"] = {name: value for name, value in earlier["mappings"]["properties"].items()
                                         if name not in added_properties()}
    admin.put(f"{node.url}/{old_index}", json=earlier, timeout=60).raise_for_status()
    files = {
        "sqs_old": (trails.log_key(old), trails.events(40, old)),
        "sqs_new": (trails.log_key(now), trails.events(30, now) + trails.events(
            1, now, eventSource="cloudtrail.amazonaws.com", eventName="StopLogging")),
        "s3": (trails.log_key(now), trails.events(20, now)),
        "eventbridge": (trails.log_key(now), trails.events(10, now)),
        "backfill": (trails.log_key(now), trails.events(15, now)),
    }
    for key, records in files.values():
        s3.put_object(Bucket=bucket, Key=key, Body=trails.trail_file(records))

    batch = trails.sqs_batch({"m-old": trails.s3_notification(bucket, files["sqs_old"][0]),
                              "m-new": trails.s3_notification(bucket, files["sqs_new"][0]),
                              "poison": "not json {"})
    assert loader(batch, Context()) == {"batchItemFailures": [{"itemIdentifier": "poison"}]}
    assert loader(trails.s3_notification(bucket, files["s3"][0]), Context())["indexed"] == 20
    assert loader(trails.eventbridge_notification(bucket, files["eventbridge"][0]), Context())["indexed"] == 10
    admin.post(f"{node.url}/{prefix}-*/_refresh", timeout=60).raise_for_status()  # searchable now
    findings = loader(trails.scheduled("detect"), Context())
    assert findings["findings"] == 1, findings

    # The backfill, through the same role, trusting the certificate without checking it.
    monkeypatch.delenv("ES_CA_CERTS")
    monkeypatch.setenv("ES_VERIFY_CERTS", "false")
    assert cli.main([bucket, "AWSLogs/", "--quiet"]) == 0

    admin.post(f"{node.url}/{prefix}-*/_refresh", timeout=60).raise_for_status()
    ids = {record["eventID"] for _, records in files.values() for record in records}
    counted = admin.post(f"{node.url}/{prefix}-*/_search", timeout=60, json={
        "size": 0, "track_total_hits": True, "aggs": {"ids": {"cardinality": {"field": "_id"}}}}).json()
    assert counted["hits"]["total"]["value"] == len(ids)  # every event once, none twice
    mapping = admin.get(f"{node.url}/{old_index}/_mapping", timeout=60).json()
    assert set(added_properties()) <= set(mapping[old_index]["mappings"]["properties"])
    finding = admin.post(f"{node.url}/{prefix}_findings/_search", timeout=60).json()["hits"]["hits"]
    assert [hit["_source"]["eventName"] for hit in finding] == ["StopLogging"]
    state = admin.get(f"{node.url}/{prefix}_findings_state/_search", timeout=60).json()
    assert state["hits"]["total"]["value"] == len(json.loads(rule_bundle.read_text())["rules"])  # a position each

    assert loader(trails.scheduled("retention"), Context()) == {"deleted": [old_index]}
    assert admin.head(f"{node.url}/{old_index}", timeout=60).status_code == 404
    assert admin.head(f"{node.url}/{prefix}-{now:%Y-%m}", timeout=60).status_code == 200


def test_the_role_reaches_no_other_deployment_whose_prefix_extends_ours(node, names, loader_user):
    """PREFIX-org-YYYY-MM and PREFIX-org_findings belong to another stack: the role's
    patterns are exact, so the loader's user can neither write nor read them."""
    prefix, admin = names["prefix"], node.admin()
    user = requests.Session()
    user.auth, user.verify = (loader_user["name"], loader_user["password"]), node.ca
    user.trust_env = False
    try:
        for index in (f"{prefix}-org-2024-05", f"{prefix}-org_findings", f"{prefix}_findings_old"):
            admin.put(f"{node.url}/{index}/_doc/1?refresh=true", json={"a": 1}, timeout=60).raise_for_status()
            assert user.put(f"{node.url}/{index}/_doc/2", json={"a": 2}, timeout=60).status_code == 403, index
            assert user.get(f"{node.url}/{index}/_doc/1", timeout=60).status_code == 403, index
        # Its own month, the control: the same user writes there.
        assert user.put(f"{node.url}/{prefix}-2024-05/_doc/1", json={"a": 1}, timeout=60).status_code == 201
    finally:
        admin.delete(f"{node.url}/{prefix}-org*,{prefix}_findings_old", timeout=60)


def test_a_user_the_mapping_does_not_name_is_refused(node, names, loader, s3, bucket, loader_user):
    """The control: the same user without the Lambda role's ARN writes nothing."""
    node.admin().put(f"{node.url}{SECURITY_API}/internalusers/{loader_user['name']}", timeout=30, json={
        "password": loader_user["password"], "backend_roles": []}).raise_for_status()
    key = trails.log_key(trails.recently())
    s3.put_object(Bucket=bucket, Key=key, Body=trails.trail_file(trails.events(5, trails.recently())))

    with pytest.raises(BatchFailed) as failed:
        loader(trails.sqs_batch({"m": trails.s3_notification(bucket, key)}), Context())

    assert "403" in str(failed.value)


# -- last: the domain goes away -----------------------------------------------------------------

def test_a_domain_gone_fails_create_and_never_blocks_delete(node, cloudformation, admin_secret, names):
    create = _request("Create", node, admin_secret, cloudformation, names)
    physical_id = _run(create, node, cloudformation)["PhysicalResourceId"]
    services("stop")  # the module's node: nothing after this test needs it

    delete = _request("Delete", node, admin_secret, cloudformation, names, physical_id=physical_id)
    handle(delete, 15.0, node.services())
    answer = _answer(cloudformation, delete)
    assert answer["Status"] == "SUCCESS" and "not removed" in answer["Reason"], answer["Reason"]
    assert "gave no answer in time" in answer["Reason"]

    again = _request("Create", node, admin_secret, cloudformation, names)
    handle(again, 15.0, node.services())
    answer = _answer(cloudformation, again)
    assert answer["Status"] == "FAILED" and "gave no answer in time" in answer["Reason"]
