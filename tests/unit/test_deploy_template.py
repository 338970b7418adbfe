"""Template checks for the deploy path: sizes, existing-cluster mode, organization trails, the
managed bucket notification, day-two settings, and docs/deploy.md's parameter tables.

The loader and evaluator are test_cloudformation's (what CloudFormation would deploy for given
parameter values); this file holds what moto server cannot create (tests/integration/test_deploy.py
deploys the rest).
"""
from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from cfn_template import CfnLoader, condition_holds, deployed_resources, resolve, template_parameters
from test_cloudformation import BUCKET, _get_att, _refusals, _role_statements

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "cloudformation.yml"
COMPANION = ROOT / "cloudformation-trail-bucket.yml"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
SRC = ROOT / "src" / "cloudtrail_es" / "aws"

#: `aws cloudformation deploy` sends a template inline up to this size (TemplateBody)...
INLINE_TEMPLATE_LIMIT = 51_200
#: ...and CloudFormation reads one of up to 1 MB from S3 (--s3-bucket, TemplateURL).
S3_TEMPLATE_LIMIT = 1_000_000

ENDPOINT = "https://opensearch.example.com:9200"
DOMAIN_ARN = "arn:aws:es:us-east-1:111122223333:domain/existing-logs"
COLLECTION_ARN = "arn:aws:aoss:us-east-1:111122223333:collection/abc123def456"
SECRET_ARN = "arn:aws:secretsmanager:us-east-1:111122223333:secret:loader-AbCdEf"
EXISTING = {
    "sigv4": {"ClusterEndpoint": "https://search-existing-logs-abc.us-east-1.es.amazonaws.com",
              "ClusterArn": DOMAIN_ARN},
    "aoss": {"ClusterEndpoint": "https://abc123def456.us-east-1.aoss.amazonaws.com",
             "ClusterAuth": "aoss", "ClusterArn": COLLECTION_ARN, "CollectionName": "trail-logs"},
    "basic": {"ClusterEndpoint": ENDPOINT, "ClusterAuth": "basic", "ClusterSecretArn": SECRET_ARN},
    "apikey": {"ClusterEndpoint": ENDPOINT, "ClusterAuth": "apikey", "ClusterSecretArn": SECRET_ARN},
}
#: What exists only for a new domain.
DOMAIN_ONLY = {"Domain", "MasterUserSecret", "DomainApplicationLogGroup", "DomainAuditLogGroup",
               "SharedLogsResourcePolicy", "SetupFunction", "SetupRole", "SetupLogGroup",
               "LambdaRoleMapping", "DomainFreeStorageAlarm", "DomainRedAlarm",
               "DomainWritesBlockedAlarm", "DomainJvmPressureAlarm"}


def load(path: Path) -> dict:
    return yaml.load(path.read_text(encoding="utf-8"), Loader=CfnLoader)


@pytest.fixture(scope="module")
def template() -> dict:
    return load(TEMPLATE)


@pytest.fixture(scope="module")
def companion() -> dict:
    return load(COMPANION)


def deploy_commands(text: str) -> list[str]:
    """Every `aws cloudformation deploy` of a ```sh block, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line.strip() for line in joined.splitlines() if "aws cloudformation deploy " in line]


# ---------------------------------------------------------------------------
# What the deploy command can send
# ---------------------------------------------------------------------------
def test_every_documented_deploy_command_can_send_its_template():
    documents = [ROOT / "README.md", DEPLOY_DOC]
    commands = [c for doc in documents for c in deploy_commands(doc.read_text(encoding="utf-8"))]
    assert len(commands) >= 4, commands
    for command in commands:
        path = ROOT / re.search(r"--template-file (\S+)", command)[1]
        size = path.stat().st_size
        assert size <= S3_TEMPLATE_LIMIT, f"{path.name} is {size} bytes: over what CloudFormation reads from S3"
        if size > INLINE_TEMPLATE_LIMIT:
            assert "--s3-bucket" in command, (
                f"{path.name} is {size} bytes, over the {INLINE_TEMPLATE_LIMIT} that deploy sends "
                f"inline: the command needs --s3-bucket:\n{command}")
        assert "--no-fail-on-empty-changeset" in command, command  # running it again succeeds


def test_the_main_template_goes_through_s3_and_the_companion_fits_inline():
    # The README's path is --s3-bucket; the companion is small enough to send inline.
    assert TEMPLATE.stat().st_size > INLINE_TEMPLATE_LIMIT
    assert COMPANION.stat().st_size <= INLINE_TEMPLATE_LIMIT


# ---------------------------------------------------------------------------
# The inline custom-resource code
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("path", [TEMPLATE, COMPANION], ids=lambda p: p.name)
def test_notification_function_code_is_the_module(path):
    resources = load(path)["Resources"]
    props = resources["NotificationFunction"]["Properties"]
    module = (SRC / "bucketnotification.py").read_text(encoding="utf-8")
    assert props["Code"]["ZipFile"] == module, (
        f"{path.name}: NotificationFunction's inline code differs from bucketnotification.py: "
        "run python scripts/inline_rolemapping.py")
    assert props["Handler"] == "index.handler" and props["Runtime"] == "python3.12"
    tree = ast.parse(module)
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= set(sys.stdlib_module_names) | {"boto3", "botocore"}
    resource = resources["TrailBucketNotification"]
    assert resource["Type"] == "Custom::BucketNotification"
    assert resource["Properties"]["ServiceToken"] == _get_att("NotificationFunction")
    assert int(props["Timeout"]) < int(resource["Properties"]["ServiceTimeout"]) <= 900


@pytest.mark.parametrize("path", [TEMPLATE, COMPANION], ids=lambda p: p.name)
def test_notification_role_may_touch_the_trail_bucket_notification_only(path):
    template = load(path)
    role = template["Resources"]["NotificationRole"]["Properties"]
    (policy,) = role["Policies"]
    grants = {(action, json.dumps(st["Resource"], sort_keys=True))
              for st in policy["PolicyDocument"]["Statement"] for action in st["Action"]}
    bucket = "CloudTrailBucket" if path == TEMPLATE else "TrailBucket"
    assert grants == {
        ("logs:CreateLogStream", json.dumps(_get_att("NotificationLogGroup"))),
        ("logs:PutLogEvents", json.dumps(_get_att("NotificationLogGroup"))),
        ("s3:GetBucketNotification", json.dumps({"Fn::Sub": f"arn:${{AWS::Partition}}:s3:::${{{bucket}}}"})),
        ("s3:PutBucketNotification", json.dumps({"Fn::Sub": f"arn:${{AWS::Partition}}:s3:::${{{bucket}}}"})),
    }


# ---------------------------------------------------------------------------
# The managed notification
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(("mode", "managed", "account", "exists"), [
    ("SQS", "true", "", True), ("Both", "true", "", True), ("EventBridge", "true", "", True),
    ("None", "true", "", False), ("SQS", "false", "", False), ("SQS", "false", "444455556666", False),
])
def test_the_stack_manages_the_notification_when_it_can(template, mode, managed, account, exists):
    params = template_parameters(template, CloudTrailBucket=BUCKET, CloudTrailPrefix="org", TriggerMode=mode,
                     ManageBucketNotification=managed, TrailBucketAccountId=account)
    deployed = deployed_resources(template, params)
    assert ("TrailBucketNotification" in deployed) is exists
    assert ("NotificationFunction" in deployed) is exists
    if not exists:
        return
    props = resolve(deployed["TrailBucketNotification"]["Properties"], template, params)
    assert props["Bucket"] == BUCKET and props["Prefix"] == "org/AWSLogs/" and props["Suffix"] == ".json.gz"
    assert props["QueueArn"] == (_get_att("EventQueue") if mode in ("SQS", "Both") else "")
    assert props["EventBridge"] == ("true" if mode in ("EventBridge", "Both") else "false")
    # S3 tests the destination when the entry is put: the queue policy must exist first.
    assert deployed["TrailBucketNotification"]["DependsOn"] == "EventQueuePolicy"
    step = resolve(template["Outputs"]["BucketNotificationStep"]["Value"], template, params)
    assert step.startswith("done by the stack")


def test_a_bucket_of_another_account_may_send_to_the_queue(template):
    params = template_parameters(template, CloudTrailBucket=BUCKET, TrailBucketAccountId="444455556666",
                     ManageBucketNotification="false")
    policy = resolve(template["Resources"]["EventQueuePolicy"]["Properties"], template, params)
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": "444455556666"}
    assert statement["Condition"]["ArnEquals"] == {"aws:SourceArn": f"arn:${{AWS::Partition}}:s3:::{BUCKET}"}
    step = resolve(template["Outputs"]["BucketNotificationStep"]["Value"], template, params)
    assert "444455556666" in step and "cloudformation-trail-bucket.yml" in step
    own = resolve(template["Resources"]["EventQueuePolicy"]["Properties"], template,
                   template_parameters(template, CloudTrailBucket=BUCKET))
    assert own["PolicyDocument"]["Statement"][0]["Condition"]["StringEquals"] == {
        "aws:SourceAccount": {"Ref": "AWS::AccountId"}}


@pytest.mark.parametrize(("overrides", "refused_by"), [
    ({"TrailBucketAccountId": "444455556666"}, "BucketInAnotherAccount"),  # still managing it
    ({"TrailBucketAccountId": "444455556666", "ManageBucketNotification": "false",
      "TriggerMode": "EventBridge"}, "BucketInAnotherAccount"),
    ({"TrailBucketAccountId": "444455556666", "ManageBucketNotification": "false"},
     "BucketInAnotherAccount"),  # dead letters would go to the other account's bucket
    ({"TrailBucketAccountId": "444455556666", "ManageBucketNotification": "false",
      "DeadLetterBucket": "my-dead-letters"}, None),
    ({"TrailBucketAccountId": "444455556666", "ManageBucketNotification": "false",
      "TriggerMode": "None", "DeadLetterBucket": "my-dead-letters"}, None),
])
def test_cross_account_rules(template, overrides, refused_by):
    refusals = _refusals(template, **overrides)
    if refused_by is None:
        assert refusals == []
    else:
        assert refusals and all(r.startswith(refused_by + ":") for r in refusals), refusals


def test_the_companion_hands_back_narrow_statements(companion):
    params = template_parameters(companion, TrailBucket=BUCKET, TrailPrefix="org",
                     LoaderRoleArn="arn:aws:iam::111122223333:role/loader",
                     EventQueueArn="arn:aws:sqs:us-east-1:111122223333:q",
                     TrailKmsKeyArn="arn:aws:kms:us-east-1:444455556666:key/abc")
    outputs = {name: resolve(out["Value"], companion, params) for name, out in companion["Outputs"].items()
               if "Condition" not in out or condition_holds(companion, out["Condition"], params)}
    bucket = json.loads(outputs["BucketPolicyStatement"].replace("${AWS::Partition}", "aws"))
    assert bucket["Principal"] == {"AWS": "arn:aws:iam::111122223333:role/loader"}
    assert bucket["Action"] == "s3:GetObject" and bucket["Resource"] == f"arn:aws:s3:::{BUCKET}/org/*"
    key = json.loads(outputs["KeyPolicyStatement"].replace("${AWS::Region}", "us-east-1"))
    assert key["Action"] == "kms:Decrypt"
    assert key["Condition"] == {"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}}
    notification = resolve(companion["Resources"]["TrailBucketNotification"]["Properties"], companion, params)
    assert notification["QueueArn"] == "arn:aws:sqs:us-east-1:111122223333:q"
    assert notification["Prefix"] == "org/AWSLogs/" and notification["EventBridge"] == "false"
    no_queue = template_parameters(companion, TrailBucket=BUCKET, LoaderRoleArn="arn:aws:iam::111122223333:role/l")
    assert not {"TrailBucketNotification", "NotificationFunction"} & set(deployed_resources(companion, no_queue))


# ---------------------------------------------------------------------------
# Existing-cluster mode
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("auth", list(EXISTING))
def test_existing_cluster_mode_creates_only_the_loader(template, auth):
    params = template_parameters(template, CloudTrailBucket=BUCKET, **EXISTING[auth])
    assert _refusals(template, ElasticsearchDomainName="", **EXISTING[auth]) == []
    deployed = deployed_resources(template, params)
    assert not DOMAIN_ONLY & set(deployed)
    assert {"LambdaFunction", "LambdaRole", "EventQueue", "EventQueueMapping", "LambdaLogGroup",
            "LoaderErrorsAlarm", "IngestionLagAlarm"} <= set(deployed)
    env = resolve(deployed["LambdaFunction"]["Properties"]["Environment"]["Variables"], template, params)
    assert env["ES_HOSTNAME"] == EXISTING[auth]["ClusterEndpoint"]
    assert env["ES_AUTH"] == {"sigv4": "sigv4", "aoss": "sigv4", "basic": "basic", "apikey": "apikey"}[auth]
    assert env.get("ES_SERVICE") == ("aoss" if auth == "aoss" else None)
    assert env.get("ES_SECRET_ARN") == (SECRET_ARN if auth in ("basic", "apikey") else None)
    assert not {"ES_PASSWORD", "ES_USERNAME", "ES_API_KEY"} & env.keys()  # never in clear
    for name, output in template["Outputs"].items():  # no output names what does not exist
        if "Condition" in output and not condition_holds(template, output["Condition"], params):
            continue
        named = referenced(resolve(output["Value"], template, params))
        assert not named & DOMAIN_ONLY, (name, named & DOMAIN_ONLY)


@pytest.mark.parametrize(("auth", "retention"), [(a, r) for a in EXISTING for r in ("0", "13")])
def test_existing_cluster_grants(template, auth, retention):
    params = template_parameters(template, CloudTrailBucket=BUCKET, RetentionMonths=retention, **EXISTING[auth])
    cluster = [st for st in _role_statements(template, params)
               if any(str(a).startswith(("es:", "aoss:", "secretsmanager:")) for a in as_list(st["Action"]))]
    grants = {(a, r) for st in cluster for a in as_list(st["Action"]) for r in as_list(st["Resource"])}
    es = {"es:ESHttpGet", "es:ESHttpHead", "es:ESHttpPost", "es:ESHttpPut"}
    expected = {
        "sigv4": {(a, r) for a in es for r in (DOMAIN_ARN, DOMAIN_ARN + "/*")}
        | ({("es:ESHttpDelete", DOMAIN_ARN + "/cloudtrail-*")} if retention != "0" else set()),
        "aoss": {("aoss:APIAccessAll", COLLECTION_ARN)},
        "basic": {("secretsmanager:GetSecretValue", SECRET_ARN)},
        "apikey": {("secretsmanager:GetSecretValue", SECRET_ARN)},
    }[auth]
    assert grants == expected


@pytest.mark.parametrize("retention", ["0", "13"])
def test_serverless_data_access_policy_covers_the_loader_indexes_only(template, retention):
    params = template_parameters(template, CloudTrailBucket=BUCKET, RetentionMonths=retention, **EXISTING["aoss"])
    params["AWS::StackId"] = "arn:aws:cloudformation:us-east-1:111122223333:stack/s/1a2b3c4d-aaaa-bbbb-cccc-dddd"
    deployed = deployed_resources(template, params)
    props = resolve(deployed["ServerlessAccessPolicy"]["Properties"], template, params)
    assert props["Type"] == "data"
    assert re.fullmatch(r"[a-z][a-z0-9-]{2,31}", props["Name"]) and props["Name"] == "ct-loader-1a2b3c4d"
    policy = json.loads(props["Policy"])
    (entry,) = policy
    assert entry["Principal"] == ["${LambdaRole.Arn}"]
    (rule,) = entry["Rules"]
    assert rule["ResourceType"] == "index"
    assert rule["Resource"] == ["index/trail-logs/cloudtrail-*", "index/trail-logs/cloudtrail_findings*"]
    expected = {"aoss:CreateIndex", "aoss:DescribeIndex", "aoss:UpdateIndex", "aoss:ReadDocument",
                "aoss:WriteDocument"} | ({"aoss:DeleteIndex"} if retention != "0" else set())
    assert set(rule["Permission"]) == expected


@pytest.mark.parametrize(("overrides", "refused_by"), [
    ({"ElasticsearchDomainName": ""}, "NewDomainNeedsAName"),
    ({"ClusterArn": DOMAIN_ARN}, "NewDomainNeedsAName"),
    ({"ClusterEndpoint": ENDPOINT}, "ExistingClusterDescribedWhole"),  # a domain name too, no ARN
    ({"ElasticsearchDomainName": "", "ClusterEndpoint": ENDPOINT}, "ExistingClusterDescribedWhole"),
    ({"ElasticsearchDomainName": "", "ClusterEndpoint": ENDPOINT, "ClusterAuth": "basic"},
     "ExistingClusterDescribedWhole"),
    ({"ElasticsearchDomainName": "", "ClusterEndpoint": ENDPOINT, "ClusterAuth": "basic",
      "ClusterSecretArn": SECRET_ARN, "ClusterArn": DOMAIN_ARN}, "ExistingClusterDescribedWhole"),
    ({"ElasticsearchDomainName": "", "ClusterEndpoint": ENDPOINT, "ClusterAuth": "aoss",
      "ClusterArn": COLLECTION_ARN}, "ExistingClusterDescribedWhole"),
    ({"ElasticsearchDomainName": "", "ClusterEndpoint": ENDPOINT, "ClusterArn": DOMAIN_ARN,
      "ClusterSecretArn": SECRET_ARN}, "ExistingClusterDescribedWhole"),
])
def test_existing_cluster_rules(template, overrides, refused_by):
    refusals = _refusals(template, **overrides)
    assert refusals and all(r.startswith(refused_by + ":") for r in refusals), refusals


def test_cluster_parameters_take_what_they_name_only(template):
    params = template["Parameters"]
    endpoint = re.compile(params["ClusterEndpoint"]["AllowedPattern"])
    for ok in ("", ENDPOINT, "https://search-x.us-east-1.es.amazonaws.com"):
        assert endpoint.fullmatch(ok), ok
    for bad in ("http://plain.example.com", "https://x.example.com/path", "x.example.com"):
        assert not endpoint.fullmatch(bad), bad
    arn = re.compile(params["ClusterArn"]["AllowedPattern"])
    assert arn.fullmatch(DOMAIN_ARN) and arn.fullmatch(COLLECTION_ARN) and arn.fullmatch("")
    for bad in ("*", DOMAIN_ARN + "/*", "arn:aws:es:us-east-1:111122223333:domain/*"):
        assert not arn.fullmatch(bad), bad
    secret = re.compile(params["ClusterSecretArn"]["AllowedPattern"])
    assert secret.fullmatch(SECRET_ARN) and not secret.fullmatch("arn:aws:secretsmanager:*")
    assert "NoEcho" not in params["ClusterSecretArn"]  # an ARN, not a credential


# ---------------------------------------------------------------------------
# Day two, and what is no longer granted
# ---------------------------------------------------------------------------
def test_engine_upgrades_in_place(template):
    domain = template["Resources"]["Domain"]
    assert domain["UpdatePolicy"] == {"EnableVersionUpgrade": True}
    assert domain["Properties"]["EngineVersion"] == {"Ref": "EngineVersion"}


def test_the_stack_owns_the_function_log_group(template):
    resources = template["Resources"]
    group = resources["LambdaLogGroup"]
    assert group["Properties"] == {"LogGroupName": {"Fn::Sub": "/aws/lambda/${LambdaName}"},
                                   "RetentionInDays": {"Ref": "LogRetentionDays"}}
    assert group["DeletionPolicy"] == "Delete"
    assert "LambdaLogGroup" in resources["LambdaFunction"]["DependsOn"]
    assert int(template["Parameters"]["LogRetentionDays"]["Default"]) == 365
    for name, resource in resources.items():  # nobody can create log groups any more
        for policy in resource["Properties"].get("Policies", []) if isinstance(resource.get("Properties"), dict) else []:
            assert "logs:CreateLogGroup" not in json.dumps(policy), name


def test_the_queue_mapping_waits_for_its_permissions(template):
    assert template["Resources"]["EventQueueMapping"]["DependsOn"] == "LambdaQueuePolicy"
    policy = template["Resources"]["LambdaQueuePolicy"]
    assert policy["Condition"] == template["Resources"]["EventQueueMapping"]["Condition"]


# ---------------------------------------------------------------------------
# docs/deploy.md's parameter tables
# ---------------------------------------------------------------------------
def documented_parameters(section: str) -> dict[str, str]:
    """``| `Name` | default | meaning |`` rows: name -> default as written."""
    return {m[1]: m[2].strip() for m in re.finditer(r"^\| `([A-Za-z0-9]+)` \| ([^|]*) \|", section, re.MULTILINE)}


def as_documented(spec: dict[str, Any]) -> str:
    if "Default" not in spec:
        return "(required)"
    return "empty" if str(spec["Default"]) == "" else f"`{spec['Default']}`"


@pytest.mark.parametrize("path", [TEMPLATE, COMPANION], ids=lambda p: p.name)
def test_the_parameter_tables_match_the_templates(path):
    text = DEPLOY_DOC.read_text(encoding="utf-8")
    section = text.split("\n## Parameters\n", 1)[1]
    main, companion = section.split("\n### cloudformation-trail-bucket.yml\n", 1)
    documented = documented_parameters(main if path == TEMPLATE else companion.split("\n## ", 1)[0])
    parameters = load(path)["Parameters"]
    assert set(documented) == set(parameters), (
        f"docs/deploy.md vs {path.name}: missing {sorted(set(parameters) - set(documented))}, "
        f"extra {sorted(set(documented) - set(parameters))}")
    wrong = {name: (documented[name], as_documented(spec)) for name, spec in parameters.items()
             if documented[name] != as_documented(spec)}
    assert not wrong, f"defaults in docs/deploy.md differ from {path.name}: {wrong}"


def referenced(node: Any) -> set[str]:
    """The resources a resolved value still names (Ref, GetAtt, ${X.Attr} in Subs)."""
    if isinstance(node, list):
        return set().union(*(referenced(item) for item in node)) if node else set()
    if isinstance(node, str):
        return set(re.findall(r"\$\{([A-Za-z0-9]+)\.[A-Za-z]+\}", node))
    if not isinstance(node, dict):
        return set()
    if "Ref" in node:
        return {node["Ref"]}
    if "Fn::GetAtt" in node:
        return {node["Fn::GetAtt"][0]}
    return set().union(*(referenced(value) for value in node.values())) if node else set()


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def whole(values: dict[str, str]) -> bool:
    """The reference: which cluster descriptions make sense (new domain, or one existing kind)."""
    if not values["ClusterEndpoint"]:
        return bool(values["ElasticsearchDomainName"]) and not (
            values["ClusterArn"] or values["CollectionName"] or values["ClusterSecretArn"])
    auth = values["ClusterAuth"]
    return (not values["ElasticsearchDomainName"]
            and bool(values["ClusterArn"]) == (auth in ("sigv4", "aoss"))
            and bool(values["ClusterSecretArn"]) == (auth in ("basic", "apikey"))
            and bool(values["CollectionName"]) == (auth == "aoss"))


@settings(max_examples=300, deadline=None)
@given(endpoint=st.sampled_from(["", ENDPOINT]), auth=st.sampled_from(["sigv4", "aoss", "basic", "apikey"]),
       domain=st.sampled_from(["", "trail"]), arn=st.sampled_from(["", DOMAIN_ARN, COLLECTION_ARN]),
       collection=st.sampled_from(["", "trail-logs"]), secret=st.sampled_from(["", SECRET_ARN]))
def test_the_rules_accept_exactly_the_whole_descriptions(template, endpoint, auth, domain, arn, collection,
                                                         secret):
    values = {"ClusterEndpoint": endpoint, "ClusterAuth": auth, "ElasticsearchDomainName": domain,
              "ClusterArn": arn, "CollectionName": collection, "ClusterSecretArn": secret}
    refusals = _refusals(template, **values)
    assert (refusals == []) == whole(values), (values, refusals)
    if refusals:
        return
    # Accepted: the role reaches exactly one cluster, by exactly one means.
    params = template_parameters(template, CloudTrailBucket=BUCKET, **values)
    actions = {a for st_ in _role_statements(template, params) for a in as_list(st_["Action"])}
    means = {prefix for prefix in ("es:", "aoss:", "secretsmanager:") if any(a.startswith(prefix) for a in actions)}
    expected = {"sigv4": "es:", "aoss": "aoss:", "basic": "secretsmanager:", "apikey": "secretsmanager:"}
    assert means == ({"es:"} if not endpoint else {expected[auth]})
