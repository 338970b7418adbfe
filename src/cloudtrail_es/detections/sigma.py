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
* an ECS name: an alias its CloudTrail field, a real ECS field (``user.name``,
  ``source.ip``...) itself;
* a name already in our layout (``*_flattened.*``, ``*_raw``): itself.

Matching follows the Sigma specification: strings are case-insensitive (``case_insensitive``
on term, prefix and wildcard queries; see ``detect.for_engine`` for engines without it),
``|cased`` is exact, a free-text field (``errorMessage``) is matched on its exact keyword
copy, a date, address or number field takes whole values only (a string modifier on it is
refused with the reason). ``|re`` is translated into Lucene's dialect with Sigma's meaning
(``lucene_regex``) or refused with the reason; ``|cidr`` on ``sourceIPAddress`` is a query
on the typed ``source.ip`` (elsewhere, address prefixes on the keyword); ``|fieldref`` finds
the events where both fields exist, and the detector keeps those whose values are equal
(``fieldref``). A rule that cannot be converted is skipped with its id and the reason, a
file that cannot be read or parsed too; a rule without an ``id`` gets one derived from its
content, the same whatever path it is reached by.
"""
from __future__ import annotations

import hashlib
import json
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
from sigma.types import (SigmaCIDRExpression, SigmaFieldReference, SigmaRegularExpression,
                         SigmaRegularExpressionFlag, SigmaString, SpecialChars)

from cloudtrail_es.detections import lucene_regex
from cloudtrail_es.detections.fieldref import FIELDREF
from cloudtrail_es.documents import ecs, transform
from cloudtrail_es.write.indexes import EXACT_SUBFIELDS, NUMERIC_PATHS

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
    if name in ecs.ALIASES:
        return ecs.ALIASES[name]
    if name in _SCALARS or name in ecs.FIELDS or transform.FLATTENED_SUFFIX + "." in name or \
            name.endswith(transform.RAW_SUFFIX) or name.endswith(transform.FLATTENED_SUFFIX):
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


#: Fields that hold no string: (what they hold, for the reason a string match is refused).
_TYPED = {
    transform.DATE_FIELD: "a date", ecs.INGESTED: "a date", ecs.SOURCE_IP: "an IP address",
    **{path: "a number" for path in NUMERIC_PATHS},
}
#: Where ``|cidr`` on these is a query on the typed address.
_ADDRESS_FIELDS = ("sourceIPAddress", ecs.SOURCE_IP)


def pipeline() -> ProcessingPipeline:
    """The processing pipeline that puts CloudTrail's field names on our layout."""
    return ProcessingPipeline(
        name="cloudtrail-to-elasticsearch layout", priority=20,
        items=[ProcessingItem(identifier="cloudtrail_es_fields",
                              transformation=FieldFunctionTransformation({}, field_for))])


# -- Query DSL pieces -------------------------------------------------------------------------

_WILDCARD_ESCAPE = re.compile(r"([\\*?])")
#: Beyond this many address prefixes a ``|cidr`` on a keyword field is refused (clause limits).
MAX_CIDR_PREFIXES = 256


def _string_field(name: str, what: str = "a string match") -> str:
    """Where a string is matched: the field, or the exact (keyword) copy of a text field."""
    if name in _TYPED:
        raise NotConvertible(f"{name} is {_TYPED[name]}: {what} (contains, startswith, endswith, "
                             "wildcards, re) does not apply to it; give a whole value")
    if name in EXACT_SUBFIELDS:
        return EXACT_SUBFIELDS[name]
    if name.endswith(transform.RAW_SUFFIX):
        section = name[: -len(transform.RAW_SUFFIX)]
        raise NotConvertible(
            f"{section} as a whole is not searchable as text; name a key under it "
            f"({section}.<key>)")
    return name


def _leaf(kind: str, name: str, value: str, case_insensitive: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"value": value}
    if case_insensitive:
        body["case_insensitive"] = True
    return {kind: {name: body}}


def string_query(name: str, value: SigmaString, case_insensitive: bool = True) -> dict[str, Any]:
    """term, prefix or wildcard query for a Sigma string (``*`` and ``?`` are wildcards)."""
    if value.contains_placeholder():
        raise NotConvertible(f"{name}: a placeholder (|expand %name%) has no value here; "
                             "replace it in the rule")
    if name in _TYPED and not value.contains_special():
        return {"term": {name: value.to_plain()}}
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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: The field references of the rule being converted (checked on each hit by the detector).
        self.fieldrefs: list[dict[str, str]] = []
        self._alternatives = 0  # how many ``or`` / ``not`` enclose the condition being converted

    def _alternative(self, convert: Any) -> Any:
        self._alternatives += 1
        try:
            return convert()
        finally:
            self._alternatives -= 1

    def convert_condition_or(self, cond: ConditionOR, state: ConversionState) -> Any:
        if len(cond.args) == 1:
            return self.convert_condition(cond.args[0], state)
        return self._alternative(
            lambda: any_of([self.convert_condition(arg, state) for arg in cond.args]))

    def convert_condition_and(self, cond: ConditionAND, state: ConversionState) -> Any:
        return all_of([self.convert_condition(arg, state) for arg in cond.args])

    def convert_condition_not(self, cond: ConditionNOT, state: ConversionState) -> Any:
        return self._alternative(lambda: {"bool": {"must_not": [
            self.convert_condition(arg, state) for arg in cond.args]}})

    def convert_condition_field_eq_val_str(
            self, cond: ConditionFieldEqualsValueExpression, state: ConversionState) -> Any:
        return string_query(cond.field, cast(SigmaString, cond.value))

    def convert_condition_field_eq_val_str_case_sensitive(
            self, cond: ConditionFieldEqualsValueExpression, state: ConversionState) -> Any:
        return string_query(cond.field, cast(SigmaString, cond.value), case_insensitive=False)

    def convert_condition_field_eq_val_num(
            self, cond: ConditionFieldEqualsValueExpression, state: ConversionState) -> Any:
        if cond.field in _TYPED:
            return {"term": {cond.field: str(cond.value)}}
        return _leaf("term", _string_field(cond.field), str(cond.value), False)

    def convert_condition_field_eq_val_bool(
            self, cond: ConditionFieldEqualsValueExpression, state: ConversionState) -> Any:
        return _leaf("term", _string_field(cond.field, "a boolean"),
                     "true" if cond.value else "false", True)

    def convert_condition_field_eq_val_re(
            self, cond: ConditionFieldEqualsValueExpression, state: ConversionState) -> Any:
        regexp = cast(SigmaRegularExpression, cond.value)
        flags = regexp.flags
        target = _string_field(cond.field, "a regular expression")
        try:
            translated = lucene_regex.translate(
                regexp.regexp.to_plain(),
                ignorecase=SigmaRegularExpressionFlag.IGNORECASE in flags,
                multiline=SigmaRegularExpressionFlag.MULTILINE in flags,
                dotall=SigmaRegularExpressionFlag.DOTALL in flags)
        except lucene_regex.Untranslatable as exc:
            raise NotConvertible(f"{cond.field}|re {regexp.regexp.to_plain()!r}: {exc}") from None
        body: dict[str, Any] = {"value": translated.regexp, "flags": "NONE"}
        if translated.case_insensitive:
            body["case_insensitive"] = True
        return {"regexp": {target: body}}

    def convert_condition_field_eq_val_cidr(
            self, cond: ConditionFieldEqualsValueExpression, state: ConversionState) -> Any:
        value = cast(SigmaCIDRExpression, cond.value)
        if cond.field in _ADDRESS_FIELDS:
            return {"term": {ecs.SOURCE_IP: str(value.network)}}
        patterns = value.expand("*")
        if len(patterns) > MAX_CIDR_PREFIXES:
            raise NotConvertible(
                f"{cond.field}|cidr {value.network} expands into {len(patterns)} address prefixes "
                f"(over {MAX_CIDR_PREFIXES}); only sourceIPAddress is matched as a typed address")
        return any_of([string_query(cond.field, SigmaString(pattern)) for pattern in patterns])

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
        if cond.field not in NUMERIC_PATHS:
            return self._unsupported(f"a numeric comparison (lt, gt, ...) on {cond.field}, which "
                                     "holds strings")
        operator = cond.value.op.name.lower()
        return {"range": {cond.field: {operator: cond.value.number.number}}}

    def convert_condition_field_eq_field(self, cond: Any, state: Any) -> Any:
        reference = cast(SigmaFieldReference, cond.value)
        if reference.starts_with or reference.ends_with:
            return self._unsupported("a field reference with startswith / endswith")
        if self._alternatives:
            return self._unsupported(
                "a field reference (fieldref) under 'or' or 'not': only one that must hold "
                "(the detector checks it on each hit)")
        fields = [cond.field, reference.field]
        for name in fields:
            if name.endswith(transform.RAW_SUFFIX):
                return self._unsupported(f"a field reference to a whole section ({name})")
        self.fieldrefs.append({"field": cond.field, "equals": reference.field})
        return all_of([exists(name) for name in fields])

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


def _digest_id(text: str) -> str:
    return "noid-" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _rule_id(rule: SigmaRule | SigmaCorrelationRule) -> str:
    """The rule's ``id``; without one, a digest of its content (wherever the file lies)."""
    if rule.id:
        return str(rule.id)
    try:
        content = json.dumps(rule.to_dict(), sort_keys=True, default=str)
    except Exception:  # pySigma cannot write back every rule it reads: its title and detection
        content = f"{rule.title}\n{getattr(rule, 'detection', '')}"
    return _digest_id(content)


def _is_cloudtrail(rule: SigmaRule) -> bool:
    logsource = rule.logsource
    return (logsource.product or "").lower() == "aws" and \
        (logsource.service or "cloudtrail").lower() == "cloudtrail"


def convert_rule(rule: SigmaRule | SigmaCorrelationRule, source: Path) -> dict[str, Any]:
    """One rule as ``{id, title, level, query, ...}``; raises SigmaError when it cannot be."""
    if rule.errors:
        raise rule.errors[0]
    if isinstance(rule, SigmaCorrelationRule):
        raise NotConvertible("correlation rules are not supported")
    if not _is_cloudtrail(rule):
        raise NotConvertible(f"logsource is not product aws / service cloudtrail: {rule.logsource}")
    rule_id = _rule_id(rule)  # before conversion, which adds to the rule
    backend = QueryDslBackend(pipeline())
    backend.convert_rule(rule)
    # Read back rather than returned: a rule a correlation refers to converts without output.
    queries = rule.get_conversion_result()
    converted: dict[str, Any] = {
        "id": rule_id, "title": rule.title,
        "level": rule.level.name.lower() if rule.level else "",
        "description": rule.description or "",
        "tags": [str(tag) for tag in rule.tags], "source": source.name,
        "query": any_of(queries),
    }
    if backend.fieldrefs:
        converted[FIELDREF] = backend.fieldrefs
    return converted


def _reason(exc: BaseException) -> str:
    """The reason on one line (a YAML error spans several)."""
    text = str(exc).split(" (while ")[0] if isinstance(exc, SigmaError) else \
        f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


def convert_paths(paths: Iterable[str | Path]) -> Conversion:
    """Every rule of the given files and directories, converted or skipped with its reason.

    Nothing here stops the others: an unreadable file, one that is not YAML or not Sigma, a
    rule pySigma or this backend cannot take, each is one skipped entry with its reason.
    """
    conversion = Conversion()
    for path in rule_files(paths):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, ValueError) as exc:
            conversion.skipped.append({"id": _digest_id(str(path)), "title": "",
                                       "source": path.name, "reason": f"{path}: {exc}"})
            continue
        try:
            collection = SigmaCollection.from_yaml(text, collect_errors=True)
            rules = list(collection.rules)
        except Exception as exc:  # YAML syntax, a document that is no rule: this file alone
            conversion.skipped.append({"id": _digest_id(text), "title": "", "source": path.name,
                                       "reason": f"{path}: {_reason(exc)}"})
            continue
        of_rules = {id(error) for rule in rules for error in rule.errors}
        for error in collection.errors:
            if id(error) in of_rules:  # reported with its rule
                continue
            conversion.skipped.append({"id": _digest_id(f"{text}\n{error}"), "title": "",
                                       "source": path.name, "reason": f"{path}: {_reason(error)}"})
        for rule in rules:
            rule_id = _rule_id(rule)
            try:
                conversion.rules.append(convert_rule(rule, path))
            except Exception as exc:  # this rule alone, whatever broke
                conversion.skipped.append({"id": rule_id, "title": rule.title or "",
                                           "source": path.name, "reason": _reason(exc)})
    return conversion
