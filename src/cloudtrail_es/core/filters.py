"""Cost filters: events the user does not want indexed, dropped before they cost anything.

A rule is one or more conditions ``FIELD=PATTERN`` joined by ``,``; an event is excluded
when every condition of some rule matches. Rules are separated by ``;`` or line breaks
(``EXCLUDE_EVENTS``: one rule per line is the same as ``;`` between them) or given one per
``--exclude`` option::

    readOnly=true,eventSource=ec2.amazonaws.com;eventName=Decrypt,userIdentity.type=AWSService

* FIELD is a top-level field of the CloudTrail record or a dotted path into its objects
  (``userIdentity.type``, ``userIdentity.sessionContext.sessionIssuer.userName``).
* PATTERN is shell-style (``fnmatch``: ``*``, ``?``, ``[seq]``, ``[!seq]``), matched against
  the whole value and **case-sensitively**: CloudTrail's values are case-sensitive
  identifiers, and the index keeps them as such (``eventName=describe*`` matches nothing).
* A value is matched by its JSON spelling, the one the index shows: the boolean ``true``
  as ``true``, the number ``42`` as ``42``. A missing field, ``null``, an object or an
  array never matches (so ``errorCode=*`` means "the call failed").
* ``,``, ``;`` and line breaks cannot appear in a pattern (they separate conditions and rules): match
  them with ``?``. An empty pattern is refused (an unset shell variable, most likely).

Matching costs a few dictionary look-ups per rule and condition: literal patterns are
compared as strings, the others with a regular expression compiled once.
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from cloudtrail_es.core.errors import BadFilterRule
from cloudtrail_es.core.deepjson import scalar_text

RULE_SEPARATOR = ";"
CONDITION_SEPARATOR = ","
_WILDCARDS = frozenset("*?[")


@dataclass(frozen=True)
class Condition:
    """``FIELD=PATTERN``: the value at ``path`` (a tuple of keys) fits ``pattern``.

    ``matches`` is a closure built once for this path and pattern (the per-event cost).
    """

    path: tuple[str, ...]
    pattern: str
    matches: Callable[[dict[str, Any]], bool] = field(compare=False, repr=False)

    @classmethod
    def of(cls, path: tuple[str, ...], pattern: str) -> "Condition":
        return cls(path, pattern, _matcher(path, _fits(pattern)))


def _fits(pattern: str) -> Callable[[str], bool]:
    if _WILDCARDS.isdisjoint(pattern):
        return pattern.__eq__
    match = re.compile(fnmatch.translate(pattern), re.DOTALL).match
    return lambda text: match(text) is not None


def _matcher(path: tuple[str, ...], fits: Callable[[str], bool]) -> Callable[[dict[str, Any]], bool]:
    def fits_value(value: Any) -> bool:
        kind = type(value)
        if kind is str:
            return fits(value)
        if kind is bool or kind is int or kind is float:
            return fits(scalar_text(value))
        return False  # missing, null, object, array

    if len(path) == 1:
        [key] = path

        def top_level(event: dict[str, Any]) -> bool:
            value = event.get(key)
            return fits(value) if type(value) is str else fits_value(value)
        return top_level

    def nested(event: dict[str, Any]) -> bool:
        value: Any = event
        for key in path:
            if type(value) is not dict:
                return False
            value = value.get(key)
        return fits_value(value)
    return nested


@dataclass(frozen=True)
class Rule:
    """Conditions that must all match; ``text`` is the rule as the user wrote it."""

    text: str
    conditions: tuple[Condition, ...]

    def matches(self, event: dict[str, Any]) -> bool:
        for condition in self.conditions:
            if not condition.matches(event):
                return False
        return True


@dataclass(frozen=True)
class EventFilter:
    """The exclusion rules in force; ``excluding(event)`` names the first rule that drops it."""

    rules: tuple[Rule, ...] = ()
    #: Each rule with its conditions' closures, so that a check is two plain loops.
    _tests: tuple[tuple[Rule, tuple[Callable[[dict[str, Any]], bool], ...]], ...] = field(
        init=False, compare=False, repr=False, default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "_tests", tuple(
            (rule, tuple(condition.matches for condition in rule.conditions)) for rule in self.rules))

    def __bool__(self) -> bool:
        return bool(self.rules)

    def excluding(self, event: dict[str, Any]) -> Rule | None:
        for rule, tests in self._tests:
            for test in tests:
                if not test(event):
                    break
            else:
                return rule
        return None

    def excludes(self, event: dict[str, Any]) -> bool:
        return self.excluding(event) is not None


def parse_rule(text: str) -> Rule:
    """One rule, ``FIELD=PATTERN[,FIELD=PATTERN...]``; raises BadFilterRule naming it."""
    rule = text.strip()
    if not rule:
        raise BadFilterRule(text, "empty rule")
    conditions = []
    for part in rule.split(CONDITION_SEPARATOR):
        name, equals, pattern = part.strip().partition("=")
        name, pattern = name.strip(), pattern.strip()
        if not equals:
            raise BadFilterRule(rule, f"{part.strip()!r} is not FIELD=PATTERN")
        if not name:
            raise BadFilterRule(rule, f"{part.strip()!r} names no field")
        path = tuple(name.split("."))
        if not all(path):
            raise BadFilterRule(rule, f"field {name!r} has an empty path segment")
        if not pattern:
            raise BadFilterRule(rule, f"field {name!r} has an empty pattern (use * for any value)")
        conditions.append(Condition.of(path, pattern))
    return Rule(rule, tuple(conditions))


def split_rules(text: str) -> list[str]:
    """The rules of one string, separated by ``;`` or line breaks; blank ones dropped."""
    return [rule.strip() for line in text.splitlines() for rule in line.split(RULE_SEPARATOR)
            if rule.strip()]


def parse_rules(texts: str | Iterable[str]) -> EventFilter:
    """Rules separated by ``;`` or line breaks (a string: ``EXCLUDE_EVENTS``), or from several
    such strings (repeated ``--exclude``). Blank rules between separators are ignored."""
    if isinstance(texts, str):
        texts = [texts]
    return EventFilter(tuple(parse_rule(rule) for text in texts for rule in split_rules(text)))
