"""Rules shaped like the public Sigma rules for CloudTrail (written here, not copied: event
name lists, a multi-word errorMessage, whole-section contains, regular expressions, a
fieldref, cidr, null and exists, ``1 of``, filters under ``not``), converted and run over the
shared corpus loaded by the backfill; each rule's hits must be what an independent Python
reading of the rule finds in the raw events (``tests/sigma_reference.py``). The fieldref rule
also runs through ``detect`` itself, which checks the reference on each hit.

A path under a section names its leaf wherever it sits in our layout
(``responseElements.user.userName`` is ``responseElements_flattened.userName``, which an
access key's ``responseElements.accessKey.userName`` also fills): the rules here name
leaves that sit in one place for the events they select, as the public rules do.
"""
from __future__ import annotations

import gzip
import json
import uuid
from typing import Any

import pytest
import requests
import yaml

import sigma_reference
from cloudtrail_es.backfill import cli
from cloudtrail_es.detections import detect, fieldref, sigma

pytestmark = pytest.mark.integration

RULES = """
title: trail stopped or weakened
id: cccccccc-0000-4000-8000-000000000001
detection:
  selection:
    eventSource: cloudtrail.amazonaws.com
    eventName: [StopLogging, DeleteTrail, UpdateTrail, PutEventSelectors]
  condition: selection
---
title: console sign-in that failed authentication
id: cccccccc-0000-4000-8000-000000000002
detection:
  selection:
    eventSource: signin.amazonaws.com
    eventName: ConsoleLogin
    errorMessage: Failed authentication
  condition: selection
---
title: console sign-in without MFA
id: cccccccc-0000-4000-8000-000000000003
detection:
  selection:
    eventName: ConsoleLogin
    responseElements.ConsoleLogin: Success
    additionalEventData.MFAUsed: 'No'
  condition: selection
---
title: IAM changes from scripts, not from services
id: cccccccc-0000-4000-8000-000000000004
detection:
  selection:
    eventSource: iam.amazonaws.com
    userAgent|contains: [aws-cli, Boto3, aws-sdk]
  filter:
    userIdentity.type: AWSService
  condition: selection and not filter
---
title: bucket policy open to everyone
id: cccccccc-0000-4000-8000-000000000005
detection:
  selection:
    eventName: PutBucketPolicy
    requestParameters|contains: ['"Principal":"*"', '"AWS":"*"']
  condition: selection
---
title: deletions in S3
id: cccccccc-0000-4000-8000-000000000006
detection:
  selection:
    eventSource: s3.amazonaws.com
    eventName|startswith: Delete
  condition: selection
---
title: an old command-line client
id: cccccccc-0000-4000-8000-000000000007
detection:
  selection:
    userAgent|re: 'aws-cli/1\\.1[0-6]\\.\\d+ '
  condition: selection
---
title: session calls made within the caller's own account
id: cccccccc-0000-4000-8000-000000000008
detection:
  selection:
    eventSource: sts.amazonaws.com
    userIdentity.accountId|fieldref: recipientAccountId
  condition: selection
---
title: root calls not made through a service
id: cccccccc-0000-4000-8000-000000000009
detection:
  selection:
    userIdentity.type: Root
    userIdentity.invokedBy: null
  filter:
    eventType: AwsServiceEvent
  condition: selection and not filter
---
title: role sessions whose issuer is a role
id: cccccccc-0000-4000-8000-000000000010
detection:
  selection:
    userIdentity.sessionContext.sessionIssuer.type: Role
    userIdentity.arn|contains: ':assumed-role/'
    errorCode|exists: true
  condition: selection
---
title: calls from outside private networks that failed
id: cccccccc-0000-4000-8000-000000000011
detection:
  private:
    sourceIPAddress|cidr: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16]
  failed:
    errorCode: [AccessDenied, Client.UnauthorizedOperation, UnauthorizedOperation]
  condition: failed and not private
---
title: ingress open to the world
id: cccccccc-0000-4000-8000-000000000012
detection:
  selection:
    eventName: AuthorizeSecurityGroupIngress
    requestParameters.ipPermissions.items.ipRanges.items.cidrIp: 0.0.0.0/0
  condition: selection
---
title: enumeration that was refused
id: cccccccc-0000-4000-8000-000000000013
detection:
  selection_read:
    eventName|startswith: [Get, List, Describe]
    errorCode: AccessDenied
  selection_ec2:
    eventSource: ec2.amazonaws.com
    errorCode: Client.UnauthorizedOperation
  condition: 1 of selection_*
---
title: key material or keys scheduled away
id: cccccccc-0000-4000-8000-000000000014
detection:
  selection:
    eventSource: kms.amazonaws.com
    eventName|re|i: '^(disablekey|schedulekeydeletion|importkeymaterial)$'
  condition: selection
---
title: a user created under the name asked for
id: cccccccc-0000-4000-8000-000000000015
detection:
  selection:
    eventName: CreateUser
    requestParameters.userName|fieldref: responseElements.user.userName
  filter:
    userIdentity.type: AWSService
  condition: selection and not filter
"""


def rules() -> list[dict[str, Any]]:
    found = []
    for document in yaml.safe_load_all(RULES):
        document["logsource"] = {"product": "aws", "service": "cloudtrail"}
        document["level"] = "low"
        found.append(document)
    return found


@pytest.fixture(scope="module")
def loaded(opensearch_url, moto_url, corpus_dir, tmp_path_factory):
    prefix = f"test-sigmacorpus-{uuid.uuid4().hex[:8]}"
    env = {"ES_HOSTNAME": opensearch_url, "ES_AUTH": "none", "INDEX_PREFIX": prefix,
           "INDEX_REPLICAS": "0", "AWS_ENDPOINT_URL": moto_url, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        assert cli.main(["--dir", str(corpus_dir), "--quiet", "--dead-letter-dir",
                         str(tmp_path_factory.mktemp("dead"))]) == cli.EXIT_OK
        requests.post(f"{opensearch_url}/{prefix}-*/_refresh", timeout=60).raise_for_status()
        yield prefix, patch
    requests.delete(f"{opensearch_url}/{prefix}-*,{prefix}_*", timeout=60)


@pytest.fixture(scope="module")
def events(corpus_dir) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for path in sorted((corpus_dir / "AWSLogs").rglob("*.json.gz")):
        found.extend(json.loads(gzip.decompress(path.read_bytes()))["Records"])
    return found


def search(url: str, prefix: str, rule: dict[str, Any]) -> set[str]:
    body = {"size": 10000, "_source": fieldref.source_fields(rule) or False, "query": rule["query"]}
    response = requests.post(f"{url}/{prefix}-*/_search", json=body, timeout=60)
    assert response.status_code == 200, response.text[:2000]
    return {hit["_id"] for hit in response.json()["hits"]["hits"]
            if fieldref.matches(rule, hit.get("_source", {}))}


def test_public_shaped_rules_agree_with_an_independent_reading_over_the_corpus(
        loaded, events, opensearch_url, tmp_path):
    prefix, _ = loaded
    (tmp_path / "rules.yml").write_text(yaml.safe_dump_all(rules()))
    conversion = sigma.convert_paths([tmp_path])
    assert conversion.skipped == []
    degraded = {hit["_id"] for hit in requests.post(
        f"{opensearch_url}/{prefix}-*/_search", timeout=60, json={
            "size": 1000, "_source": False, "query": {"exists": {"field": "degraded_reason"}}}
    ).json()["hits"]["hits"]}
    by_id = {rule["id"]: rule for rule in rules()}
    hits = {}
    for converted in conversion.rules:
        wanted = {e["eventID"] for e in events if sigma_reference.matches(by_id[converted["id"]], e)}
        assert search(opensearch_url, prefix, converted) == wanted - degraded, converted["title"]
        hits[converted["title"]] = len(wanted)
    assert len(hits) == 15 and sum(1 for n in hits.values() if n) >= 10, hits  # most fire: agreement is not on empty sets


def test_a_fieldref_rule_through_the_detector(loaded, events, capsys, tmp_path):
    prefix, patch = loaded
    [rule] = [r for r in rules() if r["id"].endswith("0008")]
    (tmp_path / "self.yml").write_text(yaml.safe_dump(rule))
    patch.delenv("FINDINGS_TOPIC_ARN", raising=False)
    code = detect.main([str(tmp_path), "--from", "2000-01-01T00:00:00Z",
                        "--to", "2100-01-01T00:00:00Z", "--json"])
    out = capsys.readouterr().out
    assert code == detect.EXIT_OK
    found = {json.loads(line)["eventID"] for line in out.splitlines() if line}
    wanted = {e["eventID"] for e in events if sigma_reference.matches(rule, e)}
    assert wanted and found == wanted
