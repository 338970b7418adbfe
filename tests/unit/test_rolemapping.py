"""Pure parts of the stack's custom resource handler (the HTTP exchanges: tests/integration)."""
from __future__ import annotations

import json
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudtrail_es.aws.rolemapping import (
    REASON_LIMIT,
    CustomResourceError,
    Outcome,
    carry_out,
    loader_role,
    mapping_request,
    response_body,
    within,
)

PROPERTIES = {"Endpoint": "search-trail-abc.eu-west-1.es.amazonaws.com",
              "MasterUserSecretArn": "arn:aws:secretsmanager:eu-west-1:111122223333:secret:m-AbC",
              "OpenSearchRole": "cloudtrail_loader", "BackendRoles": ["arn:aws:iam::111122223333:role/r"],
              "IndexPrefix": "cloudtrail", "DeleteIndices": "false"}


@settings(max_examples=60)
@given(reason=st.text(max_size=5000), status=st.sampled_from(["SUCCESS", "FAILED"]),
       physical_id=st.text(min_size=1, max_size=300))
def test_response_body_has_what_cloudformation_needs(reason, status, physical_id):
    event = {"StackId": "arn:aws:cloudformation:eu-west-1:111122223333:stack/s/" + "a" * 36,
             "RequestId": "r" * 36, "LogicalResourceId": "LambdaRoleMapping", "ResponseURL": "x"}
    body = response_body(event, Outcome(status, physical_id, reason, {"Role": "cloudtrail_loader"}))
    parsed = json.loads(body)
    assert parsed["Status"] == status and parsed["PhysicalResourceId"] == physical_id
    assert {k: parsed[k] for k in ("StackId", "RequestId", "LogicalResourceId")} == {
        k: event[k] for k in ("StackId", "RequestId", "LogicalResourceId")}
    assert parsed["Reason"] and len(parsed["Reason"]) <= REASON_LIMIT
    assert reason.startswith(parsed["Reason"]) or not reason
    assert len(body) <= 4096  # CloudFormation's limit


def test_a_reason_of_escaped_characters_still_fits():
    event = {"StackId": "s", "RequestId": "r", "LogicalResourceId": "l"}
    body = response_body(event, Outcome("FAILED", "id", "\x01" * 3000))
    assert len(body) <= 4096 and json.loads(body)["Reason"].startswith("\x01")


@pytest.mark.parametrize("retention", [False, True])
def test_loader_role(retention):
    role = loader_role("org-trail", retention)
    assert role["cluster_permissions"] == ["cluster_monitor", "cluster_composite_ops"]
    (permission,) = role["index_permissions"]
    assert permission["index_patterns"] == ["org-trail-????-??", "org-trail_findings", "org-trail_findings_state"]
    assert {"crud", "create_index", "indices_monitor"} <= set(permission["allowed_actions"])
    assert ("indices:admin/delete" in permission["allowed_actions"]) is retention
    # No wildcard but refresh's, whose shard-level action the security plugin checks too.
    assert [a for a in permission["allowed_actions"] if "*" in a] == ["indices:admin/refresh*"]


@pytest.mark.parametrize(("endpoint", "base_url"), [
    ("search-x.eu-west-1.es.amazonaws.com", "https://search-x.eu-west-1.es.amazonaws.com"),
    ("https://search-x.eu-west-1.es.amazonaws.com/", "https://search-x.eu-west-1.es.amazonaws.com"),
    ("http://127.0.0.1:9200", "http://127.0.0.1:9200"),
])
def test_endpoint_becomes_a_base_url(endpoint, base_url):
    request = mapping_request(dict(PROPERTIES, Endpoint=endpoint))
    assert request.base_url == base_url
    assert request.physical_id == f"{base_url}/_plugins/_security/api/rolesmapping/cloudtrail_loader"


@pytest.mark.parametrize("role", ["", "a/b", "all_access?x", "x y", "../roles"])
def test_role_names_that_would_change_the_url_are_refused(role):
    with pytest.raises(CustomResourceError):
        mapping_request(dict(PROPERTIES, OpenSearchRole=role))


def test_within_gives_up_on_blocked_work():
    release = threading.Event()
    late = Outcome("FAILED", "id", "late")

    def blocked() -> Outcome:
        release.wait(30)
        return Outcome("SUCCESS", "id")

    try:
        assert within(0.2, blocked, late) is late
    finally:
        release.set()
    done = Outcome("SUCCESS", "id")
    assert within(30, lambda: done, late) is done


@given(error=st.text(max_size=3000))
def test_a_failed_create_says_the_retained_domain_keeps_billing(error):
    """A Create fails (here: properties refused); the rollback keeps the domain, and the reason
    says so, whole, however long the error before it."""
    properties = dict(PROPERTIES, OpenSearchRole=f"x/{error}", RetainedDomain="trail-logs")
    for kind in ("Create", "Update"):
        outcome = carry_out({"RequestType": kind, "ResourceType": "Custom::RoleMapping",
                             "RequestId": "r-1", "ResourceProperties": properties}, None, 0.0)
        assert outcome.status == "FAILED" and "OpenSearchRole" in outcome.reason
        assert len(outcome.reason) <= REASON_LIMIT
        billing = "keeps OpenSearch domain trail-logs" in outcome.reason
        assert billing is (kind == "Create"), outcome.reason
        assert outcome.reason.endswith("a new stack cannot use the name before.") is billing

