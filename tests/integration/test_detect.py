"""Sigma detections over the real cluster: the corpus and crafted events loaded once by the
backfill, rules run by ``detect``, every rule's findings checked against a set computed here
from the raw events with plain Python predicates (not our converter)."""
from __future__ import annotations

import gzip
import ipaddress
import json
import os
import re
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import boto3
import pytest
import requests
import yaml

from support import leaves
from cloudtrail_es.backfill import cli
from cloudtrail_es.detections import detect

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "rules"
CRAFTED = Path(__file__).resolve().parents[1] / "events" / "sigma" / "crafted.json"
CRAFTED_KEY = ("AWSLogs/111122223333/CloudTrail/us-east-1/2025/06/01/"
               "111122223333_CloudTrail_us-east-1_20250601T1200Z_crafted01.json.gz")


def _env(url: str, prefix: str, moto_url: str) -> dict[str, str]:
    return {"ES_HOSTNAME": url, "ES_AUTH": "none", "INDEX_PREFIX": prefix,
            "INDEX_REPLICAS": "0", "AWS_ENDPOINT_URL": moto_url, "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1"}


def _write_file(root: Path, key: str, events: list[dict]) -> None:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(json.dumps({"Records": events}).encode()))


@pytest.fixture(scope="session")
def loaded(opensearch_url, moto_url, corpus_dir, tmp_path_factory):
    """The corpus and the crafted events, loaded once by the backfill under their own prefix."""
    prefix = f"test-sigma-{uuid.uuid4().hex[:8]}"
    crafted_root = tmp_path_factory.mktemp("crafted")
    _write_file(crafted_root, CRAFTED_KEY, json.loads(CRAFTED.read_text()))
    dead = tmp_path_factory.mktemp("dead")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in _env(opensearch_url, prefix, moto_url).items():
            patch.setenv(name, value)
        for root in (corpus_dir, crafted_root):
            assert cli.main(["--dir", str(root), "--quiet", "--json",
                             "--dead-letter-dir", str(dead)]) == cli.EXIT_OK
    requests.post(f"{opensearch_url}/{prefix}-*/_refresh", timeout=60).raise_for_status()
    yield prefix
    requests.delete(f"{opensearch_url}/{prefix}-*,{prefix}_*", timeout=60)


@pytest.fixture(scope="session")
def events(corpus_dir) -> list[dict]:
    found = []
    for path in sorted((corpus_dir / "AWSLogs").rglob("*.json.gz")):
        found.extend(json.loads(gzip.decompress(path.read_bytes()))["Records"])
    return found + json.loads(CRAFTED.read_text())


@pytest.fixture()
def env(loaded, opensearch_url, moto_url, monkeypatch):
    """The session's index prefix, with a findings index of this test's own."""
    for name, value in _env(opensearch_url, loaded, moto_url).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("FINDINGS_TOPIC_ARN", raising=False)
    yield loaded
    for index in (f"{loaded}_findings", f"{loaded}_findings_state"):
        requests.delete(f"{opensearch_url}/{index}", timeout=60)


def run_json(capsys, *argv: str) -> tuple[int, list[dict], str]:
    code = detect.main([*argv, "--json"])
    captured = capsys.readouterr()
    return code, [json.loads(line) for line in captured.out.splitlines() if line], captured.err


EVERYTHING = ("--from", "2000-01-01T00:00:00Z", "--to", "2100-01-01T00:00:00Z")


# -- Predicates over raw events ----------------------------------------------------------------

def text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)




def leaf(event: dict, section: str, key: str) -> set[str]:
    return {text(v).lower() for k, v in leaves(event.get(section)) if k == key}


def raw(event: dict, section: str) -> str:
    value = event.get(section)
    return "" if value is None else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def field(event: dict, path: str) -> str:
    value: Any = event
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else text(value).lower()


def is_(event: dict, path: str, *values: str) -> bool:
    return field(event, path) in {v.lower() for v in values}


def name(event: dict, *values: str) -> bool:
    return is_(event, "eventName", *values)


def source(event: dict, *values: str) -> bool:
    return is_(event, "eventSource", *values)


def raw_has(event: dict, section: str, *needles: str) -> bool:
    haystack = raw(event, section).lower()
    return any(needle.lower() in haystack for needle in needles)


STARTER: dict[str, Callable[[dict], bool]] = {
    "deec52d5-da77-4cc7-a27f-427a89e9be24": lambda e: source(e, "cloudtrail.amazonaws.com")
    and name(e, "StopLogging", "DeleteTrail"),
    "63d06319-1b45-48aa-a6d4-638b88d7ee49": lambda e: source(e, "cloudtrail.amazonaws.com")
    and name(e, "UpdateTrail", "PutEventSelectors", "PutInsightSelectors"),
    "c10b5656-a9c0-4802-9d13-b09cf79a0ef6": lambda e: is_(e, "userIdentity.type", "Root")
    and not field(e, "userIdentity.invokedBy") and not is_(e, "eventType", "AwsServiceEvent"),
    "7c22a6c7-bb0b-41c0-bce0-94de4a4148f1": lambda e: source(e, "signin.amazonaws.com")
    and name(e, "ConsoleLogin") and "failure" in leaf(e, "responseElements", "ConsoleLogin"),
    "1cffc28b-21f5-4fc4-916d-5c741995c37a": lambda e: name(e, "ConsoleLogin")
    and "success" in leaf(e, "responseElements", "ConsoleLogin")
    and "no" in leaf(e, "additionalEventData", "MFAUsed")
    and is_(e, "userIdentity.type", "IAMUser", "Root"),
    "cd4ee0db-abb8-46ae-a099-b4e0544c51e3": lambda e: source(e, "iam.amazonaws.com")
    and name(e, "CreateAccessKey"),
    "b9383db1-0938-4b4c-9717-c1b3c39df699": lambda e: source(e, "iam.amazonaws.com")
    and name(e, "CreateUser"),
    "588032ef-f329-4caf-b8a9-f5d385bee99b": lambda e: source(e, "iam.amazonaws.com")
    and name(e, "CreateLoginProfile", "UpdateLoginProfile"),
    "5208d5ae-00fb-4f1f-8ece-3365628f654f": lambda e: source(e, "iam.amazonaws.com")
    and field(e, "eventName").startswith("attach") and field(e, "eventName").endswith("policy")
    and any(arn.endswith(suffix) for arn in leaf(e, "requestParameters", "policyArn")
            for suffix in (":policy/administratoraccess", ":policy/iamfullaccess",
                           ":policy/poweruseraccess")),
    "ed81ce64-05b1-4201-b5b9-82b7c5762d7a": lambda e: source(e, "ec2.amazonaws.com")
    and name(e, "AuthorizeSecurityGroupIngress")
    and ("0.0.0.0/0" in leaf(e, "requestParameters", "cidrIp")
         or "::/0" in leaf(e, "requestParameters", "cidrIpv6")),
    "92a4c836-b937-48a0-ac12-291eaa8bac9f": lambda e: source(e, "s3.amazonaws.com") and (
        (name(e, "PutBucketAcl") and raw_has(
            e, "requestParameters", "acs.amazonaws.com/groups/global/AllUsers",
            "acs.amazonaws.com/groups/global/AuthenticatedUsers", "public-read"))
        or (name(e, "PutBucketPolicy")
            and raw_has(e, "requestParameters", '"Principal":"*"', '"AWS":"*"'))),
    "3b039db3-b71b-4f3c-9dbd-3e719774e797": lambda e: name(
        e, "DeleteBucketPublicAccessBlock", "DeletePublicAccessBlock")
    and source(e, "s3.amazonaws.com", "s3-control.amazonaws.com"),
    "cec6f5a4-253c-455d-8b7a-9ee1d9fa9988": lambda e: source(e, "kms.amazonaws.com")
    and name(e, "DisableKey", "ScheduleKeyDeletion"),
    "9087ef43-f5ef-4443-afea-f23fcb2b4cd5": lambda e: source(e, "guardduty.amazonaws.com") and (
        name(e, "DeleteDetector", "DisassociateFromMasterAccount",
             "DisassociateFromAdministratorAccount")
        or (name(e, "UpdateDetector") and "false" in leaf(e, "requestParameters", "enable"))),
    "da0f49de-2ab2-4f96-9579-2731397695a3": lambda e: source(e, "config.amazonaws.com")
    and name(e, "StopConfigurationRecorder", "DeleteConfigurationRecorder", "DeleteDeliveryChannel"),
    "48c9b20f-e115-4b5a-b5fd-0946dc66b55e": lambda e: source(e, "logs.amazonaws.com")
    and name(e, "DeleteLogGroup"),
    "2cd2dc52-e70a-49ce-af62-48eb70431be7": lambda e: source(e, "ec2.amazonaws.com")
    and name(e, "DeleteFlowLogs"),
    "21b59d68-fb89-4959-abde-eab2deba90af": lambda e: source(e, "ec2.amazonaws.com")
    and "networkacl" in field(e, "eventName") and not field(e, "eventName").startswith("describe"),
    "8b30cee2-9bc4-4e92-8b49-dd6efd9033a1": lambda e: source(e, "ec2.amazonaws.com")
    and name(e, "ModifySnapshotAttribute", "ModifyImageAttribute")
    and raw_has(e, "requestParameters", '"add":') and "all" in leaf(e, "requestParameters", "group"),
}

#: Crafted event id marker -> rule id (``crafted-hit-<marker>-N`` must fire, ``-miss-`` must not).
MARKERS = {
    "trail-stopped": "deec52d5-da77-4cc7-a27f-427a89e9be24",
    "trail-changed": "63d06319-1b45-48aa-a6d4-638b88d7ee49",
    "root": "c10b5656-a9c0-4802-9d13-b09cf79a0ef6",
    "login-failed": "7c22a6c7-bb0b-41c0-bce0-94de4a4148f1",
    "login-no-mfa": "1cffc28b-21f5-4fc4-916d-5c741995c37a",
    "access-key": "cd4ee0db-abb8-46ae-a099-b4e0544c51e3",
    "user-created": "b9383db1-0938-4b4c-9717-c1b3c39df699",
    "admin-policy": "5208d5ae-00fb-4f1f-8ece-3365628f654f",
    "sg-open": "ed81ce64-05b1-4201-b5b9-82b7c5762d7a",
    "s3-public": "92a4c836-b937-48a0-ac12-291eaa8bac9f",
    "s3-pab": "3b039db3-b71b-4f3c-9dbd-3e719774e797",
    "kms": "cec6f5a4-253c-455d-8b7a-9ee1d9fa9988",
    "guardduty": "9087ef43-f5ef-4443-afea-f23fcb2b4cd5",
    "config": "da0f49de-2ab2-4f96-9579-2731397695a3",
    "log-group": "48c9b20f-e115-4b5a-b5fd-0946dc66b55e",
    "flow-logs": "2cd2dc52-e70a-49ce-af62-48eb70431be7",
    "nacl": "21b59d68-fb89-4959-abde-eab2deba90af",
    "shared-public": "8b30cee2-9bc4-4e92-8b49-dd6efd9033a1",
}


def by_rule(findings: list[dict]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for finding in findings:
        found.setdefault(finding["rule_id"], set()).add(finding["eventID"])
    return found


def expected_by_rule(events: list[dict], predicates: dict[str, Callable[[dict], bool]]):
    return {rule_id: {e["eventID"] for e in events if predicate(e)}
            for rule_id, predicate in predicates.items()}


def degraded_ids(url: str, prefix: str) -> set[str]:
    """Events the cluster took only in the degraded form (core fields): no rule sees the rest."""
    hits = requests.post(f"{url}/{prefix}-*/_search", timeout=60, json={
        "size": 1000, "_source": False, "query": {"exists": {"field": "degraded_reason"}}}).json()
    return {hit["_id"] for hit in hits["hits"]["hits"]}


def test_starter_rules_find_exactly_what_they_target(env, events, trail_manifest, capsys, opensearch_url):
    code, findings, err = run_json(capsys, str(RULES), *EVERYTHING)

    assert code == detect.EXIT_OK, err
    assert len(STARTER) >= 15 and set(STARTER) == {f["rule_id"] for f in findings} | set(STARTER)
    found, expected = by_rule(findings), expected_by_rule(events, STARTER)
    degraded = degraded_ids(opensearch_url, env)
    for rule_id, wanted in expected.items():
        assert wanted, f"rule {rule_id} targets nothing in the corpus or the crafted events"
        assert found.get(rule_id, set()) == wanted - degraded, rule_id
    for marker, rule_id in MARKERS.items():
        hits = {e["eventID"] for e in events if e["eventID"].startswith(f"crafted-hit-{marker}-")}
        misses = {e["eventID"] for e in events if e["eventID"].startswith(f"crafted-miss-{marker}-")}
        assert hits <= found.get(rule_id, set()), marker
        assert not misses & found.get(rule_id, set()), marker
    corpus_hits = {rule_id for rule_id, ids in found.items()
                   if any(not i.startswith("crafted-") for i in ids)}
    if trail_manifest is None:
        assert len(corpus_hits) >= 10, "most starter rules fire on real corpus events"
    else:  # the generated trail: each planted event found by the rule its manifest names
        ids = {path.stem: yaml.safe_load(path.read_text())["id"] for path in RULES.glob("*.yml")}
        for planted in trail_manifest["expected_findings"]:
            assert planted["eventID"] in found.get(ids[planted["rule"]], set()), planted
    for finding in findings:
        assert {"rule_id", "rule_title", "level", "eventID", "index", "eventTime"} <= finding.keys()
        assert finding["index"].startswith(env + "-")


MODIFIER_RULES = """
title: every modifier
id: aaaaaaaa-0000-4000-8000-000000000001
logsource: {product: aws, service: cloudtrail}
detection:
  pick_contains:
    eventName|contains: 'securitygroupingress'
  pick_startswith:
    eventSource: 'EC2.AMAZONAWS.COM'
    eventName|startswith: 'deleteflow'
  pick_endswith:
    userIdentity.arn|endswith: ':ROOT'
    eventName: RunInstances
  drop:
    requestParameters|contains: '0.0.0.0/0'
  both_all:
    requestParameters|contains|all: ['ipPermissions', '"cidrIp":"0.0.0.0/0"']
  both_leaf:
    requestParameters.ipPermissions.items.ipRanges.items.cidrIp: '0.0.0.0/0'
  condition: (1 of pick_* and not drop) or all of both_*
level: low
---
title: regular expressions
id: aaaaaaaa-0000-4000-8000-000000000002
logsource: {product: aws, service: cloudtrail}
detection:
  cli:
    userAgent|re: 'aws-cli/1\\.1[0-5]\\.'
  delete_group:
    eventName|re|i: '^delete.*GROUP$'
  condition: cli or delete_group
level: low
---
title: cidr, exists, cased, lists
id: aaaaaaaa-0000-4000-8000-000000000003
logsource: {product: aws, service: cloudtrail}
detection:
  from_doc_net:
    sourceIPAddress|cidr:
      - '203.0.113.0/24'
      - '10.0.0.0/8'
  failed_iam:
    eventSource: iam.amazonaws.com
    errorCode|exists: true
  no_mfa_field:
    eventName|cased: ConsoleLogin
    additionalEventData.MFAUsed|exists: false
  wrong_case:
    eventName|cased: consolelogin
  trail:
    eventName:
      - StopLogging
      - deletetrail
  condition: 1 of from_doc_net or failed_iam or no_mfa_field or wrong_case or trail
level: low
"""


def _ip_in(value: str, *networks: str) -> bool:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(net) for net in networks)


MODIFIER_PREDICATES: dict[str, Callable[[dict], bool]] = {
    "aaaaaaaa-0000-4000-8000-000000000001": lambda e: (
        ("securitygroupingress" in field(e, "eventName")
         or (source(e, "ec2.amazonaws.com") and field(e, "eventName").startswith("deleteflow"))
         or (field(e, "userIdentity.arn").endswith(":root") and name(e, "RunInstances")))
        and not raw_has(e, "requestParameters", "0.0.0.0/0")
    ) or (raw_has(e, "requestParameters", "ipPermissions")
          and raw_has(e, "requestParameters", '"cidrIp":"0.0.0.0/0"')
          and "0.0.0.0/0" in leaf(e, "requestParameters", "cidrIp")),
    "aaaaaaaa-0000-4000-8000-000000000002": lambda e: bool(
        re.search(r"aws-cli/1\.1[0-5]\.", e.get("userAgent") or "")
        or re.search(r"^delete.*group$", e.get("eventName") or "", re.IGNORECASE)),
    "aaaaaaaa-0000-4000-8000-000000000003": lambda e: (
        _ip_in(e.get("sourceIPAddress") or "", "203.0.113.0/24", "10.0.0.0/8")
        or (source(e, "iam.amazonaws.com") and bool(e.get("errorCode")))
        or (e.get("eventName") == "ConsoleLogin"
            and "MFAUsed" not in (e.get("additionalEventData") or {}))
        or e.get("eventName") == "consolelogin"
        or name(e, "StopLogging", "DeleteTrail")),
}

UNCONVERTIBLE = """
title: looks ahead
id: bbbbbbbb-0000-4000-8000-000000000001
logsource: {product: aws, service: cloudtrail}
detection:
  trail_deletion:
    eventName|re: 'Delete(?=Trail)'
  condition: trail_deletion
level: low
---
title: many failed sign-ins
id: bbbbbbbb-0000-4000-8000-000000000002
correlation:
  type: event_count
  rules: [bbbbbbbb-0000-4000-8000-000000000001]
  group-by: [sourceIPAddress]
  timespan: 1h
  condition: {gte: 5}
"""


def _engine(url: str):
    from cloudtrail_es.write.cluster import Cluster
    from cloudtrail_es.write.engine import detect as detect_engine

    return detect_engine(Cluster(url, requests.Session()))


def test_every_modifier_and_condition_form(env, events, capsys, tmp_path, opensearch_url):
    (tmp_path / "modifiers.yml").write_text(MODIFIER_RULES)
    (tmp_path / "unconvertible.yml").write_text(UNCONVERTIBLE)

    code, findings, err = run_json(capsys, str(tmp_path), *EVERYTHING)

    assert code == detect.EXIT_RULES_SKIPPED
    assert "SKIPPED bbbbbbbb-0000-4000-8000-000000000001: eventName|re 'Delete(?=Trail)': " \
        "a lookahead" in err
    assert "SKIPPED bbbbbbbb-0000-4000-8000-000000000002: correlation rules" in err
    expected = expected_by_rule(events, MODIFIER_PREDICATES)
    engine = _engine(opensearch_url)
    if not detect.supports_case_insensitive(engine):  # Elasticsearch 6.8-7.9: re|i is skipped
        assert ("SKIPPED aaaaaaaa-0000-4000-8000-000000000002: a case-insensitive regular "
                "expression") in err
        del expected["aaaaaaaa-0000-4000-8000-000000000002"]
    found = by_rule(findings)
    for rule_id, wanted in expected.items():
        assert wanted, rule_id
        assert found.get(rule_id, set()) == wanted, rule_id
    assert set(found) == set(expected)


def _findings_in_index(url: str, prefix: str) -> dict[str, dict]:
    requests.post(f"{url}/{prefix}_findings/_refresh", timeout=30).raise_for_status()
    hits = requests.post(f"{url}/{prefix}_findings/_search", timeout=30,
                         json={"size": 1000, "query": {"match_all": {}}}).json()["hits"]["hits"]
    return {hit["_id"]: hit["_source"] for hit in hits}


def test_findings_idempotent_and_published_once(env, trail_manifest, capsys, opensearch_url, moto_url):
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic = sns.create_topic(Name=f"findings-{uuid.uuid4().hex[:8]}")["TopicArn"]
    queue = sqs.create_queue(QueueName=f"findings-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn,
                  Attributes={"RawMessageDelivery": "true"})
    os.environ["FINDINGS_TOPIC_ARN"] = topic
    # A year of the corpus; the generated trail (a few planted findings) with the crafted events.
    window = EVERYTHING if trail_manifest else ("--from", "2024-01-01T00:00:00Z", "--to", "2025-01-01T00:00:00Z")

    code, first, err = run_json(capsys, str(RULES), *window)
    assert code == detect.EXIT_OK, err
    stored = _findings_in_index(opensearch_url, env)
    code, second, err = run_json(capsys, str(RULES), *window)
    assert code == detect.EXIT_OK, err

    assert len(first) > 10 and len(stored) == len(first)
    assert _findings_in_index(opensearch_url, env) == stored
    assert sorted(f["finding_id"] for f in second) == sorted(stored)
    assert all(f["new"] for f in first) and not any(f["new"] for f in second)
    received = []
    while True:
        batch = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10,
                                    WaitTimeSeconds=1).get("Messages", [])
        if not batch:
            break
        received.extend(json.loads(m["Body"]) for m in batch)
    assert sorted(m["finding_id"] for m in received) == sorted(stored)
    assert {(m["rule_id"], m["eventID"]) for m in received} == {
        (f["rule_id"], f["eventID"]) for f in first}


def test_default_window_continues_where_the_last_run_ended(env, capsys, opensearch_url,
                                                           monkeypatch, tmp_path):
    """By arrival: an event that happened two days ago and arrives now is checked, once."""
    monkeypatch.setenv("DETECTION_DELAY_MINUTES", "0")
    now = datetime.now(timezone.utc)
    late = {"eventVersion": "1.09", "eventSource": "cloudtrail.amazonaws.com",
            "eventName": "StopLogging", "eventID": f"late-{uuid.uuid4()}",
            "eventTime": detect.iso(now - timedelta(days=2)), "awsRegion": "us-east-1",
            "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::111122223333:user/eve"}}
    key = (f"AWSLogs/111122223333/CloudTrail/us-east-1/{now:%Y/%m/%d}/"
           f"111122223333_CloudTrail_us-east-1_{now:%Y%m%dT%H%M}Z_recent01.json.gz")
    _write_file(tmp_path, key, [late])
    code, before, err = run_json(capsys, str(RULES))  # what the session loaded: checked once
    assert code == detect.EXIT_OK, err
    assert cli.main(["--dir", str(tmp_path), "--quiet", "--dead-letter-dir",
                     str(tmp_path / "dead")]) == cli.EXIT_OK
    requests.post(f"{opensearch_url}/{env}-*/_refresh", timeout=60).raise_for_status()
    capsys.readouterr()

    code, first, err = run_json(capsys, str(RULES))
    assert code == detect.EXIT_OK, err
    assert late["eventID"] not in {f["eventID"] for f in before}
    position = requests.get(f"{opensearch_url}/{env}_findings_state/_doc/manual:"
                            "deec52d5-da77-4cc7-a27f-427a89e9be24", timeout=30).json()
    code, second, err = run_json(capsys, str(RULES))

    assert [f["eventID"] for f in first] == [late["eventID"]]
    assert timedelta(0) <= datetime.now(timezone.utc) - detect.parse_time(
        position["_source"]["window_end"]) < timedelta(minutes=5)
    assert second == []
    event_id = late["eventID"]
    requests.delete(f"{opensearch_url}/{env}-{now:%Y-%m}/_doc/{event_id}?refresh=true", timeout=30)


def test_table_output_and_bad_usage(env, capsys):
    assert detect.main([str(RULES), *EVERYTHING]) == detect.EXIT_OK
    out = capsys.readouterr().out
    assert "findings per rule:" in out and "CloudTrail trail stopped or deleted" in out
    assert detect.main(["/nonexistent/rules"]) == detect.EXIT_USAGE
    assert detect.main([str(RULES), "--from", "yesterday"]) == detect.EXIT_USAGE


def test_scheduled_detection_through_the_lambda_handler(env, opensearch_url, monkeypatch, tmp_path):
    import lambda_function
    from cloudtrail_es.aws import handler as routes
    from cloudtrail_es.detections import sigma

    bundle = tmp_path / "rules.json"
    bundle.write_text(json.dumps(sigma.convert_paths([RULES]).bundle()))
    monkeypatch.setattr(detect, "PACKAGED_RULES", bundle)
    monkeypatch.setenv("DETECTION_DELAY_MINUTES", "0")
    now = datetime.now(timezone.utc)
    recent = {"eventVersion": "1.09", "eventSource": "kms.amazonaws.com",
              "eventName": "ScheduleKeyDeletion", "eventID": f"recent-{uuid.uuid4()}",
              "eventTime": detect.iso(now - timedelta(minutes=40)), "awsRegion": "us-east-1",
              "requestParameters": {"keyId": "k", "pendingWindowInDays": 7},
              "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::111122223333:user/eve"}}
    key = (f"AWSLogs/111122223333/CloudTrail/us-east-1/{now:%Y/%m/%d}/"
           f"111122223333_CloudTrail_us-east-1_{now:%Y%m%dT%H%M}Z_recent02.json.gz")
    _write_file(tmp_path / "files", key, [recent])
    routes.processor.cache_clear()
    try:
        lambda_function.lambda_handler({"cloudtrail_es": "detect"}, None)  # the session's events
        before = set(_findings_in_index(opensearch_url, env))
        assert cli.main(["--dir", str(tmp_path / "files"), "--quiet", "--dead-letter-dir",
                         str(tmp_path / "dead")]) == cli.EXIT_OK
        requests.post(f"{opensearch_url}/{env}-*/_refresh", timeout=60).raise_for_status()
        summary = lambda_function.lambda_handler({"cloudtrail_es": "detect"}, None)
    finally:
        routes.processor.cache_clear()
        event_id = recent["eventID"]
        requests.delete(f"{opensearch_url}/{env}-{now:%Y-%m}/_doc/{event_id}?refresh=true",
                        timeout=30)

    assert summary["new"] == 1 and summary["errors"] == [] and summary["skipped"] == []
    assert summary["per_rule"]["cec6f5a4-253c-455d-8b7a-9ee1d9fa9988"] == 1
    stored = _findings_in_index(opensearch_url, env)
    assert [f["eventID"] for i, f in stored.items() if i not in before] == [recent["eventID"]]
