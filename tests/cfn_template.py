"""cloudformation.yml read as CloudFormation reads it, for the tests that check the template.

The YAML loader turns CloudFormation's short-form tags (``!Ref``, ``!Sub``...) into their long
form (``{"Ref": ...}``, ``{"Fn::Sub": ...}``), and a small evaluator resolves ``Ref`` to
parameters, ``Fn::If`` / ``Not`` / ``And`` / ``Or`` / ``Equals`` / ``Join`` / ``Split`` /
``Select`` / ``FindInMap`` / ``Sub`` (parameters and its own variables) and ``AWS::NoValue``, so a
test sees what CloudFormation would deploy for a set of parameter values. Resource attributes
(``!GetAtt X.Arn``, ``${X.Arn}``) and pseudo parameters (``${AWS::AccountId}``) stay symbolic.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def load_template(path: Path) -> dict:
    """The template as a dict, short-form tags in their long form."""
    with path.open(encoding="utf-8") as fh:
        return yaml.load(fh, Loader=CfnLoader)  # noqa: S506 - a SafeLoader subclass


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
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:
        raise yaml.constructor.ConstructorError(None, None, f"unexpected node {node!r}", node.start_mark)
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "Condition":
        return {"Condition": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{tag_suffix}": value}


CfnLoader.add_multi_constructor("!", _construct_tag)


def resources_of_type(template: dict, rtype: str) -> dict[str, dict]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == rtype}


def one_of_type(template: dict, rtype: str) -> tuple[str, dict]:
    found = resources_of_type(template, rtype)
    assert len(found) == 1, f"expected exactly one {rtype}, found {sorted(found)}"
    return next(iter(found.items()))


# ---------------------------------------------------------------------------
# A minimal evaluator of the intrinsic functions used for conditions
# ---------------------------------------------------------------------------
NO_VALUE = object()


def template_parameters(template: dict, **overrides: Any) -> dict[str, Any]:
    """Parameter values as CloudFormation sees them (lists split on commas)."""
    values: dict[str, Any] = {}
    for name, spec in template["Parameters"].items():
        raw = overrides.get(name, spec.get("Default", f"<{name}>"))
        if spec["Type"] == "CommaDelimitedList" and isinstance(raw, str):
            raw = raw.split(",")
        values[name] = raw if isinstance(raw, list) else str(raw)
    return values


def condition_holds(template: dict, name: str, params: dict) -> bool:
    result = resolve(template["Conditions"][name], template, params)
    assert isinstance(result, bool), f"condition {name} did not evaluate to a bool"
    return result


def substitute(text: str, variables: dict[str, Any]) -> str:
    for name, value in variables.items():
        if isinstance(value, str):
            text = text.replace("${" + name + "}", value)
    return text


def resolve(node: Any, template: dict, params: dict) -> Any:
    if isinstance(node, list):
        out = [resolve(item, template, params) for item in node]
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
            return condition_holds(template, arg, params)
        if key == "Fn::If":
            name, when_true, when_false = arg
            chosen = when_true if condition_holds(template, name, params) else when_false
            return resolve(chosen, template, params)
        if key == "Fn::Not":
            return not resolve(arg[0], template, params)
        if key == "Fn::And":
            return all(resolve(a, template, params) for a in arg)
        if key == "Fn::Or":
            return any(resolve(a, template, params) for a in arg)
        if key == "Fn::Equals":
            left, right = (resolve(a, template, params) for a in arg)
            return str(left) == str(right)
        if key == "Fn::Join":
            sep, items = arg
            items = resolve(items, template, params)
            assert isinstance(items, list) and all(isinstance(i, str) for i in items)
            return sep.join(items)
        if key == "Fn::Split":
            sep, text = arg
            return resolve(text, template, params).split(sep)
        if key == "Fn::Select":
            index, items = arg
            return resolve(items, template, params)[int(index)]
        if key == "Fn::FindInMap":
            map_name, top, second = (resolve(a, template, params) for a in arg)
            return template["Mappings"][map_name][str(top)][second]
        if key == "Fn::Sub":
            # Substitute the Sub's own variables and plain parameters only;
            # ${AWS::...} and ${X.Attr} stay.
            if isinstance(arg, str):
                return substitute(arg, params)
            text, variables = arg
            variables = resolve(variables, template, params)
            return substitute(substitute(text, variables), params)
    resolved = {k: resolve(v, template, params) for k, v in node.items()}
    return {k: v for k, v in resolved.items() if v is not NO_VALUE}


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def deployed_resources(template: dict, params: dict) -> dict[str, dict]:
    """The resources that exist for `params` (their Condition holds)."""
    return {
        name: res
        for name, res in template["Resources"].items()
        if "Condition" not in res or condition_holds(template, res["Condition"], params)
    }


def deployed_of_type(template: dict, params: dict, rtype: str) -> dict[str, dict]:
    return {k: v for k, v in deployed_resources(template, params).items() if v["Type"] == rtype}


def readable(value: Any) -> str:
    """A hashable, readable form of a resolved resource / principal."""
    return value if isinstance(value, str) else repr(value)
