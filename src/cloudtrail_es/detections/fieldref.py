"""Sigma's ``fieldref`` (a field equal to another field of the same event), checked on a hit.

The engines compare two fields of one document only in a script (Painless), which reads doc
values the flattened leaves do not keep, and which not every OpenSearch build has. So a rule
with ``fieldref`` is converted (``sigma.py``) into a query for the events where both fields
exist and the rest of the rule holds, plus the pairs to compare, under ``FIELDREF`` in the
rule; the detector asks for those fields in ``_source`` and keeps a hit when, for every pair,
a value of the one equals a value of the other (exactly, as strings: a flattened leaf holds a
list). Runtime code: no pySigma here.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping

#: The key of a converted rule that lists its field references: ``[{"field", "equals"}]``.
FIELDREF = "fieldref"


def source_fields(rule: Mapping[str, Any]) -> list[str]:
    """The fields a hit of ``rule`` must bring in ``_source`` to be checked."""
    return sorted({name for pair in rule.get(FIELDREF, ()) for name in pair.values()})


def _values(source: Any, path: list[str]) -> Iterator[str]:
    if not path:
        if isinstance(source, list):
            for item in source:
                yield from _values(item, path)
        elif source is not None and not isinstance(source, dict):
            yield source if isinstance(source, str) else str(source)
        return
    if isinstance(source, list):
        for item in source:
            yield from _values(item, path)
    elif isinstance(source, dict):
        yield from _values(source.get(path[0]), path[1:])


def values(source: Mapping[str, Any], name: str) -> set[str]:
    """The values of the field ``name`` (dotted, as mapped) in a document's ``_source``."""
    return set(_values(source, name.split(".")))


def matches(rule: Mapping[str, Any], source: Mapping[str, Any]) -> bool:
    """Whether a hit's ``_source`` satisfies every field reference of ``rule`` (none: True)."""
    return all(values(source, pair["field"]) & values(source, pair["equals"])
               for pair in rule.get(FIELDREF, ()))
