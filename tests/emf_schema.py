"""The CloudWatch embedded metric format, as a JSON schema and a validator (unit and
integration tests check the handler's records with it)."""
from __future__ import annotations

import json
import math

import jsonschema

#: CloudWatch's StandardUnit values.
UNITS = ["Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes",
         "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count",
         "Bytes/Second", "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second",
         "Terabytes/Second", "Bits/Second", "Kilobits/Second", "Megabits/Second",
         "Gigabits/Second", "Terabits/Second", "Count/Second", "None"]

#: The embedded metric format specification (CloudWatch user guide, "Specification: Embedded
#: metric format") as a JSON schema: the root's ``_aws`` metadata object (Timestamp in ms,
#: CloudWatchMetrics directives), each directive with a Namespace, DimensionSets of at most
#: 9 keys (the stricter of the limits AWS has documented) and at most 100 MetricDefinitions.
#: The cross-references the schema cannot express are checked by ``assert_valid_emf``.
EMF_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["_aws"],
    "properties": {
        "_aws": {
            "type": "object",
            "required": ["Timestamp", "CloudWatchMetrics"],
            "additionalProperties": False,
            "properties": {
                "Timestamp": {"type": "integer", "minimum": 0},
                "CloudWatchMetrics": {"type": "array", "minItems": 1,
                                      "items": {"$ref": "#/$defs/MetricDirective"}},
            },
        },
    },
    "$defs": {
        "MetricDirective": {
            "type": "object",
            "required": ["Namespace", "Dimensions", "Metrics"],
            "additionalProperties": False,
            "properties": {
                "Namespace": {"type": "string", "minLength": 1, "maxLength": 1024},
                "Dimensions": {"type": "array", "items": {"$ref": "#/$defs/DimensionSet"}},
                "Metrics": {"type": "array", "minItems": 1, "maxItems": 100,
                            "items": {"$ref": "#/$defs/MetricDefinition"}},
            },
        },
        "DimensionSet": {
            "type": "array", "maxItems": 9, "uniqueItems": True,
            "items": {"type": "string", "minLength": 1, "maxLength": 255},
        },
        "MetricDefinition": {
            "type": "object",
            "required": ["Name"],
            "additionalProperties": False,
            "properties": {
                "Name": {"type": "string", "minLength": 1, "maxLength": 1024},
                "Unit": {"enum": UNITS},
                "StorageResolution": {"enum": [1, 60]},
            },
        },
    },
}
MAX_DIMENSIONS_PER_RECORD = 30
MAX_VALUES = 100


def assert_valid_emf(line: str) -> dict:
    """A log line CloudWatch turns into metrics: one JSON object, schema-valid, references kept."""
    assert "\n" not in line
    record = json.loads(line)
    jsonschema.validate(record, EMF_SCHEMA)
    dimension_keys = set()
    for directive in record["_aws"]["CloudWatchMetrics"]:
        for dimension_set in directive["Dimensions"]:
            for key in dimension_set:
                assert isinstance(record.get(key), str) and 0 < len(record[key]) <= 1024, key
                dimension_keys.add(key)
        names = [metric["Name"] for metric in directive["Metrics"]]
        assert len(names) == len(set(names))
        for name in names:
            value = record.get(name)
            values = value if isinstance(value, list) else [value]
            assert 0 < len(values) <= MAX_VALUES, name
            for number in values:
                assert isinstance(number, (int, float)) and not isinstance(number, bool), name
                assert math.isfinite(number), name
    assert len(dimension_keys) <= MAX_DIMENSIONS_PER_RECORD
    return record
