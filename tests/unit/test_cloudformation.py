"""Static checks of cloudformation.yml (no AWS, no network).

The template is read with a YAML loader that turns CloudFormation short-form
tags (`!Ref`, `!Sub`, ...) into their long form (`{"Ref": ...}`,
`{"Fn::Sub": ...}`), and a tiny evaluator resolves `Ref` to parameters,
`Fn::If` / `Fn::Not` / `Fn::And` / `Fn::Or` / `Fn::Equals` / `Fn::Join` /
`Fn::FindInMap` / `Fn::Sub` (parameters and its own variables) and
`AWS::NoValue`, so the security checks can look at what CloudFormation would
actually deploy for a given set of parameter values. Resource attributes
(`!GetAtt X.Arn`, `${X.Arn}`) and pseudo parameters (`${AWS::AccountId}`) stay
symbolic.
"""
from __future__ import annotations

import ast
import importlib
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cfn_template import (CfnLoader, as_list, condition_holds, deployed_of_type, deployed_resources, load_template, one_of_type, readable, resolve, resources_of_type, template_parameters)
from hypothesis import given, settings
from hypothesis import strategies

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "cloudformation.yml"
SRC = ROOT / "src"

ORIGINAL_PARAMETERS = {
    "LambdaName",
    "CloudTrailBucket",
    "CloudTrailPrefix",
    "ElasticsearchDomainName",
    "ElasticsearchInstanceType",
    "ElasticsearchStorageSize",
    "AllowedIPs",
    "IndexPrefix",
    "IndexShards",
    "IndexReplicas",
}
# The stack creates the Lambda's log group (LambdaLogGroup, with its retention).
LOG_ACTIONS = {"logs:CreateLogStream", "logs:PutLogEvents"}
ES_ACTIONS = {"es:ESHttpGet", "es:ESHttpHead", "es:ESHttpPost", "es:ESHttpPut"}
SQS_CONSUMER_ACTIONS = {
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
}
TLS_1_2_POLICIES = {"Policy-Min-TLS-1-2-2019-07", "Policy-Min-TLS-1-2-PFS-2023-10"}
TRIGGER_MODES = ("SQS", "EventBridge", "Both", "None")
SQS_SSE_RETENTION_MAX = 1209600  # 14 days
LOGS_PREFIX = "/aws/opensearch/cloudtrail-es/"

LOADER_FUNCTION, LOADER_ROLE = "LambdaFunction", "LambdaRole"
LOADER_TYPES = {LOADER_FUNCTION: "AWS::Lambda::Function", LOADER_ROLE: "AWS::IAM::Role"}
TRAIL_KEY = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
DEAD_LETTER_KEY = "arn:aws:kms:eu-west-1:111122223333:key/abcd1234-12ab-34cd-56ef-1234567890ab"
VIA_S3 = {"StringEquals": {"kms:ViaService": "s3.${AWS::Region}.amazonaws.com"}}
LOADER_OPENSEARCH_ROLE = "cloudtrail_loader"

BUCKET = "my-trail-bucket"
DEAD_LETTER_BUCKET = "my-dead-letters"


@pytest.fixture(scope="module")
def template() -> dict:
    assert TEMPLATE.is_file(), f"{TEMPLATE} is missing"
    doc = load_template(TEMPLATE)
    assert isinstance(doc, dict) and "Resources" in doc
    return doc


def _named(template: dict, name: str) -> tuple[str, dict]:
    """The loader's own resource (the stack has a second function and role: the setup ones)."""
    resource = template["Resources"][name]
    assert resource["Type"] == LOADER_TYPES[name], name
    return name, resource



# Parameter sets the security checks are evaluated under.
SCENARIOS = {
    "defaults-no-prefix": {"CloudTrailBucket": BUCKET, "CloudTrailPrefix": ""},
    "prefix-and-ips": {
        "CloudTrailBucket": BUCKET,
        "CloudTrailPrefix": "org/trail",
        "AllowedIPs": "203.0.113.7/32,198.51.100.0/24",
    },
    "dead-letter-bucket-retention": {
        "CloudTrailBucket": BUCKET,
        "DeadLetterBucket": DEAD_LETTER_BUCKET,
        "RetentionMonths": "13",
    },
    "kms-keys": {
        "CloudTrailBucket": BUCKET,
        "CloudTrailPrefix": "o-abc123/org-trail",
        "TrailKmsKeyArn": TRAIL_KEY,
        "DeadLetterKmsKeyArn": DEAD_LETTER_KEY,
    },
}
# Every scenario under every TriggerMode.
ROLE_CASES = [(s, mode) for s in sorted(SCENARIOS) for mode in TRIGGER_MODES]


def _get_att(resource: str, attribute: str = "Arn") -> dict:
    return {"Fn::GetAtt": [resource, attribute]}


def _expected_role_grants(template: dict, params: dict) -> set[tuple[str, str]]:
    """Every (action, resource) pair the Lambda role may have, nothing more."""
    lambda_name = params["LambdaName"]
    log_group = (
        "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}"
        f":log-group:/aws/lambda/{lambda_name}"
    )
    prefix = params["CloudTrailPrefix"]
    trail = f"arn:${{AWS::Partition}}:s3:::{params['CloudTrailBucket']}/"
    trail += f"{prefix}/*" if prefix else "*"
    dl_bucket = params["DeadLetterBucket"] or params["CloudTrailBucket"]
    dead_letters = f"arn:${{AWS::Partition}}:s3:::{dl_bucket}/{params['DeadLetterPrefix']}*"
    domain, _ = one_of_type(template, "AWS::OpenSearchService::Domain")
    grants = {(a, r) for a in LOG_ACTIONS for r in (log_group, log_group + ":*")}
    grants |= {("s3:GetObject", trail), ("s3:PutObject", dead_letters)}
    grants |= {(a, readable(r)) for a in ES_ACTIONS
               for r in (_get_att(domain), "${" + domain + ".Arn}/*")}
    if params["RetentionMonths"] != "0":
        grants.add(("es:ESHttpDelete", "${" + domain + ".Arn}/" + params["IndexPrefix"] + "-*"))
    grants.add(("sqs:SendMessage", readable(_get_att("AsyncFailureQueue"))))
    if params["TrailKmsKeyArn"]:
        grants.add(("kms:Decrypt", params["TrailKmsKeyArn"]))
    if params["DeadLetterKmsKeyArn"]:
        grants |= {(a, params["DeadLetterKmsKeyArn"]) for a in ("kms:GenerateDataKey", "kms:Decrypt")}
    if params["TriggerMode"] != "None":
        grants |= {(a, readable(_get_att("EventQueue"))) for a in SQS_CONSUMER_ACTIONS}
    return grants


# ---------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------
def test_original_parameters_exist(template):
    params = template["Parameters"]
    missing = ORIGINAL_PARAMETERS - params.keys()
    assert not missing, f"parameters of the original project are missing: {sorted(missing)}"
    assert params["LambdaName"]["Default"] == "CloudTrail_to_Elasticsearch"
    assert params["ElasticsearchInstanceType"]["Default"] == "t3.small.search"
    assert int(params["ElasticsearchStorageSize"]["Default"]) == 10
    assert params["AllowedIPs"]["Type"] == "CommaDelimitedList"
    # The default must be the empty list, i.e. no browser access at all.
    assert params["AllowedIPs"].get("Default") == ""
    assert params["CloudTrailPrefix"].get("Default") == ""


@pytest.mark.parametrize(
    ("name", "default"),
    [
        ("EngineVersion", "OpenSearch_2.19"),
        ("InstanceCount", "1"),
        ("DedicatedMasterEnabled", "false"),
        ("DedicatedMasterCount", "3"),
        ("ZoneAwarenessEnabled", "false"),
        ("AvailabilityZoneCount", "2"),
        ("StorageType", "gp3"),
        ("RetentionMonths", "0"),
        ("TriggerMode", "SQS"),
        ("ReservedConcurrency", "-1"),
        ("SqsMaximumConcurrency", "5"),
        ("LambdaTimeout", "300"),
        ("LambdaMemory", "512"),
        ("DeadLetterBucket", ""),
        ("DeadLetterPrefix", "cloudtrail-es-dead-letter/"),
        ("MasterUserName", "admin"),
    ],
)
def test_production_parameters(template, name, default):
    spec = template["Parameters"].get(name)
    assert spec is not None, f"parameter {name} is missing"
    assert str(spec.get("Default")) == default


def test_parameter_constraints(template):
    import re

    params = template["Parameters"]
    # Only versions the stack supports: fine-grained access control (Elasticsearch 7.x from
    # 7.10 here, any OpenSearch), and among them those the README's engine table tests.
    engines = params["EngineVersion"]["AllowedValues"]
    assert {"OpenSearch_2.19", "OpenSearch_1.3", "OpenSearch_3.1", "Elasticsearch_7.10"} <= set(engines)
    for engine in engines:
        kind, version = engine.split("_")
        major, minor = (int(part) for part in version.split("."))
        assert kind == "OpenSearch" or (kind == "Elasticsearch" and (major, minor) >= (7, 10)), engine
    assert params["EngineVersion"]["Default"] in engines
    assert set(params["StorageType"]["AllowedValues"]) == {"gp3", "gp2", "io1"}
    assert set(params["TriggerMode"]["AllowedValues"]) == set(TRIGGER_MODES)
    assert int(params["SqsMaximumConcurrency"]["MinValue"]) == 2
    assert int(params["ReservedConcurrency"]["MinValue"]) == -1
    # The dead-letter prefix can never be empty or widen the IAM resource.
    dl = params["DeadLetterPrefix"]
    pattern = re.compile(dl["AllowedPattern"])
    assert int(dl.get("MinLength", 0)) >= 1
    for bad in ("", "/x/", "a*", "a?", "${aws:username}/"):
        assert not pattern.fullmatch(bad), bad
    trail = re.compile(params["CloudTrailPrefix"]["AllowedPattern"])
    for ok in ("", "org/trail", "AWSLogsArchive", "my-AWSLogs-x", "AWSLogs/org"):
        assert trail.fullmatch(ok), ok
    # A prefix ending in AWSLogs would make the stack build AWSLogs/AWSLogs/ (upgrades).
    for bad in ("/org", "org/", "*", "org/*", "a$b", "AWSLogs", "org/AWSLogs", "AWSLogs/"):
        assert not trail.fullmatch(bad), bad
    assert "AWSLogs" in params["CloudTrailPrefix"]["ConstraintDescription"]
    months = re.compile(params["RetentionMonths"]["AllowedPattern"])
    assert months.fullmatch("0") and months.fullmatch("13")
    for bad in ("", "-1", "1.5", "01"):
        assert not months.fullmatch(bad), bad


# ---------------------------------------------------------------------------
# Lambda function
# ---------------------------------------------------------------------------
def test_lambda_function_settings(template):
    _, function = _named(template, LOADER_FUNCTION)
    props = function["Properties"]
    # `make deploy` updates the code of the function called $LambdaName.
    assert props["FunctionName"] == {"Ref": "LambdaName"}
    assert props["Runtime"] == "python3.12"
    assert props["Handler"] == "lambda_function.lambda_handler"
    assert props["MemorySize"] == {"Ref": "LambdaMemory"}
    assert props["Timeout"] == {"Ref": "LambdaTimeout"}
    assert "ZipFile" in props["Code"], "expected an inline placeholder (real code via make deploy)"
    role_name, _ = _named(template, LOADER_ROLE)
    assert props["Role"] == {"Fn::GetAtt": [role_name, "Arn"]}


@pytest.mark.parametrize(("reserved", "expected"), [("-1", None), ("0", "0"), ("20", "20")])
def test_reserved_concurrency(template, reserved, expected):
    params = template_parameters(template, CloudTrailBucket=BUCKET, ReservedConcurrency=reserved)
    _, function = _named(template, LOADER_FUNCTION)
    props = resolve(function["Properties"], template, params)
    assert props.get("ReservedConcurrentExecutions") == expected


def test_handler_exists_in_source(template):
    _, function = _named(template, LOADER_FUNCTION)
    module, _, func_name = function["Properties"]["Handler"].rpartition(".")
    path = SRC / (module.replace(".", "/") + ".py")
    assert path.is_file(), f"handler module {path.relative_to(ROOT)} does not exist"
    handler = getattr(importlib.import_module(module), func_name, None)
    assert callable(handler), f"no function {func_name}() in {path.relative_to(ROOT)}"
    params = list(inspect.signature(handler).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params), \
        f"{func_name} must accept (event, context)"


def test_lambda_environment(template):
    _, function = _named(template, LOADER_FUNCTION)
    env = function["Properties"]["Environment"]["Variables"]
    domain_name, _ = one_of_type(template, "AWS::OpenSearchService::Domain")
    deployed = resolve(env, template, template_parameters(template, CloudTrailBucket=BUCKET))
    assert deployed["ES_HOSTNAME"] == {"Fn::GetAtt": [domain_name, "DomainEndpoint"]}
    assert deployed["ES_AUTH"] == "sigv4"
    assert "ES_SECRET_ARN" not in deployed and "ES_SERVICE" not in deployed
    assert env["INDEX_PREFIX"] == {"Ref": "IndexPrefix"}
    assert env["INDEX_SHARDS"] == {"Ref": "IndexShards"}
    assert env["INDEX_REPLICAS"] == {"Ref": "IndexReplicas"}
    assert env["DEAD_LETTER_PREFIX"] == {"Ref": "DeadLetterPrefix"}
    assert env["RETENTION_MONTHS"] == {"Ref": "RetentionMonths"}


@pytest.mark.parametrize(
    ("dead_letter_bucket", "expected"), [("", BUCKET), (DEAD_LETTER_BUCKET, DEAD_LETTER_BUCKET)]
)
def test_dead_letter_bucket_defaults_to_the_trail_bucket(template, dead_letter_bucket, expected):
    params = template_parameters(template, CloudTrailBucket=BUCKET, DeadLetterBucket=dead_letter_bucket)
    _, function = _named(template, LOADER_FUNCTION)
    env = resolve(function["Properties"]["Environment"]["Variables"], template, params)
    assert env["DEAD_LETTER_BUCKET"] == expected
    assert env["DEAD_LETTER_PREFIX"] == "cloudtrail-es-dead-letter/"


def test_the_code_reads_the_variables_the_template_sets(template):
    """Every variable set on the function is one the code reads (no typo)."""
    _, function = _named(template, LOADER_FUNCTION)
    names = set(function["Properties"]["Environment"]["Variables"])
    sources = "\n".join(
        path.read_text(encoding="utf-8") for path in SRC.rglob("*.py")
    )
    unread = sorted(name for name in names if f'"{name}"' not in sources)
    assert not unread, f"set by the template but read nowhere in src/: {unread}"


# ---------------------------------------------------------------------------
# Execution role
# ---------------------------------------------------------------------------
def _role_statements(template: dict, params: dict) -> list[dict]:
    """Every statement granted to the Lambda role, resolved for `params`."""
    role_name, role = _named(template, LOADER_ROLE)
    props = resolve(role["Properties"], template, params)
    assert not props.get("ManagedPolicyArns"), "no managed policies expected"
    documents = [p["PolicyDocument"] for p in props.get("Policies", [])]
    for rtype, key in (
        ("AWS::IAM::RolePolicy", "RoleName"),
        ("AWS::IAM::Policy", "Roles"),
        ("AWS::IAM::ManagedPolicy", "Roles"),
    ):
        for res in deployed_of_type(template, params, rtype).values():
            targets = as_list(res["Properties"].get(key, []))
            if {"Ref": role_name} in targets:
                documents.append(resolve(res["Properties"]["PolicyDocument"], template, params))
    statements = []
    for doc in documents:
        statements.extend(as_list(doc["Statement"]))
    return statements


def _role_grants(template: dict, params: dict) -> set[tuple[str, str]]:
    grants = set()
    for st in _role_statements(template, params):
        assert st["Effect"] == "Allow"
        assert "NotAction" not in st and "NotResource" not in st
        assert "Condition" not in st or st["Condition"], "empty condition"
        if any(a.startswith("kms:") for a in as_list(st["Action"])):
            assert st["Condition"] == VIA_S3, f"{st.get('Sid')}: KMS only through S3"
        else:
            assert "Condition" not in st, st.get("Sid")
        for action in as_list(st["Action"]):
            assert "*" not in action, f"wildcard action {action!r}"
            for resource in as_list(st["Resource"]):
                assert resource != "*", f"statement {st.get('Sid')} applies to every resource"
                grants.add((action, readable(resource)))
    return grants


@pytest.mark.parametrize(("scenario", "mode"), ROLE_CASES)
def test_role_grants_exactly_the_allowed_set(template, scenario, mode):
    """Actions *and* resources: nothing beyond the list, for every TriggerMode."""
    params = template_parameters(template, TriggerMode=mode, **SCENARIOS[scenario])
    grants = _role_grants(template, params)
    expected = _expected_role_grants(template, params)
    assert grants - expected == set(), f"granted beyond the list: {sorted(grants - expected)}"
    assert expected - grants == set(), f"missing grants: {sorted(expected - grants)}"


def test_role_only_assumable_by_lambda(template):
    _, role = _named(template, LOADER_ROLE)
    statements = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert statements == [
        {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
         "Action": "sts:AssumeRole"}
    ]


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("", f"arn:${{AWS::Partition}}:s3:::{BUCKET}/*"),
        ("org/trail", f"arn:${{AWS::Partition}}:s3:::{BUCKET}/org/trail/*"),
    ],
)
def test_s3_access_only_on_the_trail_prefix_and_dead_letters(template, prefix, expected):
    params = template_parameters(template, CloudTrailBucket=BUCKET, CloudTrailPrefix=prefix)
    reads, writes = set(), set()
    for st in _role_statements(template, params):
        actions = set(as_list(st["Action"]))
        if any(a.startswith("s3:") for a in actions):
            assert actions in ({"s3:GetObject"}, {"s3:PutObject"}), actions
            (reads if actions == {"s3:GetObject"} else writes).update(as_list(st["Resource"]))
        else:
            for resource in as_list(st["Resource"]):
                assert ":s3:::" not in str(resource)
    assert reads == {expected}
    # Writes only under the dead-letter prefix, never the trail's own files.
    assert writes == {f"arn:${{AWS::Partition}}:s3:::{BUCKET}/cloudtrail-es-dead-letter/*"}


@pytest.mark.parametrize("retention", ["0", "1", "13"])
def test_es_and_logs_access_scoped(template, retention):
    params = template_parameters(template, RetentionMonths=retention, **SCENARIOS["defaults-no-prefix"])
    domain_name, _ = one_of_type(template, "AWS::OpenSearchService::Domain")
    domain_arn = {"Fn::GetAtt": [domain_name, "Arn"]}
    # (the evaluator has already turned `!Sub "${Domain.Arn}/*"` into a string)
    domain_children = "${" + domain_name + ".Arn}/*"
    es_grants = deletes = 0
    for st in _role_statements(template, params):
        actions = set(as_list(st["Action"]))
        resources = as_list(st["Resource"])
        if actions & ES_ACTIONS:
            es_grants += 1
            assert actions == ES_ACTIONS
            assert len(resources) == 2
            assert domain_arn in resources and domain_children in resources
        if "es:ESHttpDelete" in actions:
            # Retention deletes whole monthly indices: only the loader's own.
            deletes += 1
            assert actions == {"es:ESHttpDelete"}
            assert resources == ["${" + domain_name + ".Arn}/" + params["IndexPrefix"] + "-*"]
        if actions & LOG_ACTIONS:
            assert actions == LOG_ACTIONS
            for resource in resources:
                lambda_name = params["LambdaName"]
                assert f":log-group:/aws/lambda/{lambda_name}" in resource, resource
    assert es_grants == 1
    assert deletes == (0 if retention == "0" else 1)


@pytest.mark.parametrize("mode", TRIGGER_MODES)
def test_sqs_access_only_on_the_stack_queues(template, mode):
    params = template_parameters(template, CloudTrailBucket=BUCKET, TriggerMode=mode)
    consumer, sender = set(), set()
    for st in _role_statements(template, params):
        actions = set(as_list(st["Action"]))
        if not any(a.startswith("sqs:") for a in actions):
            continue
        resources = {readable(r) for r in as_list(st["Resource"])}
        if actions == {"sqs:SendMessage"}:
            sender |= resources
        else:
            assert actions == SQS_CONSUMER_ACTIONS
            consumer |= resources
    assert sender == {readable(_get_att("AsyncFailureQueue"))}
    assert consumer == (set() if mode == "None" else {readable(_get_att("EventQueue"))})


# ---------------------------------------------------------------------------
# OpenSearch domain
# ---------------------------------------------------------------------------
def test_domain_transport_and_encryption(template):
    _, domain = one_of_type(template, "AWS::OpenSearchService::Domain")
    props = domain["Properties"]
    assert props["DomainName"] == {"Ref": "ElasticsearchDomainName"}
    assert props["EngineVersion"] == {"Ref": "EngineVersion"}
    assert template["Parameters"]["EngineVersion"]["Default"].startswith("OpenSearch_")
    assert props["DomainEndpointOptions"]["EnforceHTTPS"] is True
    assert props["DomainEndpointOptions"]["TLSSecurityPolicy"] in TLS_1_2_POLICIES
    assert props["NodeToNodeEncryptionOptions"]["Enabled"] is True
    assert props["EncryptionAtRestOptions"]["Enabled"] is True
    ebs = props["EBSOptions"]
    assert ebs["EBSEnabled"] is True
    assert ebs["VolumeType"] == {"Ref": "StorageType"}
    assert ebs["VolumeSize"] == {"Ref": "ElasticsearchStorageSize"}
    assert props["ClusterConfig"]["InstanceType"] == {"Ref": "ElasticsearchInstanceType"}
    assert props["ClusterConfig"]["InstanceCount"] == {"Ref": "InstanceCount"}


def test_fine_grained_access_control(template):
    """No anonymous access: FGAC on, internal master user, generated password."""
    _, domain = one_of_type(template, "AWS::OpenSearchService::Domain")
    fgac = domain["Properties"]["AdvancedSecurityOptions"]
    assert fgac["Enabled"] is True
    assert fgac["InternalUserDatabaseEnabled"] is True
    assert fgac.get("AnonymousAuthEnabled", False) is False
    master = fgac["MasterUserOptions"]
    assert master["MasterUserName"] == {"Ref": "MasterUserName"}
    secret_name, secret = one_of_type(template, "AWS::SecretsManager::Secret")
    assert master["MasterUserPassword"] == {
        "Fn::Sub": "{{resolve:secretsmanager:${" + secret_name + "}:SecretString:password}}"
    }
    generated = secret["Properties"]["GenerateSecretString"]
    assert generated["GenerateStringKey"] == "password"
    assert int(generated["PasswordLength"]) >= 16
    assert generated.get("RequireEachIncludedType") is True
    assert "SecretString" not in secret["Properties"], "the password must be generated"
    # No password parameter, no literal password anywhere.
    for name in template["Parameters"]:
        assert "password" not in name.lower(), name
    assert "MasterUserARN" not in master  # an internal user, not an IAM principal


def test_domain_logs_published(template):
    _, domain = one_of_type(template, "AWS::OpenSearchService::Domain")
    options = domain["Properties"]["LogPublishingOptions"]
    for log_type in ("ES_APPLICATION_LOGS", "AUDIT_LOGS"):
        assert options[log_type]["Enabled"] is True
        group = options[log_type]["CloudWatchLogsLogGroupArn"]["Fn::GetAtt"][0]
        assert template["Resources"][group]["Type"] == "AWS::Logs::LogGroup"
        assert int(template["Resources"][group]["Properties"]["RetentionInDays"]) > 0
    assert not resources_of_type(template, "AWS::Logs::ResourcePolicy"), "one shared policy, not one per stack"
    policy = template["Resources"]["SharedLogsResourcePolicy"]
    assert policy["Type"] == "Custom::LogsResourcePolicy"
    assert policy["Properties"]["ServiceToken"] == _get_att("SetupFunction")
    assert policy.get("Condition") == "CreatesDomain" and "DeletionPolicy" not in policy
    assert template["Resources"]["Domain"]["DependsOn"] == "SharedLogsResourcePolicy"
    # A fixed name: every stack of the template upserts the same single policy.
    assert policy["Properties"]["PolicyName"] == "cloudtrail-es-opensearch-logs"
    text = policy["Properties"]["PolicyDocument"]["Fn::Sub"]
    document = json.loads(text)
    (statement,) = document["Statement"]
    assert statement["Principal"] == {"Service": "es.amazonaws.com"}
    assert statement["Action"] == ["logs:CreateLogStream", "logs:PutLogEvents"]
    prefix = "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:"
    assert statement["Resource"] == prefix + LOGS_PREFIX + "*"
    assert statement["Condition"] == {
        "StringEquals": {"aws:SourceAccount": "${AWS::AccountId}"},
        "ArnLike": {"aws:SourceArn": "arn:${AWS::Partition}:es:${AWS::Region}:${AWS::AccountId}:domain/*"},
    }
    # The domain's log groups are under the prefix, named after the domain and the stack id.
    for log_type in ("ES_APPLICATION_LOGS", "AUDIT_LOGS"):
        group = options[log_type]["CloudWatchLogsLogGroupArn"]["Fn::GetAtt"][0]
        name = template["Resources"][group]["Properties"]["LogGroupName"]["Fn::Sub"]
        assert name[0].startswith(LOGS_PREFIX + "${ElasticsearchDomainName}-${StackUuid}/"), name
        assert name[1]["StackUuid"] == {"Fn::Select": [2, {"Fn::Split": ["/", {"Ref": "AWS::StackId"}]}]}


@pytest.mark.parametrize(
    ("overrides", "masters", "zones"),
    [
        ({}, None, None),
        ({"DedicatedMasterEnabled": "true"}, ("<type>", "3"), None),
        ({"DedicatedMasterEnabled": "true", "DedicatedMasterCount": "5",
          "DedicatedMasterType": "r7g.large.search"}, ("r7g.large.search", "5"), None),
        ({"ZoneAwarenessEnabled": "true", "InstanceCount": "4"}, None, "2"),
        ({"ZoneAwarenessEnabled": "true", "AvailabilityZoneCount": "3",
          "InstanceCount": "3"}, None, "3"),
    ],
)
def test_cluster_config_from_parameters(template, overrides, masters, zones):
    params = template_parameters(template, CloudTrailBucket=BUCKET, **overrides)
    _, domain = one_of_type(template, "AWS::OpenSearchService::Domain")
    cluster = resolve(domain["Properties"]["ClusterConfig"], template, params)
    assert cluster["InstanceCount"] == params["InstanceCount"]
    if masters is None:
        assert cluster["DedicatedMasterEnabled"] is False
        assert "DedicatedMasterType" not in cluster and "DedicatedMasterCount" not in cluster
    else:
        master_type = params["DedicatedMasterType"] if masters[0] == "<type>" else masters[0]
        assert cluster["DedicatedMasterEnabled"] is True
        assert cluster["DedicatedMasterType"] == master_type
        assert cluster["DedicatedMasterCount"] == masters[1]
    if zones is None:
        assert cluster["ZoneAwarenessEnabled"] is False
        assert "ZoneAwarenessConfig" not in cluster
    else:
        assert cluster["ZoneAwarenessEnabled"] is True
        assert cluster["ZoneAwarenessConfig"] == {"AvailabilityZoneCount": zones}


@pytest.mark.parametrize(("storage", "iops"), [("gp3", False), ("gp2", False), ("io1", True)])
def test_storage_type(template, storage, iops):
    params = template_parameters(template, CloudTrailBucket=BUCKET, StorageType=storage)
    _, domain = one_of_type(template, "AWS::OpenSearchService::Domain")
    ebs = resolve(domain["Properties"]["EBSOptions"], template, params)
    assert ebs["VolumeType"] == storage
    assert ("Iops" in ebs) is iops


def _is_public(statement: dict) -> bool:
    principal = statement.get("Principal")
    if principal == "*":
        return True
    if isinstance(principal, dict):
        return any("*" in as_list(v) for v in principal.values())
    return False


def _has_ip_condition(statement: dict) -> bool:
    ip = statement.get("Condition", {}).get("IpAddress", {})
    return ip.get("aws:SourceIp") == {"Ref": "AllowedIPs"}


def _is_non_empty_allowed_ips(condition: Any) -> bool:
    """True for `!Not [!Equals [!Join ["", !Ref AllowedIPs], ""]]`."""
    joined = {"Fn::Join": ["", {"Ref": "AllowedIPs"}]}
    return condition in (
        {"Fn::Not": [{"Fn::Equals": [joined, ""]}]},
        {"Fn::Not": [{"Fn::Equals": ["", joined]}]},
    )


def test_public_principal_only_with_ip_condition_when_ips_given(template):
    _, domain = one_of_type(template, "AWS::OpenSearchService::Domain")
    policy = domain["Properties"]["AccessPolicies"]
    assert "NotPrincipal" not in str(policy)
    public_statements = 0
    for entry in as_list(policy["Statement"]):
        if "Fn::If" not in entry:
            assert not _is_public(entry), f"unguarded public statement {entry.get('Sid')}"
            continue
        cond_name, when_true, when_false = entry["Fn::If"]
        if when_true.get("Sid") == "MapLoaderRole":  # see test_role_mapping_reaches_two_urls_only
            assert cond_name == "MapsLambdaRole" and when_false == {"Ref": "AWS::NoValue"}
            continue
        for branch in (when_true, when_false):
            if isinstance(branch, dict) and "Principal" in branch and _is_public(branch):
                public_statements += 1
                assert branch is when_true, "public statement must be the non-empty branch"
                assert _has_ip_condition(branch), "public statement without an IP condition"
                assert _is_non_empty_allowed_ips(template["Conditions"][cond_name]), (
                    f"condition {cond_name} is not the non-empty AllowedIPs check"
                )
                assert when_false == {"Ref": "AWS::NoValue"}
    assert public_statements <= 1


@pytest.mark.parametrize("retention", ["0", "6"])
@pytest.mark.parametrize(
    ("allowed_ips", "expected_ips"),
    [
        ("", None),
        ("203.0.113.7/32", ["203.0.113.7/32"]),
        ("203.0.113.7/32,198.51.100.0/24", ["203.0.113.7/32", "198.51.100.0/24"]),
    ],
)
def test_access_policy_as_deployed(template, allowed_ips, expected_ips, retention):
    """Nothing beyond the Lambda role's es:ESHttp* and the IP-conditioned statement."""
    params = template_parameters(
        template, CloudTrailBucket=BUCKET, AllowedIPs=allowed_ips, RetentionMonths=retention
    )
    domain_name, domain = one_of_type(template, "AWS::OpenSearchService::Domain")
    role_name, _ = _named(template, LOADER_ROLE)
    statements = as_list(
        resolve(domain["Properties"]["AccessPolicies"], template, params)["Statement"]
    )
    domain_arn = (
        "arn:${AWS::Partition}:es:${AWS::Region}:${AWS::AccountId}"
        f":domain/{params['ElasticsearchDomainName']}"
    )
    private = [s for s in statements if not _is_public(s)]
    public = [s for s in statements if _is_public(s) and s["Sid"] != "MapLoaderRole"]
    assert [s["Sid"] for s in statements if s.get("Sid") == "MapLoaderRole"] == ["MapLoaderRole"]
    role_grants = set()
    for st in private:
        assert st["Principal"] == {"AWS": {"Fn::GetAtt": [role_name, "Arn"]}}
        assert "Condition" not in st
        role_grants |= {(a, r) for a in as_list(st["Action"]) for r in as_list(st["Resource"])}
    expected = {(a, r) for a in ES_ACTIONS for r in (domain_arn, domain_arn + "/*")}
    if retention != "0":
        expected.add(("es:ESHttpDelete", f"{domain_arn}/{params['IndexPrefix']}-*"))
    assert role_grants == expected
    if expected_ips is None:
        assert public == [], "an empty AllowedIPs must grant nothing"
    else:
        assert len(public) == 1
        assert public[0]["Condition"] == {"IpAddress": {"aws:SourceIp": expected_ips}}
        assert all(a.startswith("es:ESHttp") for a in as_list(public[0]["Action"]))
        assert as_list(public[0]["Resource"]) == [domain_arn + "/*"]
    for st in statements:
        assert st["Effect"] == "Allow"
        for resource in as_list(st["Resource"]):
            assert f":domain/{params['ElasticsearchDomainName']}" in resource


def test_only_the_domain_and_what_operates_it_are_retained(template):
    retained = {
        name
        for name, res in template["Resources"].items()
        if res.get("DeletionPolicy") == "Retain" or res.get("UpdateReplacePolicy") == "Retain"
    }
    domain_name, _ = one_of_type(template, "AWS::OpenSearchService::Domain")
    secret_name, _ = one_of_type(template, "AWS::SecretsManager::Secret")
    log_groups = {"DomainApplicationLogGroup", "DomainAuditLogGroup"}
    assert retained == {domain_name, secret_name} | log_groups
    assert set(resources_of_type(template, "AWS::Logs::LogGroup")) == log_groups | {
        "SetupLogGroup", "LambdaLogGroup", "NotificationLogGroup"}
    # The secret gets a generated name; the log groups one with the stack id in it (see
    # test_domain_logs_published), so that creating the stack again does not collide with them.
    assert "Name" not in template["Resources"][secret_name]["Properties"]
    # The shared logs policy is kept too: its custom resource's Delete leaves it (tested there).
    assert template["Resources"]["SharedLogsResourcePolicy"]["Type"] == "Custom::LogsResourcePolicy"


# ---------------------------------------------------------------------------
# Trigger plumbing
# ---------------------------------------------------------------------------
TRIGGER_RESOURCES = {
    "SQS": {"EventQueue", "EventDeadLetterQueue", "EventQueuePolicy", "EventQueueMapping"},
    "EventBridge": {"EventQueue", "EventDeadLetterQueue", "EventQueuePolicy",
                    "EventQueueMapping", "ObjectCreatedRule", "EventDeadLetterQueuePolicy"},
    "Both": {"EventQueue", "EventDeadLetterQueue", "EventQueuePolicy", "EventQueueMapping",
             "ObjectCreatedRule", "EventDeadLetterQueuePolicy"},
    "None": set(),
}


@pytest.mark.parametrize("mode", TRIGGER_MODES)
def test_trigger_mode_selects_what_exists(template, mode):
    params = template_parameters(template, CloudTrailBucket=BUCKET, TriggerMode=mode)
    deployed = set(deployed_resources(template, params))
    trigger_kinds = (
        "AWS::SQS::Queue", "AWS::SQS::QueuePolicy", "AWS::Lambda::EventSourceMapping",
    )
    trigger_like = {
        name for name in deployed
        if template["Resources"][name]["Type"] in trigger_kinds
        or (template["Resources"][name]["Type"] == "AWS::Events::Rule"
            and "EventPattern" in template["Resources"][name]["Properties"])
    }
    # AsyncFailureQueue is there in every mode.
    assert trigger_like - {"AsyncFailureQueue"} == TRIGGER_RESOURCES[mode]
    assert "AsyncFailureQueue" in deployed
    # No S3 -> Lambda permission: S3 and EventBridge deliver to the queue only.
    for name, res in deployed_of_type(template, params, "AWS::Lambda::Permission").items():
        assert res["Properties"]["Principal"] != "s3.amazonaws.com", name


def test_trigger_plumbing_is_deleted_with_the_stack(template):
    for rtype in ("AWS::SQS::Queue", "AWS::SQS::QueuePolicy", "AWS::Events::Rule",
                  "AWS::Lambda::EventSourceMapping", "AWS::Lambda::EventInvokeConfig"):
        for name, res in resources_of_type(template, rtype).items():
            assert res.get("DeletionPolicy", "Delete") == "Delete", name
            assert res.get("UpdateReplacePolicy", "Delete") == "Delete", name


def test_queues_encrypted(template):
    for name, queue in resources_of_type(template, "AWS::SQS::Queue").items():
        props = queue["Properties"]
        assert props.get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in props, name


@pytest.mark.parametrize("timeout", ["60", "120", "180", "300", "600", "900"])
def test_queue_visibility_at_least_six_times_the_function_timeout(template, timeout):
    params = template_parameters(template, CloudTrailBucket=BUCKET, LambdaTimeout=timeout)
    queue = resolve(template["Resources"]["EventQueue"]["Properties"], template, params)
    _, function = _named(template, LOADER_FUNCTION)
    function_timeout = int(resolve(function["Properties"]["Timeout"], template, params))
    assert int(queue["VisibilityTimeout"]) >= 6 * function_timeout


def test_every_allowed_timeout_has_a_visibility_timeout(template):
    allowed = {str(v) for v in template["Parameters"]["LambdaTimeout"]["AllowedValues"]}
    mapping = template["Mappings"]["QueueVisibilityTimeout"]
    assert set(mapping) == allowed
    for timeout, row in mapping.items():
        assert int(row["Seconds"]) >= 6 * int(timeout)
        assert int(row["Seconds"]) <= 43200  # SQS's maximum


def test_dead_letter_queue_and_redrive(template):
    queue = template["Resources"]["EventQueue"]
    dlq = template["Resources"]["EventDeadLetterQueue"]
    assert dlq["Type"] == "AWS::SQS::Queue"
    assert queue.get("Condition") == dlq.get("Condition")
    redrive = queue["Properties"]["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == _get_att("EventDeadLetterQueue")
    assert int(redrive["maxReceiveCount"]) == 5
    assert int(dlq["Properties"]["MessageRetentionPeriod"]) == SQS_SSE_RETENTION_MAX
    # A message keeps its first enqueue time in the DLQ: it must outlive the queue's.
    assert int(queue["Properties"].get("MessageRetentionPeriod", 345600)) < SQS_SSE_RETENTION_MAX


def test_event_source_mapping(template):
    name, mapping = one_of_type(template, "AWS::Lambda::EventSourceMapping")
    function_name, _ = _named(template, LOADER_FUNCTION)
    props = mapping["Properties"]
    assert props["EventSourceArn"] == _get_att("EventQueue")
    assert props["FunctionName"] == {"Ref": function_name}
    assert int(props["BatchSize"]) == 10
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "SqsMaximumConcurrency"}}
    assert mapping["Condition"] == template["Resources"]["EventQueue"]["Condition"]


@pytest.mark.parametrize("mode", ["SQS", "EventBridge", "Both"])
def test_queue_policy_only_lets_the_bucket_and_the_rule_send(template, mode):
    params = template_parameters(template, CloudTrailBucket=BUCKET, TriggerMode=mode)
    _, policy = next(iter(deployed_of_type(template, params, "AWS::SQS::QueuePolicy").items()))
    props = resolve(policy["Properties"], template, params)
    assert props["Queues"] == [{"Ref": "EventQueue"}]
    by_service = {}
    for st in as_list(props["PolicyDocument"]["Statement"]):
        assert st["Effect"] == "Allow"
        assert set(st["Principal"]) == {"Service"}
        assert as_list(st["Action"]) == ["sqs:SendMessage"]
        assert st["Resource"] == _get_att("EventQueue")
        by_service[st["Principal"]["Service"]] = st["Condition"]
    expected = set()
    if mode in ("SQS", "Both"):
        expected.add("s3.amazonaws.com")
    if mode in ("EventBridge", "Both"):
        expected.add("events.amazonaws.com")
    assert set(by_service) == expected
    if "s3.amazonaws.com" in by_service:
        assert by_service["s3.amazonaws.com"] == {
            "ArnEquals": {"aws:SourceArn": f"arn:${{AWS::Partition}}:s3:::{BUCKET}"},
            "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
        }
    if "events.amazonaws.com" in by_service:
        assert by_service["events.amazonaws.com"] == {
            "ArnEquals": {"aws:SourceArn": _get_att("ObjectCreatedRule")}
        }


@pytest.mark.parametrize(("prefix", "key_prefix"), [("", "AWSLogs/"), ("org/trail", "org/trail/AWSLogs/")])
def test_eventbridge_rule_feeds_the_same_queue(template, prefix, key_prefix):
    params = template_parameters(template, CloudTrailBucket=BUCKET, CloudTrailPrefix=prefix,
                     TriggerMode="EventBridge")
    rule = resolve(template["Resources"]["ObjectCreatedRule"]["Properties"], template, params)
    # Log files only: under the trail prefix and ending in .json.gz.
    assert rule["EventPattern"] == {
        "source": ["aws.s3"],
        "detail-type": ["Object Created"],
        "detail": {"bucket": {"name": [BUCKET]},
                   "object": {"key": [{"wildcard": key_prefix + "*.json.gz"}]}},
    }
    assert [t["Arn"] for t in rule["Targets"]] == [_get_att("EventQueue")]
    # What EventBridge cannot deliver lands in the dead-letter queue, which admits the rule only.
    (target,) = rule["Targets"]
    assert target["DeadLetterConfig"] == {"Arn": _get_att("EventDeadLetterQueue")}
    assert int(target["RetryPolicy"]["MaximumRetryAttempts"]) > 0
    dlq_policy = resolve(template["Resources"]["EventDeadLetterQueuePolicy"]["Properties"],
                          template, params)
    assert dlq_policy["Queues"] == [{"Ref": "EventDeadLetterQueue"}]
    (statement,) = dlq_policy["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": _get_att("ObjectCreatedRule")}}
    assert rule.get("State", "ENABLED") == "ENABLED"


# ---------------------------------------------------------------------------
# Asynchronous failures and the retention schedule
# ---------------------------------------------------------------------------
def test_async_failures_go_to_a_queue(template):
    _, config = one_of_type(template, "AWS::Lambda::EventInvokeConfig")
    function_name, _ = _named(template, LOADER_FUNCTION)
    props = config["Properties"]
    assert props["FunctionName"] == {"Ref": function_name}
    assert int(props["MaximumRetryAttempts"]) == 2
    destination = props["DestinationConfig"]["OnFailure"]["Destination"]
    assert destination == _get_att("AsyncFailureQueue")
    queue = template["Resources"]["AsyncFailureQueue"]
    assert queue["Type"] == "AWS::SQS::Queue" and "Condition" not in queue
    assert queue["Properties"]["SqsManagedSseEnabled"] is True


@pytest.mark.parametrize(("months", "scheduled"), [("0", False), ("1", True), ("24", True)])
def test_retention_schedule_only_when_months_given(template, months, scheduled):
    params = template_parameters(template, CloudTrailBucket=BUCKET, RetentionMonths=months)
    function_name, _ = _named(template, LOADER_FUNCTION)
    rules = {
        name: resolve(res["Properties"], template, params)
        for name, res in deployed_of_type(template, params, "AWS::Events::Rule").items()
        if "ScheduleExpression" in res["Properties"]
    }
    permissions = {
        name: resolve(res["Properties"], template, params)
        for name, res in deployed_of_type(template, params, "AWS::Lambda::Permission").items()
    }
    if not scheduled:
        assert rules == {} and permissions == {}
        return
    assert len(rules) == 1
    (rule_name, rule), = rules.items()
    assert rule["ScheduleExpression"] == "rate(1 day)"
    (target,) = rule["Targets"]
    assert target["Arn"] == _get_att(function_name)
    assert json.loads(target["Input"]) == {"cloudtrail_es": "retention"}
    assert len(permissions) == 1
    (permission,) = permissions.values()
    assert permission["Principal"] == "events.amazonaws.com"
    assert permission["Action"] == "lambda:InvokeFunction"
    assert permission["SourceArn"] == _get_att(rule_name)


# ---------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------
def test_outputs(template):
    outputs = template["Outputs"]
    values = [o["Value"] for o in outputs.values()]
    domain_name, _ = one_of_type(template, "AWS::OpenSearchService::Domain")
    assert {"Fn::GetAtt": [domain_name, "DomainEndpoint"]} in values
    assert {"Fn::Sub": "https://${" + domain_name + ".DomainEndpoint}/_dashboards/"} in values
    function_name, _ = _named(template, LOADER_FUNCTION)
    assert {"Fn::GetAtt": [function_name, "Arn"]} in values
    role_name, _ = _named(template, LOADER_ROLE)
    assert {"Fn::GetAtt": [role_name, "Arn"]} in values
    assert outputs["EventQueueArn"]["Value"] == _get_att("EventQueue")
    assert outputs["EventQueueUrl"]["Value"] == {"Ref": "EventQueue"}
    assert outputs["EventQueueArn"]["Condition"] == template["Resources"]["EventQueue"]["Condition"]


@pytest.mark.parametrize("mapped", ["true", "false"])
def test_role_mapping_step(template, mapped):
    params = template_parameters(template, CloudTrailBucket=BUCKET, MapLambdaRole=mapped)
    text = resolve(template["Outputs"]["RoleMappingStep"]["Value"], template, params)
    assert "${LambdaRole.Arn}" in text
    if mapped == "true":
        assert text.startswith("done by the stack") and LOADER_OPENSEARCH_ROLE in text
    else:
        assert "all_access" in text and "Security" in text and "_plugins/_security/api" in text


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("SQS", "add an s3:ObjectCreated:* event notification on my-trail-bucket prefix "
                "org/trail/AWSLogs/ suffix .json.gz to queue ${EventQueue.Arn}"),
        ("EventBridge", "turn on EventBridge notifications for my-trail-bucket"),
        ("Both", "add an s3:ObjectCreated:* event notification on my-trail-bucket prefix "
                 "org/trail/AWSLogs/ suffix .json.gz to queue ${EventQueue.Arn}, and turn on "
                 "EventBridge notifications for my-trail-bucket"),
        ("None", "nothing (TriggerMode None creates no trigger; load with cloudtrail-bulk-upload)"),
    ],
)
def test_bucket_notification_step(template, mode, expected):
    params = template_parameters(template, CloudTrailBucket=BUCKET, CloudTrailPrefix="org/trail",
                     TriggerMode=mode, ManageBucketNotification="false")
    assert resolve(template["Outputs"]["BucketNotificationStep"]["Value"], template,
                    params) == expected


# ---------------------------------------------------------------------------
# Rules: invalid combinations are refused before anything is created
# ---------------------------------------------------------------------------
def _rule_value(node: Any, params: dict) -> Any:
    """Evaluate a Rules expression (the functions CloudFormation allows there)."""
    if not isinstance(node, dict):
        return node
    (key, arg), = node.items()
    if key == "Ref":
        return params[arg]
    if key == "Fn::Equals":
        left, right = (_rule_value(a, params) for a in arg)
        return str(left) == str(right)
    if key == "Fn::Not":
        return not _rule_value(arg[0], params)
    if key == "Fn::And":
        return all(_rule_value(a, params) for a in arg)
    if key == "Fn::Or":
        return any(_rule_value(a, params) for a in arg)
    if key == "Fn::Contains":
        values, value = arg
        return str(_rule_value(value, params)) in [str(v) for v in values]
    raise AssertionError(f"{key} is not evaluated here")


def _refusals(template: dict, **overrides: Any) -> list[str]:
    """The AssertDescriptions CloudFormation would answer for these parameter values."""
    params = template_parameters(template, **{"CloudTrailBucket": BUCKET, "ElasticsearchDomainName": "trail",
                                  **overrides})
    refused = []
    for name, rule in template["Rules"].items():
        if "RuleCondition" in rule and not _rule_value(rule["RuleCondition"], params):
            continue
        for assertion in rule["Assertions"]:
            if not _rule_value(assertion["Assert"], params):
                refused.append(f"{name}: {assertion['AssertDescription']}")
    return refused


def test_every_rule_says_why(template):
    for name, rule in template["Rules"].items():
        for assertion in rule["Assertions"]:
            assert len(assertion.get("AssertDescription", "").split()) >= 8, name


@pytest.mark.parametrize(("scenario", "mode"), ROLE_CASES)
def test_defaults_and_scenarios_pass_every_rule(template, scenario, mode):
    """No default (nor any scenario the other tests deploy) is refused."""
    assert _refusals(template, TriggerMode=mode, **SCENARIOS[scenario]) == []


@pytest.mark.parametrize(
    ("overrides", "refused_by"),
    [
        ({"StorageType": "io1"}, "Io1StorageLargeEnoughForItsIops"),
        ({"StorageType": "io1", "ElasticsearchStorageSize": "19"}, "Io1StorageLargeEnoughForItsIops"),
        ({"StorageType": "io1", "ElasticsearchStorageSize": "20"}, None),
        ({"StorageType": "io1", "ElasticsearchStorageSize": "100", "StorageIops": "5000"}, None),
        ({"StorageType": "gp3", "StorageIops": "5000"}, "StorageIopsOnlyForIo1"),
        ({"StorageType": "gp2", "StorageIops": "2000"}, "StorageIopsOnlyForIo1"),
        ({"ZoneAwarenessEnabled": "true"}, "ZoneAwarenessNeedsNodesInEveryZone"),
        ({"ZoneAwarenessEnabled": "true", "AvailabilityZoneCount": "3"},
         "ZoneAwarenessNeedsNodesInEveryZone"),
        ({"ZoneAwarenessEnabled": "true", "InstanceCount": "2"}, None),
        ({"ZoneAwarenessEnabled": "false", "InstanceCount": "1"}, None),
        ({"ReservedConcurrency": "1"}, "ReservedConcurrencyFeedsTheQueue"),
        ({"ReservedConcurrency": "4"}, "ReservedConcurrencyFeedsTheQueue"),  # default queue: 5
        ({"ReservedConcurrency": "5"}, None),
        ({"ReservedConcurrency": "0"}, None),
        ({"AlarmTopicArn": "arn:aws:sns:eu-west-1:111122223333:ops", "CreateAlarms": "false"},
         "AlarmTopicNeedsAlarms"),
        ({"AlarmTopicArn": "arn:aws:sns:eu-west-1:111122223333:ops"}, None),
    ],
)
def test_rule_refuses(template, overrides, refused_by):
    refusals = _refusals(template, **overrides)
    if refused_by is None:
        assert refusals == []
    else:
        assert refusals and all(r.startswith(refused_by + ":") for r in refusals), refusals


@settings(max_examples=150, deadline=None)
@given(count=strategies.integers(1, 80), zones=strategies.sampled_from(["2", "3"]))
def test_zone_awareness_rule_is_exact(template, count, zones):
    refused = _refusals(template, ZoneAwarenessEnabled="true", AvailabilityZoneCount=zones,
                        InstanceCount=str(count))
    assert bool(refused) == (count % int(zones) != 0)


@settings(max_examples=200, deadline=None)
@given(reserved=strategies.integers(-1, 60), queue=strategies.integers(2, 1000))
def test_reserved_concurrency_rule(template, reserved, queue):
    """Exact up to ReservedConcurrency 20 (CloudFormation cannot compare numbers); never wrong."""
    refused = bool(_refusals(template, ReservedConcurrency=str(reserved),
                             SqsMaximumConcurrency=str(queue)))
    invalid = reserved not in (-1, 0) and reserved < queue
    if reserved <= 20:
        assert refused == invalid
    else:
        assert not refused


# ---------------------------------------------------------------------------
# The setup function and its custom resources (role mapping, logs policy)
# ---------------------------------------------------------------------------
def test_setup_function_code_is_the_module(template):
    function = template["Resources"]["SetupFunction"]
    props = function["Properties"]
    assert props["Handler"] == "index.handler"  # inline code is stored as index.py
    assert props["Runtime"] == "python3.12"
    assert props["Role"] == _get_att("SetupRole")
    module = SRC / "cloudtrail_es" / "aws" / "rolemapping.py"
    assert props["Code"]["ZipFile"] == module.read_text(encoding="utf-8"), (
        "SetupFunction's inline code differs from src/cloudtrail_es/aws/rolemapping.py: "
        "run python scripts/inline_rolemapping.py")
    tree = ast.parse(props["Code"]["ZipFile"])
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= set(sys.stdlib_module_names) | {"boto3"}, "inline code: stdlib and boto3 only"
    assert all(not (isinstance(node, ast.ImportFrom) and node.level) for node in ast.walk(tree))
    # It answers CloudFormation before its own timeout, and CloudFormation waits no longer than needed.
    from cloudtrail_es.aws import rolemapping

    assert int(props["Timeout"]) > rolemapping.REPORT_RESERVE_SECONDS + rolemapping.REQUEST_TIMEOUT_SECONDS
    for name in ("LambdaRoleMapping", "SharedLogsResourcePolicy"):
        resource = template["Resources"][name]
        assert resource["Properties"]["ServiceToken"] == _get_att("SetupFunction")
        assert int(props["Timeout"]) < int(resource["Properties"]["ServiceTimeout"]) <= 900


def test_setup_role_grants_exactly(template):
    role = template["Resources"]["SetupRole"]["Properties"]
    assert role["AssumeRolePolicyDocument"]["Statement"] == [
        {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ]
    assert not role.get("ManagedPolicyArns")
    grants = set()
    for policy in role["Policies"]:
        for statement in as_list(policy["PolicyDocument"]["Statement"]):
            assert statement["Effect"] == "Allow" and "Condition" not in statement
            grants |= {(a, readable(r)) for a in as_list(statement["Action"])
                       for r in as_list(statement["Resource"])}
    assert grants == {
        ("logs:CreateLogStream", readable(_get_att("SetupLogGroup"))),
        ("logs:PutLogEvents", readable(_get_att("SetupLogGroup"))),
        ("secretsmanager:GetSecretValue", readable({"Ref": "MasterUserSecret"})),
        ("logs:PutResourcePolicy", "*"),  # no resource-level permission exists for it
    }
    # No other role or policy names the setup role.
    for rtype in ("AWS::IAM::RolePolicy", "AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
        for res in resources_of_type(template, rtype).values():
            assert {"Ref": "SetupRole"} not in as_list(res["Properties"].get("RoleName", []))
            assert {"Ref": "SetupRole"} not in as_list(res["Properties"].get("Roles", []))
    assert template["Resources"]["SetupFunction"]["Properties"]["LoggingConfig"] == {
        "LogGroup": {"Ref": "SetupLogGroup"}}


def _symbolic(value: Any) -> Any:
    """Resolved properties with GetAtt / Ref left as readable strings (as the function receives them)."""
    if isinstance(value, list):
        return [_symbolic(v) for v in value]
    if isinstance(value, dict) and set(value) == {"Fn::GetAtt"}:
        return "<{}.{}>".format(*value["Fn::GetAtt"])
    if isinstance(value, dict) and set(value) == {"Ref"}:
        return f"<{value['Ref']}>"
    if isinstance(value, dict):
        return {k: _symbolic(v) for k, v in value.items()}
    return value


@pytest.mark.parametrize(("retention", "deletes"), [("0", False), ("13", True)])
def test_role_mapping_resource(template, retention, deletes):
    from cloudtrail_es.aws import rolemapping

    params = template_parameters(template, CloudTrailBucket=BUCKET, RetentionMonths=retention)
    resource = template["Resources"]["LambdaRoleMapping"]
    assert resource["Type"] == "Custom::RoleMapping"
    assert resource["Condition"] == "MapsLambdaRole"
    props = _symbolic(resolve(resource["Properties"], template, params))
    assert props["Endpoint"] == "<Domain.DomainEndpoint>"
    assert props["MasterUserSecretArn"] == "<MasterUserSecret>"
    assert props["BackendRoles"] == ["<LambdaRole.Arn>"]
    request = rolemapping.mapping_request(props)  # the function accepts what the template sends
    assert request.role == LOADER_OPENSEARCH_ROLE
    assert request.index_prefix == params["IndexPrefix"]
    assert request.delete_indices is deletes
    role = rolemapping.loader_role(request.index_prefix, request.delete_indices)
    (index_permission,) = role["index_permissions"]
    assert index_permission["index_patterns"] == ["cloudtrail-????-??", "cloudtrail_findings",
                                                  "cloudtrail_findings_state"]
    assert ("indices:admin/delete" in index_permission["allowed_actions"]) is deletes


@pytest.mark.parametrize(("engine", "api"), [("OpenSearch_2.19", "/_plugins/_security/api"),
                                             ("OpenSearch_1.3", "/_plugins/_security/api"),
                                             ("Elasticsearch_7.10", "/_opendistro/_security/api")])
@pytest.mark.parametrize("mapped", ["true", "false"])
def test_role_mapping_reaches_two_urls_only(template, mapped, engine, api):
    """The unsigned basic-auth calls may reach the one role and mapping, nothing else."""
    from cloudtrail_es.aws import rolemapping

    params = template_parameters(template, CloudTrailBucket=BUCKET, MapLambdaRole=mapped, EngineVersion=engine)
    deployed = deployed_resources(template, params)
    _, domain = one_of_type(template, "AWS::OpenSearchService::Domain")
    statements = as_list(resolve(domain["Properties"]["AccessPolicies"], template, params)["Statement"])
    mapping = [s for s in statements if s.get("Sid") == "MapLoaderRole"]
    if mapped == "false":
        assert "LambdaRoleMapping" not in deployed and mapping == []
        return
    assert "LambdaRoleMapping" in deployed
    (statement,) = mapping
    assert statement["Principal"] == {"AWS": "*"} and "Condition" not in statement
    # GET: the role and mapping are read first and merged into (what an operator added stays).
    assert set(statement["Action"]) == {"es:ESHttpGet", "es:ESHttpPut", "es:ESHttpDelete"}
    domain_arn = (f"arn:${{AWS::Partition}}:es:${{AWS::Region}}:${{AWS::AccountId}}:domain/"
                  f"{params['ElasticsearchDomainName']}")
    properties = _symbolic(resolve(template["Resources"]["LambdaRoleMapping"]["Properties"], template,
                                    params))
    request = rolemapping.mapping_request(properties)
    assert request.api_path == api
    assert set(statement["Resource"]) == {
        f"{domain_arn}{api}/roles/{request.role}",
        f"{domain_arn}{api}/rolesmapping/{request.role}",
    }


# ---------------------------------------------------------------------------
# KMS-encrypted trails and dead letters
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("trail_key", ["", TRAIL_KEY])
@pytest.mark.parametrize("dead_letter_key", ["", DEAD_LETTER_KEY])
def test_kms_keys_only_through_s3(template, trail_key, dead_letter_key):
    params = template_parameters(template, CloudTrailBucket=BUCKET, TrailKmsKeyArn=trail_key,
                     DeadLetterKmsKeyArn=dead_letter_key)
    kms = {}
    for statement in _role_statements(template, params):
        actions = as_list(statement["Action"])
        if any(a.startswith("kms:") for a in actions):
            assert statement["Condition"] == VIA_S3
            kms[statement["Resource"]] = set(actions)
    expected = {}
    if trail_key:
        expected[trail_key] = {"kms:Decrypt"}
    if dead_letter_key:
        expected[dead_letter_key] = {"kms:GenerateDataKey", "kms:Decrypt"}
    assert kms == expected


def test_kms_key_parameters_take_key_arns_only(template):
    import re

    for name in ("TrailKmsKeyArn", "DeadLetterKmsKeyArn"):
        spec = template["Parameters"][name]
        assert spec["Default"] == ""
        pattern = re.compile(spec["AllowedPattern"])
        for ok in ("", TRAIL_KEY, "arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/mrk-1234abcd"):
            assert pattern.fullmatch(ok), ok
        for bad in ("alias/aws/s3", "arn:aws:kms:eu-west-1:111122223333:alias/trail", "*",
                    "arn:aws:kms:eu-west-1:111122223333:key/*"):
            assert not pattern.fullmatch(bad), bad


# ---------------------------------------------------------------------------
# Alarms
# ---------------------------------------------------------------------------
# The loader's Embedded Metric Format metrics (namespace, names): what the alarms may use.
EMF_NAMESPACE = "CloudTrailToElasticsearch"
EMF_METRICS = {"EventsRead", "EventsIndexed", "EventsDegraded", "EventsDeadLettered", "EventsFiltered",
               "FilesLoaded", "FilesFailed", "BulkRequests", "BulkRetries", "Throttled",
               "IngestionLagSeconds", "ObjectLagSeconds"}
FUNCTION_DIMENSION = [{"Name": "FunctionName", "Value": {"Ref": LOADER_FUNCTION}}]
ALARMS = {
    # name: (namespace, metric, dimensions, statistic, threshold, periods)
    "LoaderErrorsAlarm": ("AWS/Lambda", "Errors", FUNCTION_DIMENSION, "Sum", "0", 1),
    "LoaderThrottlesAlarm": ("AWS/Lambda", "Throttles", FUNCTION_DIMENSION, "Sum", "0", 1),
    "EventDeadLetterQueueAlarm": (
        "AWS/SQS", "ApproximateNumberOfMessagesVisible",
        [{"Name": "QueueName", "Value": _get_att("EventDeadLetterQueue", "QueueName")}], "Maximum", "0", 1),
    "AsyncFailureQueueAlarm": (
        "AWS/SQS", "ApproximateNumberOfMessagesVisible",
        [{"Name": "QueueName", "Value": _get_att("AsyncFailureQueue", "QueueName")}], "Maximum", "0", 1),
    "DeadLetteredEventsAlarm": (EMF_NAMESPACE, "EventsDeadLettered", FUNCTION_DIMENSION, "Sum", "0", 1),
    # Minimum: the freshest file of each period, so a backfill's old files do not fire it.
    "IngestionLagAlarm": (EMF_NAMESPACE, "IngestionLagSeconds", FUNCTION_DIMENSION, "Minimum", "<lag>", 3),
}
DOMAIN_DIMENSIONS = [{"Name": "DomainName", "Value": {"Ref": "Domain"}},
                     {"Name": "ClientId", "Value": {"Ref": "AWS::AccountId"}}]
DOMAIN_ALARMS = {
    # name: (metric, statistic, comparison, threshold, period, periods), AWS/ES's recommended ones
    "DomainFreeStorageAlarm": ("FreeStorageSpace", "Minimum", "LessThanThreshold", "2048", 60, 1),
    "DomainRedAlarm": ("ClusterStatus.red", "Maximum", "GreaterThanOrEqualToThreshold", "1", 60, 1),
    "DomainWritesBlockedAlarm": ("ClusterIndexWritesBlocked", "Maximum",
                                 "GreaterThanOrEqualToThreshold", "1", 300, 1),
    "DomainJvmPressureAlarm": ("JVMMemoryPressure", "Maximum", "GreaterThanOrEqualToThreshold", "95", 300, 3),
}


def _alarms(template: dict, params: dict) -> dict[str, dict]:
    return {name: resolve(res["Properties"], template, params)
            for name, res in deployed_of_type(template, params, "AWS::CloudWatch::Alarm").items()}


@pytest.mark.parametrize("mode", TRIGGER_MODES)
@pytest.mark.parametrize("lag", ["3600", "900"])
def test_alarms_on_by_default(template, mode, lag):
    params = template_parameters(template, CloudTrailBucket=BUCKET, TriggerMode=mode, IngestionLagAlarmSeconds=lag)
    alarms = _alarms(template, params)
    expected = set(ALARMS) - ({"EventDeadLetterQueueAlarm"} if mode == "None" else set())
    assert set(alarms) == expected | set(DOMAIN_ALARMS)
    for name, props in alarms.items():
        if name in DOMAIN_ALARMS:
            continue
        namespace, metric, dimensions, statistic, threshold, periods = ALARMS[name]
        assert (props["Namespace"], props["MetricName"]) == (namespace, metric), name
        if namespace == EMF_NAMESPACE:
            assert metric in EMF_METRICS
        assert props["Dimensions"] == dimensions, name
        assert props["Statistic"] == statistic, name
        assert str(props["Threshold"]) == (lag if threshold == "<lag>" else threshold), name
        assert props["ComparisonOperator"] == "GreaterThanThreshold"
        assert int(props["EvaluationPeriods"]) == periods and int(props["Period"]) == 300
        assert props["TreatMissingData"] == "notBreaching"  # no traffic is not a failure
        assert "AlarmActions" not in props and "OKActions" not in props  # no topic given


def test_alarms_notify_the_topic_when_given(template):
    topic = "arn:aws:sns:eu-west-1:111122223333:ops"
    alarms = _alarms(template, template_parameters(template, CloudTrailBucket=BUCKET, AlarmTopicArn=topic))
    assert set(alarms) == set(ALARMS) | set(DOMAIN_ALARMS)
    for props in alarms.values():
        assert props["AlarmActions"] == [topic] and props["OKActions"] == [topic]


@pytest.mark.parametrize("free_mb", ["2048", "10000"])
def test_domain_alarms(template, free_mb):
    params = template_parameters(template, CloudTrailBucket=BUCKET, FreeStorageAlarmMegabytes=free_mb)
    alarms = {name: props for name, props in _alarms(template, params).items()
              if props["Namespace"] == "AWS/ES"}
    assert set(alarms) == set(DOMAIN_ALARMS)
    for name, props in alarms.items():
        metric, statistic, comparison, threshold, period, periods = DOMAIN_ALARMS[name]
        assert (props["MetricName"], props["Statistic"], props["ComparisonOperator"]) == \
            (metric, statistic, comparison), name
        assert str(props["Threshold"]) == (free_mb if metric == "FreeStorageSpace" else threshold)
        assert (int(props["Period"]), int(props["EvaluationPeriods"])) == (period, periods), name
        assert props["Dimensions"] == DOMAIN_DIMENSIONS, name
        # A domain that stops reporting is broken too.
        assert props["TreatMissingData"] == "breaching", name


def test_alarms_can_be_turned_off(template):
    assert _alarms(template, template_parameters(template, CloudTrailBucket=BUCKET, CreateAlarms="false")) == {}
    assert template["Parameters"]["CreateAlarms"]["Default"] == "true"
    assert int(template["Parameters"]["IngestionLagAlarmSeconds"]["Default"]) == 3600


# ---------------------------------------------------------------------------
# Documentation drift
# ---------------------------------------------------------------------------
def test_make_commands_name_their_makefile():
    import re

    for path in (TEMPLATE, ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))):
        text = path.read_text(encoding="utf-8")
        bare = re.findall(r"`make (?!-f )[a-z]", text)
        assert not bare, f"{path.name}: `make TARGET` without -f Makefile.pip / Makefile.poetry"


def test_the_docs_match_the_stack(template):
    deploy = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    pages = "\n".join(path.read_text(encoding="utf-8")
                      for path in (ROOT / "README.md", *(ROOT / "docs").glob("*.md")))
    prefix = template["Parameters"]["DeadLetterPrefix"]["Default"]
    redrive_lines = [line for line in pages.splitlines()
                     if re.search(r"cloudtrail_es[.a-z]*\.redrive s3://", line)]
    assert redrive_lines
    for line in redrive_lines:
        assert f"s3://DEAD_LETTER_BUCKET/{prefix}" in line, line
    assert prefix in deploy
    # Everything kept on delete is named.
    for kept in ("domain", "secret", "log groups", "cloudtrail-es-opensearch-logs"):
        assert kept in deploy, kept
    # The narrower role: what the write gate's checks and retention need, too.
    for permission in ("cluster_monitor", "cluster_composite_ops", "indices_monitor", "create_index",
                       "indices:admin/delete"):
        assert permission in deploy, permission
    assert "ES_AUTH=basic" in deploy and "MapLambdaRole" in deploy
    for name in ("TrailKmsKeyArn", "DeadLetterKmsKeyArn", "AlarmTopicArn", "IngestionLagAlarmSeconds",
                 "CreateAlarms"):
        assert name in deploy, name


# ---------------------------------------------------------------------------
# cfn-lint and checkov
# ---------------------------------------------------------------------------
def _find_tool(name: str) -> str | None:
    """Beside this interpreter, in the tools venv the Makefiles make (checkov), or on PATH."""
    for folder in (Path(sys.executable).parent, ROOT / ".venv-tools" / "bin"):
        if (folder / name).is_file():
            return str(folder / name)
    return shutil.which(name)


def _find_cfn_lint() -> str | None:
    return _find_tool("cfn-lint")


TEMPLATES = (TEMPLATE, ROOT / "cloudformation-trail-bucket.yml")


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_cfn_lint_is_clean(path):
    exe = _find_cfn_lint()
    if exe is None:
        pytest.fail("cfn-lint is not installed: run `make init`", pytrace=False)
    proc = subprocess.run(
        [exe, "--", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, (
        f"cfn-lint exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    )


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_every_checkov_suppression_gives_a_reason(path):
    for name, res in yaml.load(path.read_text(encoding="utf-8"), Loader=CfnLoader)["Resources"].items():
        for skip in res.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert str(skip.get("id", "")).startswith("CKV"), name
            assert len(str(skip.get("comment", "")).split()) >= 8, (
                f"{name}: suppression of {skip.get('id')} without a written reason"
            )


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_checkov_is_clean(path):
    exe = _find_tool("checkov")
    if exe is None:
        pytest.fail("checkov is not installed: run `make init`", pytrace=False)
    env = dict(os.environ, BC_SKIP_MAPPING="TRUE")  # no guideline download
    proc = subprocess.run(
        [exe, "--file", str(path), "--framework", "cloudformation",
         "--compact", "--quiet", "--skip-download"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
    )
    assert proc.returncode == 0, (
        f"checkov exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    )


# ---------------------------------------------------------------------------
# Detections: the packaged Sigma rules on a schedule
# ---------------------------------------------------------------------------
TOPIC = "arn:aws:sns:us-east-1:123456789012:findings"


def _schedules(template: dict, params: dict, input_kind: str) -> dict[str, dict]:
    return {
        name: resolve(res["Properties"], template, params)
        for name, res in deployed_of_type(template, params, "AWS::Events::Rule").items()
        if json.loads(res["Properties"]["Targets"][0].get("Input", "{}")).get("cloudtrail_es")
        == input_kind
    }


@pytest.mark.parametrize("schedule", ["", "rate(15 minutes)", "cron(0/10 * * * ? *)"])
def test_detection_schedule_only_when_given(template, schedule):
    params = template_parameters(template, CloudTrailBucket=BUCKET, DetectionSchedule=schedule)
    assert re.fullmatch(template["Parameters"]["DetectionSchedule"]["AllowedPattern"], schedule)
    function_name, _ = _named(template, LOADER_FUNCTION)
    rules = _schedules(template, params, "detect")
    permissions = [resolve(res["Properties"], template, params) for res in
                   deployed_of_type(template, params, "AWS::Lambda::Permission").values()]
    assert condition_holds(template, "HasDetectionSchedule", params) == bool(schedule)
    if not schedule:
        assert rules == {} and permissions == []
        return
    (rule_name, rule), = rules.items()
    assert rule["ScheduleExpression"] == schedule
    assert [t["Arn"] for t in rule["Targets"]] == [_get_att(function_name)]
    (permission,) = permissions
    assert permission["Principal"] == "events.amazonaws.com"
    assert permission["Action"] == "lambda:InvokeFunction"
    assert permission["SourceArn"] == _get_att(rule_name)


@pytest.mark.parametrize(("schedule", "topic", "publishes"), [
    ("", "", False), ("", TOPIC, False), ("rate(15 minutes)", "", False),
    ("rate(15 minutes)", TOPIC, True)])
def test_findings_topic_grant_only_when_publishing(template, schedule, topic, publishes):
    base = template_parameters(template, CloudTrailBucket=BUCKET)
    params = template_parameters(template, CloudTrailBucket=BUCKET, DetectionSchedule=schedule,
                     FindingsTopicArn=topic)
    extra = _role_grants(template, params) - _role_grants(template, base)
    assert extra == ({("sns:Publish", TOPIC)} if publishes else set())
    _, function = _named(template, LOADER_FUNCTION)
    env = resolve(function["Properties"]["Environment"]["Variables"], template, params)
    assert env.get("FINDINGS_TOPIC_ARN") == (TOPIC if publishes else None)


def test_detection_parameters_refuse_junk(template):
    schedule = template["Parameters"]["DetectionSchedule"]
    topic = template["Parameters"]["FindingsTopicArn"]
    assert schedule["Default"] == "" and topic["Default"] == ""
    for bad in ("15 minutes", "rate(15 minutes", "every day"):
        assert not re.fullmatch(schedule["AllowedPattern"], bad)
    for bad in ("arn:aws:sqs:us-east-1:123456789012:q", "*"):
        assert not re.fullmatch(topic["AllowedPattern"], bad)
    assert re.fullmatch(topic["AllowedPattern"], TOPIC)
