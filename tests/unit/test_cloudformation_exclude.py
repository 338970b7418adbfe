"""The stack's ExcludeEvents parameter reaches the function as EXCLUDE_EVENTS, checked like the code."""
from __future__ import annotations

import re

import pytest
import yaml
from cfn_template import CfnLoader, resolve, template_parameters
from test_cloudformation import TEMPLATE

from cloudtrail_es.core.errors import ConfigurationError
from cloudtrail_es.core.filters import parse_rules

ISSUE_EXAMPLE = "readOnly=true,eventSource=ec2.amazonaws.com;eventName=Decrypt,userIdentity.type=AWSService"


@pytest.fixture(scope="module")
def template() -> dict:
    with TEMPLATE.open(encoding="utf-8") as fh:
        return yaml.load(fh, Loader=CfnLoader)  # noqa: S506 - SafeLoader subclass


def test_exclude_events_parameter_defaults_to_nothing_excluded(template):
    spec = template["Parameters"]["ExcludeEvents"]
    assert spec["Type"] == "String" and spec["Default"] == ""
    assert "ExcludeEvents" in [name for group in template["Metadata"]["AWS::CloudFormation::Interface"]
                               ["ParameterGroups"] for name in group["Parameters"]]


@pytest.mark.parametrize("rules", ["", ISSUE_EXAMPLE, "eventName=Get*;eventName=List*;",
                                   "userIdentity.invokedBy=*.amazonaws.com,readOnly=true"])
def test_the_function_gets_the_rules(template, rules):
    params = template_parameters(template, CloudTrailBucket="my-trail-bucket", ExcludeEvents=rules)
    function = template["Resources"]["LambdaFunction"]  # the loader (SetupFunction: custom resources)
    env = resolve(function["Properties"]["Environment"]["Variables"], template, params)
    assert env["EXCLUDE_EVENTS"] == rules


@pytest.mark.parametrize(("rules", "valid"), [
    ("", True), (ISSUE_EXAMPLE, True), ("eventName=Get*;", True), ("sourceIPAddress=a=b", True),
    ("eventName", False), ("=Decrypt", False), ("eventName=", False), ("a=b,", False),
    ("a=b,,c=d", False), ("a=b;c", False),
])
def test_the_allowed_pattern_agrees_with_the_parser(template, rules, valid):
    pattern = re.compile(template["Parameters"]["ExcludeEvents"]["AllowedPattern"])
    assert bool(pattern.fullmatch(rules)) is valid
    if valid:
        parse_rules(rules)
    else:
        with pytest.raises(ConfigurationError):
            parse_rules(rules)
