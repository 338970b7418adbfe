"""An independent reading of Sigma rules: a rule (its YAML, parsed) evaluated over a raw
CloudTrail event in plain Python, from the Sigma specification, without pySigma or our
converter. Tests compare what the cluster finds with the converted query to what this finds.

Semantics: field names are paths into the event (lists are looked through, a whole object is
its compact JSON text); strings match case-insensitively, with ``*`` / ``?`` wildcards and
``\\`` escaping them; ``|re`` is Python's ``re.search`` with ASCII classes (as PCRE reads
them) and ASCII case folding for ``|i``; ``|cidr`` tests the value as an address; ``|exists``,
``|fieldref`` (equal values, exactly), ``|all``, ``|cased``, ``null``. Conditions: ``and``,
``or``, ``not``, parentheses, ``1 of`` / ``all of`` a name pattern or ``them``.
"""
from __future__ import annotations

import fnmatch
import functools
import ipaddress
import json
import re
from typing import Any, Iterator, Mapping


class Unsupported(ValueError):
    """A construct this reading does not cover (the test then expects the converter to refuse)."""


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return json.dumps(value)


def values_at(event: Mapping[str, Any], path: str) -> list[str]:
    """Every value at ``path`` (dotted), lists looked through; objects as their JSON text."""
    found: list[Any] = [event]
    for part in path.split("."):
        step: list[Any] = []
        for value in found:
            for item in (value if isinstance(value, list) else [value]):
                if isinstance(item, dict) and part in item:
                    step.append(item[part])
        found = step
    out: list[str] = []
    for value in found:
        if isinstance(value, list) and not any(isinstance(v, (dict, list)) for v in value):
            out.extend(_text(v) for v in value if v is not None)
        elif value is not None:
            out.append(_text(value))
    return out


def _wildcard_regex(value: str) -> str:
    """A Sigma string (``*``, ``?``, ``\\`` escapes) as a Python regular expression."""
    out, i = [], 0
    while i < len(value):
        char = value[i]
        if char == "\\" and i + 1 < len(value) and value[i + 1] in "*?\\":
            out.append(re.escape(value[i + 1]))
            i += 2
            continue
        out.append(".*" if char == "*" else "." if char == "?" else re.escape(char))
        i += 1
    return "".join(out)


@functools.lru_cache(maxsize=4096)
def _string_matcher(value: str, modifiers: frozenset[str]) -> re.Pattern[str]:
    pattern = _wildcard_regex(value)
    if "contains" in modifiers:
        pattern = f".*{pattern}.*"
    elif "startswith" in modifiers:
        pattern = f"{pattern}.*"
    elif "endswith" in modifiers:
        pattern = f".*{pattern}"
    flags = re.DOTALL | (0 if "cased" in modifiers else re.IGNORECASE)
    return re.compile(pattern, flags)


def _one(value: Any, modifiers: set[str], event: Mapping[str, Any], field: str) -> bool:
    found = values_at(event, field)
    if "re" in modifiers:
        flags = re.ASCII | (re.IGNORECASE if "i" in modifiers else 0) | (
            re.MULTILINE if "m" in modifiers else 0) | (re.DOTALL if "s" in modifiers else 0)
        regex = _compiled(str(value), flags)
        return any(regex.search(v) for v in found)
    if "cidr" in modifiers:
        network = ipaddress.ip_network(value, strict=False)
        return any(_in(v, network) for v in found)
    if "fieldref" in modifiers:
        return bool(set(found) & set(values_at(event, value)))
    if isinstance(value, bool):
        return any(v.lower() == _text(value) for v in found)
    if isinstance(value, (int, float)):
        return any(v == _text(value) for v in found)
    matcher = _string_matcher(str(value), frozenset(modifiers))
    return any(matcher.fullmatch(v) for v in found)


@functools.lru_cache(maxsize=4096)
def _compiled(pattern: str, flags: int) -> re.Pattern[str]:
    return re.compile(pattern, flags)


def _in(text: str, network: Any) -> bool:
    try:
        return ipaddress.ip_address(text) in network
    except ValueError:
        return False


KNOWN = {"contains", "startswith", "endswith", "all", "re", "i", "m", "s", "cased", "cidr",
         "exists", "fieldref"}


def _item(key: str, value: Any, event: Mapping[str, Any]) -> bool:
    field, *mods = key.split("|")
    modifiers = set(mods)
    if modifiers - KNOWN:
        raise Unsupported(f"modifiers {sorted(modifiers - KNOWN)}")
    if "exists" in modifiers:
        return bool(values_at(event, field)) == bool(value)
    if value is None:
        return not values_at(event, field)
    values = value if isinstance(value, list) else [value]
    if any(v is None for v in values):
        raise Unsupported("null in a list")
    results = (_one(v, modifiers, event, field) for v in values)
    return all(results) if "all" in modifiers else any(results)


def _selection(selection: Any, event: Mapping[str, Any]) -> bool:
    if isinstance(selection, dict):
        return all(_item(key, value, event) for key, value in selection.items())
    if isinstance(selection, list) and all(isinstance(s, dict) for s in selection):
        return any(_selection(s, event) for s in selection)
    raise Unsupported("keyword (field-less) selections")


def _tokens(condition: str) -> Iterator[str]:
    for token in re.findall(r"\(|\)|[^\s()]+", condition):
        yield token


class _Condition:
    def __init__(self, condition: str, detection: Mapping[str, Any]) -> None:
        self.tokens = list(_tokens(condition))
        self.position = 0
        self.names = [name for name in detection if name != "condition"]

    def peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self) -> str:
        token = self.tokens[self.position]
        self.position += 1
        return token

    def parse(self) -> Any:
        tree = self.or_()
        if self.peek() is not None:
            raise Unsupported(f"condition syntax near {self.peek()!r}")
        return tree

    def or_(self) -> Any:
        parts = [self.and_()]
        while self.peek() == "or":
            self.take()
            parts.append(self.and_())
        return ("or", parts) if len(parts) > 1 else parts[0]

    def and_(self) -> Any:
        parts = [self.not_()]
        while self.peek() == "and":
            self.take()
            parts.append(self.not_())
        return ("and", parts) if len(parts) > 1 else parts[0]

    def not_(self) -> Any:
        if self.peek() == "not":
            self.take()
            return ("not", self.not_())
        return self.atom()

    def atom(self) -> Any:
        token = self.take()
        if token == "(":
            tree = self.or_()
            if self.take() != ")":
                raise Unsupported("unbalanced parentheses")
            return tree
        if token in ("1", "all", "any") and self.peek() == "of":
            self.take()
            pattern = self.take()
            names = self.names if pattern == "them" else fnmatch.filter(self.names, pattern)
            return ("or" if token in ("1", "any") else "and", [("name", n) for n in names])
        if token not in self.names:
            raise Unsupported(f"unknown selection {token!r}")
        return ("name", token)


def _evaluate(tree: Any, detection: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    kind, value = tree
    if kind == "name":
        return _selection(detection[value], event)
    if kind == "not":
        return not _evaluate(value, detection, event)
    results = (_evaluate(part, detection, event) for part in value)
    return any(results) if kind == "or" else all(results)


def matches(rule: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """Whether ``event`` matches ``rule`` (one parsed Sigma YAML document)."""
    detection = rule["detection"]
    conditions = detection["condition"]
    for condition in conditions if isinstance(conditions, list) else [conditions]:
        if _evaluate(_Condition(condition, detection).parse(), detection, event):
            return True
    return False


def check(rule: Mapping[str, Any]) -> None:
    """Raise ``Unsupported`` when this reading cannot evaluate ``rule``."""
    detection = rule["detection"]
    conditions = detection["condition"]
    for condition in conditions if isinstance(conditions, list) else [conditions]:
        _Condition(condition, detection).parse()
    for name, selection in detection.items():
        if name == "condition":
            continue
        for part in selection if isinstance(selection, list) else [selection]:
            if not isinstance(part, dict):
                raise Unsupported("keyword (field-less) selections")
            for key, value in part.items():
                _item(key, value, {})
