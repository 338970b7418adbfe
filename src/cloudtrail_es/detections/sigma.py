"""Sigma rules for our index layout: a pySigma processing pipeline and a Query DSL backend.

Build time only (``pip install pysigma``): the detector's runtime reads the JSON this module
writes (``convert_paths`` -> ``bundle``), so the Lambda never imports pySigma.

Field names as CloudTrail spells them map onto the layout ``transform.py`` makes:

* a documented top-level field (``eventName``) or structured path (``userIdentity.type``):
  itself;
* a whole section (``requestParameters``): ``requestParameters_raw.keyword``, its JSON text,
  matched exactly as a substring;
* any path under a section (``requestParameters.ipPermissions.items.ipRanges.items.cidrIp``):
  its leaf in ``requestParameters_flattened.cidrIp`` (escaped as ``transform.field_name``);
* an undocumented path under ``userIdentity`` / ``tlsDetails`` / ``addendum``:
  ``userIdentity_flattened.<leaf>``;
* a name already in our layout (``*_flattened.*``, ``*_raw``): itself.

Matching follows the Sigma specification: strings are case-insensitive (``case_insensitive``
on term, prefix and wildcard queries; see ``detect.for_engine`` for engines without it),
``|cased`` is exact, ``|re`` is a Lucene regular expression searched anywhere in the value
unless anchored with ``^`` / ``$``, ``|cidr`` expands into address prefixes on the keyword.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, cast

from sigma.collection import SigmaCollection
from sigma.conditions import ConditionAND, ConditionFieldEqualsValueExpression, ConditionNOT, ConditionOR
from sigma.conversion.base import Backend
from sigma.conversion.state import ConversionState
from sigma.correlations import SigmaCorrelationRule
from sigma.exceptions import SigmaError, SigmaFeatureNotSupportedByBackendError
from sigma.processing.pipeline import ProcessingItem, ProcessingPipeline
from sigma.processing.transformations import FieldFunctionTransformation
from sigma.rule import SigmaRule
from sigma.types import (SigmaCIDRExpression, SigmaRegularExpression, SigmaRegularExpressionFlag,
                         SigmaString, SpecialChars)

from cloudtrail_es.documents import transform
from cloudtrail_es.write.indexes import RAW_EXACT_SUBFIELD, RAW_EXACT_SECTIONS

#: Top-level objects CloudTrail writes (a bare name means the whole section).
SECTIONS = frozenset({
    "requestParameters", "responseElements", "additionalEventData", "resources",
    "serviceEventDetails", "edgeDeviceDetails", "insightDetails",
})
_SCALARS = frozenset(transform.KEYWORD_FIELDS + transform.TEXT_FIELDS + (transform.DATE_FIELD,))


class NotConvertible(SigmaFeatureNotSupportedByBackendError):
    """A rule element our layout or backend cannot express."""


def _documented(path: list[str], schema: Any) -> bool:
    for part in path:
        if not isinstance(schema, dict) or part not in schema:
            return False
        schema = schema[part]
    return True


def field_for(name: str | None) -> str:
    """The field of our layout a Sigma rule's field name designates."""
    if name is None:
        raise NotConvertible("a value without a field (keyword search) is not supported")
    if name in _SCALARS or transform.FLATTENED_SUFFIX + "." in name or name.endswith(
            transform.RAW_SUFFIX) or name.endswith(transform.FLATTENED_SUFFIX):
        return name
    head, *path = name.split(".")
    if head in transform.STRUCTURED_FIELDS:
        if not path:
            return head + transform.RAW_SUFFIX
        if _documented(path, transform.STRUCTURED_FIELDS[head]):
            return name
        return f"{head}{transform.FLATTENED_SUFFIX}.{transform.field_name(path[-1])}"
    top = transform.top_level_name(head)
    if not path:
        return top + transform.RAW_SUFFIX if head in SECTIONS else top
    return f"{top}{transform.FLATTENED_SUFFIX}.{transform.field_name(path[-1])}"


def pipeline() -> ProcessingPipeline:
    """The processing pipeline that puts CloudTrail's field names on our layout."""
    return ProcessingPipeline(
        name="cloudtrail-to-elasticsearch layout", priority=20,
        items=[ProcessingItem(identifier="cloudtrail_es_fields",
                              transformation=FieldFunctionTransformation({}, field_for))])


# -- Query DSL pieces -------------------------------------------------------------------------

_WILDCARD_ESCAPE = re.compile(r"([\\*?])")


def _string_field(name: str) -> str:
    """Where a string is matched: the exact (keyword) copy of a raw section's text."""
    if name.endswith(transform.RAW_SUFFIX):
        section = name[: -len(transform.RAW_SUFFIX)]
        if section not in RAW_EXACT_SECTIONS:
            raise NotConvertible(
                f"{section} as a whole is not searchable as text; name a key under it "
                f"({section}.<key>)")
        return f"{name}.{RAW_EXACT_SUBFIELD}"
    return name


def _leaf(kind: str, name: str, value: str, case_insensitive: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"value": value}
    if case_insensitive:
        body["case_insensitive"] = True
    return {kind: {name: body}}


def string_query(name: str, value: SigmaString, case_insensitive: bool = True) -> dict[str, Any]:
    """term, prefix or wildcard query for a Sigma string (``*`` and ``?`` are wildcards)."""
    target = _string_field(name)
    parts = list(value.iter_parts())
    if not value.contains_special():
        return _leaf("term", target, value.to_plain(), case_insensitive)
    if (parts and parts[-1] == SpecialChars.WILDCARD_MULTI
            and all(isinstance(part, str) for part in parts[:-1])):
        return _leaf("prefix", target, "".join(parts[:-1]), case_insensitive)  # type: ignore[arg-type]
    pattern = "".join(
        "*" if part == SpecialChars.WILDCARD_MULTI else "?" if part == SpecialChars.WILDCARD_SINGLE
        else _WILDCARD_ESCAPE.sub(r"\\\1", str(part)) for part in parts)
    return _leaf("wildcard", target, pattern, case_insensitive)


def _lucene_regexp(pattern: str) -> str:
    """A search-anywhere regular expression as Lucene's whole-value one."""
    anchored_start = pattern.startswith("^")
    anchored_end = pattern.endswith("$") and not pattern.endswith("\\$")
    body = pattern[1 if anchored_start else 0: len(pattern) - 1 if anchored_end else len(pattern)]
    return ("" if anchored_start else ".*") + f"({body})" + ("" if anchored_end else ".*")


def any_of(queries: list[dict[str, Any]]) -> dict[str, Any]:
    if len(queries) == 1:
        return queries[0]
    return {"bool": {"should": queries, "minimum_should_match": 1}}


def all_of(queries: list[dict[str, Any]]) -> dict[str, Any]:
    if len(queries) == 1:
        return queries[0]
    return {"bool": {"filter": queries}}


def exists(name: str) -> dict[str, Any]:
    if name.endswith(transform.RAW_SUFFIX):
        section = name[: -len(transform.RAW_SUFFIX)]
        return any_of([{"exists": {"field": section + transform.FLATTENED_SUFFIX}},
                       {"exists": {"field": name}}])
    return {"exists": {"field": name}}


class QueryDslBackend(Backend):
    """Sigma conditions as OpenSearch / Elasticsearch Query DSL (a ``bool`` tree)."""

    name = "cloudtrail-to-elasticsearch Query DSL"
    formats = {"default": "Query DSL, one dict per rule condition"}
    requires_pipeline = False

    def convert_condition_as_in_expression(self, cond: Any, state: ConversionState) -> Any:
        raise NotConvertible("in-expressions are not used")  # pragma: no cover

    def convert_condition_or(self, cond: ConditionOR, state: ConversionState) -> Any:
        return any_of([self.convert_condition(arg, state) for arg in cond.args])

    def convert_condition_and(self, cond: ConditionAND, state: ConversionState) -> Any:
        return all_of([self.convert_condition(arg, state) for arg in cond.args])

    def convert_condition_not(self, cond: ConditionNOT, state: ConversionState) -> Any:
        return {"bool": {"must_not": [self.convert_condition(arg, state) for arg in cond.args]}}

    def convert_condition_field_eq_val_str(
            self, cond: ConditionFieldEqualsValueExpression, state: ConversionState) -> Any:
        return string_query(cond.field, cast(SigmaString, cond.value))

    def convert_condition_field_eq_val_str_case_sensitive(
            self, cond: ConditionFieldEqualsValueExpression, state: ConversionState) -> Any:
        return string_query(cond.field, cast(SigmaString, cond.value), case_insensitive=False)

    def convert_condition_field_eq_val_num(
            self, cond: ConditionFieldEqualsValueExpression, state: ConversionState) -> Any:
        return _leaf("term", _string_field(cond.field), str(cond.value), False)

    def convert_condition_field_eq_val_bool(
            self, cond: ConditionFieldEqualsValueExpression, state: ConversionState) -> Any:
        return _leaf("term", _string_field(cond.field), "true" if cond.value else "false", True)

    def convert_condition_field_eq_val_re(
            self, cond: ConditionFieldEqualsValueExpression, state: ConversionState) -> Any:
        regexp = cast(SigmaRegularExpression, cond.value)
        flags = regexp.flags
        if flags - {SigmaRegularExpressionFlag.IGNORECASE}:
            raise NotConvertible("regular expression flags m and s are not supported")
        body: dict[str, Any] = {"value": _lucene_regexp(regexp.regexp.to_plain()),
                                "flags": "NONE"}
        if SigmaRegularExpressionFlag.IGNORECASE in flags:
            body["case_insensitive"] = True
        return {"regexp": {_string_field(cond.field): body}}

    def convert_condition_field_eq_val_cidr(
            self, cond: ConditionFieldEqualsValueExpression, state: ConversionState) -> Any:
        value = cast(SigmaCIDRExpression, cond.value)
        return any_of([string_query(cond.field, SigmaString(pattern))
                       for pattern in value.expand("*")])

    def convert_condition_field_eq_val_null(
            self, cond: ConditionFieldEqualsValueExpression, state: ConversionState) -> Any:
        return {"bool": {"must_not": [exists(cond.field)]}}

    def convert_condition_field_exists(
            self, cond: ConditionFieldEqualsValueExpression, state: ConversionState) -> Any:
        return exists(cond.field)

    def convert_condition_field_not_exists(
            self, cond: ConditionFieldEqualsValueExpression, state: ConversionState) -> Any:
        return {"bool": {"must_not": [exists(cond.field)]}}

    def _unsupported(self, what: str) -> Any:
        raise NotConvertible(f"{what} is not supported")

    def convert_condition_field_eq_val_timestamp_part(self, cond: Any, state: Any) -> Any:
        return self._unsupported("the timestamp part modifiers (minute, hour, ...)")

    def convert_condition_field_compare_op_val(self, cond: Any, state: Any) -> Any:
        return self._unsupported("numeric comparison (lt, gt, ...) on text fields")

    def convert_condition_field_eq_field(self, cond: Any, state: Any) -> Any:
        return self._unsupported("a field reference (fieldref)")

    def convert_condition_field_eq_query_expr(self, cond: Any, state: Any) -> Any:
        return self._unsupported("a query expression")

    def convert_condition_val_str(self, cond: Any, state: Any) -> Any:
        return self._unsupported("a value without a field (keyword search)")

    convert_condition_val_num = convert_condition_val_str
    convert_condition_val_re = convert_condition_val_str
    convert_condition_query_expr = convert_condition_val_str

    def _correlation(self, *args: Any, **kwargs: Any) -> Any:
        return self._unsupported("a correlation rule")

    convert_correlation_event_count_rule = _correlation
    convert_correlation_value_count_rule = _correlation
    convert_correlation_temporal_rule = _correlation
    convert_correlation_temporal_ordered_rule = _correlation
    convert_correlation_extended_temporal_rule = _correlation
    convert_correlation_extended_temporal_ordered_rule = _correlation
    convert_correlation_value_sum_rule = _correlation
    convert_correlation_value_avg_rule = _correlation
    convert_correlation_value_percentile_rule = _correlation
    convert_correlation_value_median_rule = _correlation


# -- Rules in, bundle out ---------------------------------------------------------------------

@dataclass
class Conversion:
    """Converted rules (the detector's input) and the rules skipped, each with its reason."""

    rules: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    def bundle(self) -> dict[str, Any]:
        return {"format": 1, "rules": self.rules, "skipped": self.skipped}


def rule_files(paths: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix in (".yml", ".yaml")))
        else:
            files.append(path)
    return files


def _rule_id(rule: SigmaRule | SigmaCorrelationRule, source: Path) -> str:
    if rule.id:
        return str(rule.id)
    digest = hashlib.sha256(f"{source}:{rule.title}".encode()).hexdigest()[:16]
    return f"noid-{digest}"


def _is_cloudtrail(rule: SigmaRule) -> bool:
    logsource = rule.logsource
    return (logsource.product or "").lower() == "aws" and \
        (logsource.service or "cloudtrail").lower() == "cloudtrail"


def convert_rule(rule: SigmaRule | SigmaCorrelationRule, source: Path) -> dict[str, Any]:
    """One rule as ``{id, title, level, query, ...}``; raises SigmaError when it cannot be."""
    if isinstance(rule, SigmaCorrelationRule):
        raise NotConvertible("correlation rules are not supported")
    if not _is_cloudtrail(rule):
        raise NotConvertible(f"logsource is not product aws / service cloudtrail: {rule.logsource}")
    if rule.errors:
        raise rule.errors[0]
    QueryDslBackend(pipeline()).convert_rule(rule)
    # Read back rather than returned: a rule a correlation refers to converts without output.
    queries = rule.get_conversion_result()
    return {
        "id": _rule_id(rule, source), "title": rule.title,
        "level": rule.level.name.lower() if rule.level else "",
        "description": rule.description or "",
        "tags": [str(tag) for tag in rule.tags], "source": source.name,
        "query": any_of(queries),
    }


def convert_paths(paths: Iterable[str | Path]) -> Conversion:
    """Every rule of the given files and directories, converted or skipped with its reason."""
    conversion = Conversion()
    for path in rule_files(paths):
        try:
            collection = SigmaCollection.from_yaml(path.read_text(encoding="utf-8"),
                                                   collect_errors=True)
        except (SigmaError, OSError, ValueError) as exc:
            conversion.skipped.append({"id": str(path), "title": "", "reason": str(exc)})
            continue
        for error in collection.errors:
            conversion.skipped.append({"id": str(path), "title": "", "reason": str(error)})
        for rule in collection.rules:
            rule_id = _rule_id(rule, path)
            try:
                conversion.rules.append(convert_rule(rule, path))
            except SigmaError as exc:
                conversion.skipped.append({"id": rule_id, "title": rule.title or "",
                                           "reason": str(exc).split(" (while ")[0]})
    return conversion
