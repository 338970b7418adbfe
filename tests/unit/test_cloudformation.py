"""Static checks of cloudformation.yml (no AWS, no network).

The template is read with a YAML loader that turns CloudFormation short-form
tags (`!Ref`, `!Sub`, ...) into their long form (`{"Ref": ...}`,
`{"Fn::Sub": ...}`), and a tiny evaluator resolves `Ref` to parameters,
`Fn::If` / `Fn::Not` / `Fn::Equals` / `Fn::Join` and `AWS::NoValue`, so the
security checks can look at what CloudFormation would actually deploy for a
given set of parameter values.
"""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

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
}
LOG_ACTIONS = {"logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"}
ES_ACTIONS = {"es:ESHttpGet", "es:ESHttpHead", "es:ESHttpPost", "es:ESHttpPut"}
ALLOWED_ROLE_ACTIONS = LOG_ACTIONS | {"s3:GetObject"} | ES_ACTIONS
TLS_1_2_POLICIES = {"Policy-Min-TLS-1-2-2019-07", "Policy-Min-TLS-1-2-PFS-2023-10"}

BUCKET = "my-trail-bucket"


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------
class CfnLoader(yaml.SafeLoader):
    """SafeLoader that accepts any `!Tag` and returns its long form."""


def _construct_tag(loader: yaml.Loader, tag_suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "Condition":
        return {"Condition": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{tag_suffix}": value}


CfnLoader.add_multi_constructor("!", _construct_tag)


@pytest.fixture(scope="module")
def template() -> dict:
    assert TEMPLATE.is_file(), f"{TEMPLATE} is missing"
    with TEMPLATE.open(encoding="utf-8") as fh:
        doc = yaml.load(fh, Loader=CfnLoader)  # noqa: S506 - SafeLoader subclass
    assert isinstance(doc, dict) and "Resources" in doc
    return doc


def _resources_of_type(template: dict, rtype: str) -> dict[str, dict]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == rtype}


def _one(template: dict, rtype: str) -> tuple[str, dict]:
    found = _resources_of_type(template, rtype)
    assert len(found) == 1, f"expected exactly one {rtype}, found {sorted(found)}"
    return next(iter(found.items()))


# ---------------------------------------------------------------------------
# A minimal evaluator of the intrinsic functions used for conditions
# ---------------------------------------------------------------------------
NO_VALUE = object()


def _params(template: dict, **overrides: Any) -> dict[str, Any]:
    """Parameter values as CloudFormation sees them (lists split on commas)."""
    values: dict[str, Any] = {}
    for name, spec in template["Parameters"].items():
        raw = overrides.get(name, spec.get("Default", f"<{name}>"))
        if spec["Type"] == "CommaDelimitedList" and isinstance(raw, str):
            raw = raw.split(",")
        values[name] = raw if isinstance(raw, list) else str(raw)
    return values


def _condition(template: dict, name: str, params: dict) -> bool:
    result = _resolve(template["Conditions"][name], template, params)
    assert isinstance(result, bool), f"condition {name} did not evaluate to a bool"
    return result


def _resolve(node: Any, template: dict, params: dict) -> Any:
    if isinstance(node, list):
        out = [_resolve(item, template, params) for item in node]
        return [item for item in out if item is not NO_VALUE]
    if not isinstance(node, dict):
        return node
    if len(node) == 1:
        (key, arg), = node.items()
        if key == "Ref":
            if arg == "AWS::NoValue":
                return NO_VALUE
            return params.get(arg, node)
        if key == "Condition":
            return _condition(template, arg, params)
        if key == "Fn::If":
            name, when_true, when_false = arg
            chosen = when_true if _condition(template, name, params) else when_false
            return _resolve(chosen, template, params)
        if key == "Fn::Not":
            return not _resolve(arg[0], template, params)
        if key == "Fn::And":
            return all(_resolve(a, template, params) for a in arg)
        if key == "Fn::Or":
            return any(_resolve(a, template, params) for a in arg)
        if key == "Fn::Equals":
            left, right = (_resolve(a, template, params) for a in arg)
            return left == right
        if key == "Fn::Join":
            sep, items = arg
            items = _resolve(items, template, params)
            assert isinstance(items, list) and all(isinstance(i, str) for i in items)
            return sep.join(items)
        if key == "Fn::Sub" and isinstance(arg, str):
            # Substitute plain parameters only; ${AWS::...} and ${X.Attr} stay.
            for pname, pvalue in params.items():
                if isinstance(pvalue, str):
                    arg = arg.replace("${" + pname + "}", pvalue)
            return arg
    out = {k: _resolve(v, template, params) for k, v in node.items()}
    return {k: v for k, v in out.items() if v is not NO_VALUE}


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


# Parameter sets the security checks are evaluated under.
SCENARIOS = {
    "defaults-no-prefix": {"CloudTrailBucket": BUCKET, "CloudTrailPrefix": ""},
    "prefix-and-ips": {
        "CloudTrailBucket": BUCKET,
        "CloudTrailPrefix": "org/trail",
        "AllowedIPs": "203.0.113.7/32,198.51.100.0/24",
    },
}


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


# ---------------------------------------------------------------------------
# Lambda function
# ---------------------------------------------------------------------------
def test_lambda_function_settings(template):
    _, function = _one(template, "AWS::Lambda::Function")
    props = function["Properties"]
    # `make deploy` updates the code of the function called $LambdaName.
    assert props["FunctionName"] == {"Ref": "LambdaName"}
    assert props["Runtime"] == "python3.12"
    assert props["Handler"] == "lambda_function.lambda_handler"
    assert props["MemorySize"] == 512
    assert props["Timeout"] == 300
    assert "ZipFile" in props["Code"], "expected an inline placeholder (real code via make deploy)"
    role_name, _ = _one(template, "AWS::IAM::Role")
    assert props["Role"] == {"Fn::GetAtt": [role_name, "Arn"]}


def test_handler_exists_in_source(template):
    _, function = _one(template, "AWS::Lambda::Function")
    module, _, func_name = function["Properties"]["Handler"].rpartition(".")
    path = SRC / (module.replace(".", "/") + ".py")
    assert path.is_file(), f"handler module {path.relative_to(ROOT)} does not exist"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    defs = [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name == func_name
    ]
    assert defs, f"no top-level function {func_name}() in {path.relative_to(ROOT)}"
    args = defs[-1].args
    positional = len(args.posonlyargs) + len(args.args)
    assert positional >= 2 or args.vararg, f"{func_name} must accept (event, context)"


def test_lambda_environment(template):
    _, function = _one(template, "AWS::Lambda::Function")
    env = function["Properties"]["Environment"]["Variables"]
    domain_name, _ = _one(template, "AWS::OpenSearchService::Domain")
    assert env["ES_HOSTNAME"] == {"Fn::GetAtt": [domain_name, "DomainEndpoint"]}
    assert env["ES_AUTH"] == "sigv4"
    assert env["INDEX_PREFIX"] == {"Ref": "IndexPrefix"}
    assert env["INDEX_SHARDS"] == {"Ref": "IndexShards"}
    assert env["INDEX_REPLICAS"] == {"Ref": "IndexReplicas"}


# ---------------------------------------------------------------------------
# Execution role
# ---------------------------------------------------------------------------
def _role_statements(template: dict, params: dict) -> list[dict]:
    """Every statement granted to the Lambda role, resolved for `params`."""
    role_name, role = _one(template, "AWS::IAM::Role")
    assert not role["Properties"].get("ManagedPolicyArns"), "no managed policies expected"
    documents = [p["PolicyDocument"] for p in role["Properties"].get("Policies", [])]
    for rtype, key in (
        ("AWS::IAM::RolePolicy", "RoleName"),
        ("AWS::IAM::Policy", "Roles"),
        ("AWS::IAM::ManagedPolicy", "Roles"),
    ):
        for res in _resources_of_type(template, rtype).values():
            targets = _as_list(res["Properties"].get(key, []))
            if {"Ref": role_name} in targets:
                documents.append(res["Properties"]["PolicyDocument"])
    statements = []
    for doc in documents:
        statements.extend(_as_list(_resolve(doc, template, params)["Statement"]))
    return statements


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_role_actions_are_exactly_the_allowed_set(template, scenario):
    params = _params(template, **SCENARIOS[scenario])
    statements = _role_statements(template, params)
    actions = set()
    for st in statements:
        assert st["Effect"] == "Allow"
        assert "NotAction" not in st and "NotResource" not in st
        for action in _as_list(st["Action"]):
            assert "*" not in action, f"wildcard action {action!r}"
            actions.add(action)
        for resource in _as_list(st["Resource"]):
            assert resource != "*", f"statement {st.get('Sid')} applies to every resource"
    assert actions == ALLOWED_ROLE_ACTIONS


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("", f"arn:${{AWS::Partition}}:s3:::{BUCKET}/*"),
        ("org/trail", f"arn:${{AWS::Partition}}:s3:::{BUCKET}/org/trail/*"),
    ],
)
def test_s3_access_only_on_the_trail_bucket_and_prefix(template, prefix, expected):
    params = _params(template, CloudTrailBucket=BUCKET, CloudTrailPrefix=prefix)
    s3_resources = set()
    for st in _role_statements(template, params):
        actions = _as_list(st["Action"])
        if any(a.startswith("s3:") for a in actions):
            assert actions == ["s3:GetObject"] or set(actions) == {"s3:GetObject"}
            s3_resources.update(_as_list(st["Resource"]))
        else:
            for resource in _as_list(st["Resource"]):
                assert ":s3:::" not in str(resource)
    assert s3_resources == {expected}


def test_es_and_logs_access_scoped(template):
    params = _params(template, **SCENARIOS["defaults-no-prefix"])
    domain_name, _ = _one(template, "AWS::OpenSearchService::Domain")
    domain_arn = {"Fn::GetAtt": [domain_name, "Arn"]}
    # (the evaluator has already turned `!Sub "${Domain.Arn}/*"` into a string)
    domain_children = "${" + domain_name + ".Arn}/*"
    es_grants = 0
    for st in _role_statements(template, params):
        actions = set(_as_list(st["Action"]))
        resources = _as_list(st["Resource"])
        if actions & ES_ACTIONS:
            es_grants += 1
            assert actions == ES_ACTIONS
            assert len(resources) == 2
            assert domain_arn in resources and domain_children in resources
        if actions & LOG_ACTIONS:
            assert actions == LOG_ACTIONS
            for resource in resources:
                lambda_name = params["LambdaName"]
                assert f":log-group:/aws/lambda/{lambda_name}" in resource, resource
    assert es_grants == 1


# ---------------------------------------------------------------------------
# OpenSearch domain
# ---------------------------------------------------------------------------
def test_domain_transport_and_encryption(template):
    _, domain = _one(template, "AWS::OpenSearchService::Domain")
    props = domain["Properties"]
    assert props["DomainName"] == {"Ref": "ElasticsearchDomainName"}
    assert str(props["EngineVersion"]).startswith("OpenSearch_")
    assert props["DomainEndpointOptions"]["EnforceHTTPS"] is True
    assert props["DomainEndpointOptions"]["TLSSecurityPolicy"] in TLS_1_2_POLICIES
    assert props["NodeToNodeEncryptionOptions"]["Enabled"] is True
    assert props["EncryptionAtRestOptions"]["Enabled"] is True
    ebs = props["EBSOptions"]
    assert ebs["EBSEnabled"] is True
    assert ebs["VolumeType"] == "gp3"
    assert ebs["VolumeSize"] == {"Ref": "ElasticsearchStorageSize"}
    assert props["ClusterConfig"]["InstanceType"] == {"Ref": "ElasticsearchInstanceType"}


def _is_public(statement: dict) -> bool:
    principal = statement.get("Principal")
    if principal == "*":
        return True
    if isinstance(principal, dict):
        return any("*" in _as_list(v) for v in principal.values())
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
    _, domain = _one(template, "AWS::OpenSearchService::Domain")
    policy = domain["Properties"]["AccessPolicies"]
    assert "NotPrincipal" not in str(policy)
    public_statements = 0
    for entry in _as_list(policy["Statement"]):
        if "Fn::If" not in entry:
            assert not _is_public(entry), f"unguarded public statement {entry.get('Sid')}"
            continue
        cond_name, when_true, when_false = entry["Fn::If"]
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


@pytest.mark.parametrize(
    ("allowed_ips", "expected_ips"),
    [
        ("", None),
        ("203.0.113.7/32", ["203.0.113.7/32"]),
        ("203.0.113.7/32,198.51.100.0/24", ["203.0.113.7/32", "198.51.100.0/24"]),
    ],
)
def test_access_policy_as_deployed(template, allowed_ips, expected_ips):
    params = _params(template, CloudTrailBucket=BUCKET, AllowedIPs=allowed_ips)
    domain_name, domain = _one(template, "AWS::OpenSearchService::Domain")
    role_name, _ = _one(template, "AWS::IAM::Role")
    statements = _as_list(
        _resolve(domain["Properties"]["AccessPolicies"], template, params)["Statement"]
    )
    private = [s for s in statements if not _is_public(s)]
    public = [s for s in statements if _is_public(s)]
    assert len(private) == 1
    assert private[0]["Principal"] == {"AWS": {"Fn::GetAtt": [role_name, "Arn"]}}
    assert set(_as_list(private[0]["Action"])) == ES_ACTIONS
    if expected_ips is None:
        assert public == [], "an empty AllowedIPs must grant nothing"
    else:
        assert len(public) == 1
        assert public[0]["Condition"]["IpAddress"]["aws:SourceIp"] == expected_ips
    for st in statements:
        assert st["Effect"] == "Allow"
        for resource in _as_list(st["Resource"]):
            assert f":domain/{params['ElasticsearchDomainName']}" in resource


def test_outputs(template):
    outputs = template["Outputs"]
    values = [o["Value"] for o in outputs.values()]
    domain_name, _ = _one(template, "AWS::OpenSearchService::Domain")
    assert {"Fn::GetAtt": [domain_name, "DomainEndpoint"]} in values
    assert {"Fn::Sub": "https://${" + domain_name + ".DomainEndpoint}/_dashboards/"} in values
    function_name, _ = _one(template, "AWS::Lambda::Function")
    assert {"Fn::GetAtt": [function_name, "Arn"]} in values


# ---------------------------------------------------------------------------
# cfn-lint
# ---------------------------------------------------------------------------
def _find_cfn_lint() -> str | None:
    beside_python = Path(sys.executable).parent / "cfn-lint"
    if beside_python.is_file():
        return str(beside_python)
    return shutil.which("cfn-lint")


def test_cfn_lint_is_clean():
    exe = _find_cfn_lint()
    if exe is None:
        pytest.fail("cfn-lint is not installed: run `make init`", pytrace=False)
    proc = subprocess.run(
        [exe, "--", str(TEMPLATE)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, (
        f"cfn-lint exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    )
